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

KeyPath = tuple[str, ...]

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


def key_lines(text: str) -> dict[KeyPath, int]:
    """Map every table and key path found in ``text`` to its first line (1-based)."""
    found: dict[KeyPath, int] = {}
    table: KeyPath = ()
    for number, line in enumerate(text.splitlines(), start=1):
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
        if value.startswith("{"):
            for inner in _INLINE_KEY.finditer(value):
                found.setdefault(path + _split_dotted(inner.group("key")), number)
    return found


def line_of(lines: dict[KeyPath, int], loc: Sequence[object]) -> int | None:
    """The line of the longest known prefix of ``loc`` (a pydantic error location)."""
    keys: list[str] = []
    for part in loc:
        if not isinstance(part, str) or part.startswith("["):
            break
        keys.append(part)
    for end in range(len(keys), 0, -1):
        line = lines.get(tuple(keys[:end]))
        if line is not None:
            return line
    return None
