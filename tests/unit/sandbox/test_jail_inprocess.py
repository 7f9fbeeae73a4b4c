"""Which Python tool commands run in the jailed interpreter itself, and how."""

from __future__ import annotations

import os
import sys

from sandbox.jail.inprocess import parse_python_argv

PYTHON = os.path.realpath(os.path.join(sys.base_prefix, "bin", "python3.11"))


def test_code_argument() -> None:
    parsed = parse_python_argv([PYTHON, "-I", "-S", "-c", "print(1)", "a"], PYTHON)
    assert parsed == {"code": "print(1)", "path": None, "argv": ["-c", "a"]}


def test_script_file_and_combined_flags() -> None:
    parsed = parse_python_argv([PYTHON, "-IS", "main.py", "x"], PYTHON)
    assert parsed == {"code": None, "path": "main.py", "argv": ["main.py", "x"]}


def test_code_from_stdin() -> None:
    assert parse_python_argv([PYTHON, "-I", "-S"], PYTHON) == {
        "code": None,
        "path": None,
        "argv": [""],
    }
    assert parse_python_argv([PYTHON, "-I", "-"], PYTHON) == {
        "code": None,
        "path": None,
        "argv": ["-"],
    }


def test_other_commands_are_exec_d() -> None:
    assert parse_python_argv(["/bin/echo", "-c", "x"], PYTHON) is None
    assert parse_python_argv([PYTHON, "-m", "json.tool"], PYTHON) is None
    assert parse_python_argv([PYTHON, "-X", "dev", "-c", "1"], PYTHON) is None
    assert parse_python_argv([PYTHON, "-c"], PYTHON) is None
    assert parse_python_argv([], PYTHON) is None
