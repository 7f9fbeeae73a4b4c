"""What tests/ and bench/ share: fakes of PAGI's neighbours, and real stacks on loopback."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
"""The repository's root."""
