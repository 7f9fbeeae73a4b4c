"""Turning a model's free-text reply into plan steps, whole or as it streams in."""

from __future__ import annotations

import re

MAX_STEP_CHARS = 500

# "1. Do x", "2) Do y", "Step 3: Do z", "**4.** Do w", "### 5. Do v"
_NUMBERED = re.compile(
    r"^\s*(?:#{1,6}\s*)?(?:\*\*|__)?(?:step\s+)?\d{1,3}\s*[.):\-](?:\*\*|__)?\s+(?P<text>\S.*)$",
    re.IGNORECASE,
)
_BULLET = re.compile(r"^\s*[-*\u2022]\s+(?P<text>\S.*)$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EMPHASIS = re.compile(r"(\*\*|__)")


def clean_step(text: str) -> str:
    """One step as plain text: no markdown emphasis, no control characters, bounded."""
    text = _EMPHASIS.sub("", _CONTROL.sub(" ", text))
    text = " ".join(text.split()).strip()
    if len(text) > MAX_STEP_CHARS:
        text = text[: MAX_STEP_CHARS - 1].rstrip() + "\u2026"
    return text


def _list_item(line: str) -> str | None:
    match = _NUMBERED.match(line) or _BULLET.match(line)
    if match is None:
        return None
    return clean_step(match.group("text")) or None


class StepParser:
    """Feeds on reply text (any chunking) and hands out list items as lines complete.

    A reply that holds a numbered or bulleted list gives its items; one
    without any list gives its non-empty lines (headings ending in ':'
    excepted), which :meth:`finish` returns.
    """

    def __init__(self, max_steps: int) -> None:
        self.max_steps = max_steps
        self._buffer = ""
        self._items = 0
        self._plain: list[str] = []

    @property
    def full(self) -> bool:
        """Whether ``max_steps`` steps have been handed out."""
        return self._items >= self.max_steps

    @property
    def pending_chars(self) -> int:
        """Characters of an unfinished line held back."""
        return len(self._buffer)

    def feed(self, text: str) -> list[str]:
        """New list items completed by ``text``."""
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        return [step for line in lines if (step := self._take(line)) is not None]

    def finish(self) -> list[str]:
        """Items of the last line, or the plain-line fallback when no list was found."""
        tail = self._take(self._buffer)
        self._buffer = ""
        if self._items:
            return [tail] if tail is not None else []
        return self._plain[: self.max_steps]

    def _take(self, line: str) -> str | None:
        if self.full:
            return None
        item = _list_item(line)
        if item is not None:
            self._items += 1
            return item
        plain = clean_step(line)
        if plain and not plain.endswith(":"):
            self._plain.append(plain)
        return None


def parse_steps(text: str, max_steps: int) -> list[str]:
    """The steps of a whole reply, at most ``max_steps``."""
    parser = StepParser(max_steps)
    return parser.feed(text) + parser.finish()
