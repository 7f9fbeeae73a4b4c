"""Locating keys in TOML text, for error messages that point at the right line."""

from __future__ import annotations

from sandbox.policy.lines import key_lines, line_of

TEXT = """# comment = not a key
[sandbox]
max_concurrent_runs = 2

[tools.demo]   # trailing comment
argv = ["/bin/echo", "a = b"]
limits = { wall_seconds = 1, "output_bytes" = 2 }
env.LANG = "C"

[tools."odd.name"]
code = "none"

[[things]]
x = 1
"""


def test_tables_keys_dotted_quoted_and_inline():
    lines = key_lines(TEXT)
    assert lines[("sandbox",)] == 2
    assert lines[("sandbox", "max_concurrent_runs")] == 3
    assert lines[("tools",)] == 5  # a parent table is where it first appears
    assert lines[("tools", "demo")] == 5
    assert lines[("tools", "demo", "argv")] == 6
    assert lines[("tools", "demo", "limits", "wall_seconds")] == 7
    assert lines[("tools", "demo", "limits", "output_bytes")] == 7
    assert lines[("tools", "demo", "env", "LANG")] == 8
    assert lines[("tools", "odd.name", "code")] == 11
    assert lines[("things", "x")] == 14
    assert ("not a key",) not in lines and ("a ",) not in lines


def test_line_of_uses_the_longest_known_prefix():
    lines = key_lines(TEXT)
    assert line_of(lines, ("tools", "demo", "argv", 1)) == 6
    assert line_of(lines, ("tools", "demo", "limits", "memory_bytes")) == 7
    assert line_of(lines, ("tools", "demo", "missing")) == 5
    assert line_of(lines, ("callers", "bff")) is None
    assert line_of(lines, ()) is None


def test_garbage_text_never_raises():
    for text in ["[", "]]]", "= = =", '"unterminated = 1', '[a."b]\nc = {', "\x00 = 1"]:
        key_lines(text)
