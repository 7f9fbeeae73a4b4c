"""Reading the hash-checked lock in requirements/ (written by `make lock`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

from testing import REPO

DEV_LOCK = REPO / "requirements" / "dev.txt"
RUNTIME_LOCK = REPO / "requirements" / "runtime.txt"


@dataclass(frozen=True)
class Pin:
    """One locked release: ``name==version``, its marker and its file hashes."""

    name: NormalizedName
    version: str
    requirement: Requirement
    hashes: tuple[str, ...]

    def applies(self) -> bool:
        """Whether this pin's environment marker holds on this interpreter."""
        marker = self.requirement.marker
        return marker is None or marker.evaluate()


def read_lock(path: Path) -> dict[NormalizedName, Pin]:
    """The pins of a lock file, by normalized name."""
    pins: dict[NormalizedName, Pin] = {}
    for entry in _entries(path.read_text()):
        text, *options = entry.split(" --")
        requirement = Requirement(text.strip())
        (specifier,) = requirement.specifier
        if specifier.operator != "==":
            raise ValueError(f"{path.name}: {text.strip()!r} is not an exact pin")
        hashes = tuple(o.removeprefix("hash=") for o in options if o.startswith("hash="))
        name = canonicalize_name(requirement.name)
        if name in pins:
            raise ValueError(f"{path.name}: {name} is pinned twice")
        pins[name] = Pin(name, specifier.version, requirement, hashes)
    return pins


def _entries(text: str) -> list[str]:
    """Logical lines (continuations joined), without comments."""
    entries: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1].strip() + " "
            continue
        current += line
        entries.append(current.strip())
        current = ""
    if current.strip():
        entries.append(current.strip())
    return entries
