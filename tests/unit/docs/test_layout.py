"""docs/layout.md lists every module of the code a newcomer reads, and no module that is gone."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
LISTED_PACKAGES = ("sandbox", "gateway", "agent", "bff", "memory", "pagi", "cli", "testing")
GENERATED = re.compile(r"_pb2(_grpc)?\.py$")


def listed_modules() -> set[str]:
    """The paths the "Module by module" tree names, rebuilt from its indentation."""
    text = (REPO / "docs" / "layout.md").read_text()
    block = text.split("## Module by module", 1)[1].split("```", 2)[1]
    stack: list[str] = []
    paths = set()
    for line in block.splitlines():
        if not line.strip():
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        name = line.split()[0]
        del stack[depth:]
        if name.endswith("/"):
            stack.append(name.rstrip("/"))
        else:
            paths.add("/".join([*stack, name]))
    return paths


def modules_on_disk() -> set[str]:
    return {
        path.relative_to(REPO).as_posix()
        for package in LISTED_PACKAGES
        for path in (REPO / package).rglob("*.py")
        if not GENERATED.search(path.name)
    }


def test_the_layout_names_every_module_and_only_those() -> None:
    listed, present = listed_modules(), modules_on_disk()
    assert not present - listed, f"not in docs/layout.md: {sorted(present - listed)}"
    assert not listed - present, f"in docs/layout.md but gone: {sorted(listed - present)}"
