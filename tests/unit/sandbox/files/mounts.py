"""Running a Python program where a directory is a fresh tmpfs (root, private mount namespace)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from testing.stack import in_private_mount_namespace


def run_with_tmpfs_at(directory: Path, program: str) -> subprocess.CompletedProcess[str]:
    """Run `program` with this interpreter where `directory` is a mount point of its own."""
    return subprocess.run(
        in_private_mount_namespace(
            'mount -t tmpfs none "$1" && shift && exec "$@"',
            str(directory),
            sys.executable,
            "-c",
            program,
        ),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
