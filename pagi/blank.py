"""What counts as blank text, as a pattern every JSON Schema engine reads the same."""

from typing import Any

from pydantic import Field

BLANK_CHARACTERS = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004"
    "\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
"""Every character ``str.isspace()`` accepts: a prompt of only these is blank."""
# Spelled out, not ``\S``: regex engines (pydantic's, a client's) disagree on what
# ``\s`` covers, and the gateway judges blankness with ``str.strip()``.
NOT_BLANK_PATTERN = "[^" + "".join(f"\\u{ord(c):04x}" for c in BLANK_CHARACTERS) + "]"


def non_blank_text(max_chars: int, what: str, example: str) -> Any:
    """A required text field of 1 to ``max_chars`` characters, not only blanks."""
    return Field(
        ...,
        min_length=1,
        max_length=max_chars,
        pattern=NOT_BLANK_PATTERN,
        description=f"{what}; 1 to {max_chars} characters, not only blanks.",
        examples=[example],
    )
