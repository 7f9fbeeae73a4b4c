"""What is wrong with a refused policy file: each key path, its line, and why."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PolicyProblem:
    """One thing wrong with a policy file."""

    key: str
    """Dotted key path (``tools.python.limits.memory_bytes``), empty for the whole file."""
    line: int | None
    message: str


class PolicyError(Exception):
    """A policy file was refused; ``problems`` says where and why."""

    def __init__(self, source: Path, problems: list[PolicyProblem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        """One line per problem: ``FILE:LINE: KEY: message``."""
        lines = []
        for problem in self.problems:
            where = f"{self.source}:{problem.line}" if problem.line else str(self.source)
            key = f" {problem.key}:" if problem.key else ""
            lines.append(f"{where}:{key} {problem.message}")
        return "\n".join(lines)


def dotted_key(loc: Iterable[object]) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif part == "[key]":
            parts.append("(name)")
        else:
            text = str(part)
            parts.append(f'"{text}"' if not re.fullmatch(r"[A-Za-z0-9_\-]+", text) else text)
    return ".".join(parts).replace(".[", "[")
