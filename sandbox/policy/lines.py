"""Finding the line of a key in a TOML text, so policy errors can point at it.

``tomllib`` reports lines only for syntax errors. For errors found after
parsing (a wrong type, a limit above its ceiling) the policy loader asks this
module where the offending key was written. It is a best-effort scan of
table headers and ``key =`` lines, good for pointing a person at the right
place; it never decides whether a document is valid.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

KeyPath = tuple[str | int, ...]

_HEADER = re.compile(r"^\s*\[\[?\s*(?P<key>[^\]]+?)\s*\]\]?\s*(#.*)?$")
_INLINE_KEY = re.compile(r"""(?P<key>[A-Za-z0-9_\-]+|"[^"]*"|'[^']*')\s*=""")


def _split_dotted(key: str) -> KeyPath:
    """``a."b.c".d`` -> ``("a", "b.c", "d")``."""
    parts: list[str] = []
    current = ""
    quote: str | None = None
    for char in key:
        if quote:
            if char == quote:
                quote = None
            else:
                current += char
        elif char in "\"'":
            quote = char
        elif char == ".":
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    return tuple(parts)


def _key_before_equals(line: str) -> str | None:
    """The (possibly dotted) key of a ``key = value`` line, or None."""
    quote: str | None = None
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "#":
            return None
        elif char == "=":
            key = line[:index].strip()
            return key or None
    return None


def _record(found: dict[KeyPath, int], path: KeyPath, line: int) -> None:
    """Note ``path`` and each of its parents (``[a.b]`` also defines ``a``)."""
    for end in range(1, len(path) + 1):
        found.setdefault(path[:end], line)


@dataclass
class _Array:
    """An array value being read, possibly over several lines."""

    path: KeyPath
    depth: int = 0
    index: int = 0
    item_seen: bool = False
    quote: str | None = None

    def scan(self, text: str, number: int, found: dict[KeyPath, int]) -> bool:
        """Note the line of each top-level item in ``text``; True once the array is closed."""
        for char in text:
            if self.quote:
                if char == self.quote:
                    self.quote = None
                continue
            if char == "#":
                break
            if char in " \t":
                continue
            if self.depth == 1 and char not in ",]" and not self.item_seen:
                found.setdefault(self.path + (self.index,), number)
                self.item_seen = True
            if char in "\"'":
                self.quote = char
            elif char in "[{":
                self.depth += 1
            elif char in "]}":
                self.depth -= 1
                if self.depth == 0:
                    return True
            elif char == "," and self.depth == 1:
                self.index += 1
                self.item_seen = False
        self.quote = None  # a string never spans lines here (multi-line strings: best effort)
        return False


def key_lines(text: str) -> dict[KeyPath, int]:
    """Map every table and key path found in ``text`` to its first line (1-based).

    Items of an array get their own line too (``("tools", "x", "argv", 2)``),
    so an error in the third entry of a multi-line list points at that entry.
    """
    found: dict[KeyPath, int] = {}
    table: KeyPath = ()
    array: _Array | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if array is not None:
            if array.scan(line, number, found):
                array = None
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        header = _HEADER.match(line)
        if header and "=" not in header.group("key"):
            table = _split_dotted(header.group("key"))
            _record(found, table, number)
            continue
        key = _key_before_equals(line)
        if key is None:
            continue
        path = table + _split_dotted(key)
        _record(found, path, number)
        value = line.split("=", 1)[1].strip()
        if value.startswith("["):
            array = _Array(path)
            if array.scan(value, number, found):
                array = None
        elif value.startswith("{"):
            for inner in _INLINE_KEY.finditer(value):
                found.setdefault(path + _split_dotted(inner.group("key")), number)
    return found


def line_of(lines: dict[KeyPath, int], loc: Sequence[object]) -> int | None:
    """The line of the longest known prefix of ``loc`` (a pydantic error location)."""
    keys: list[str | int] = []
    for part in loc:
        if isinstance(part, bool) or not isinstance(part, str | int):
            break
        if isinstance(part, str) and part.startswith("["):
            break
        keys.append(part)
    for end in range(len(keys), 0, -1):
        line = lines.get(tuple(keys[:end]))
        if line is not None:
            return line
    return None
