"""Which Python tool commands run in the jailed interpreter itself, and how."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

from sandbox.jail.warm_command import parse_python_argv

PYTHON = os.path.realpath(os.path.join(sys.base_prefix, "bin", "python3.11"))
REPO = Path(__file__).resolve().parents[3]


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
    assert parse_python_argv([PYTHON, "-I", "-S", "-"], PYTHON) == {
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


def test_only_the_warm_interpreters_own_options_run_in_it() -> None:
    """-I -S as the zygote has them; options that set other sys.flags need a fresh interpreter."""
    assert parse_python_argv([PYTHON, "-I", "-S", "-s", "-E", "-q", "-c", "1"], PYTHON) is not None
    assert parse_python_argv([PYTHON, "-c", "1"], PYTHON) is None  # site, sys.path[0]
    assert parse_python_argv([PYTHON, "-I", "-"], PYTHON) is None  # site
    assert parse_python_argv([PYTHON, "-S", "main.py"], PYTHON) is None  # not isolated
    for option in ("-u", "-B", "-b", "-O", "-v", "-d", "-i"):
        assert parse_python_argv([PYTHON, "-I", "-S", option, "-c", "1"], PYTHON) is None, option


def test_traceback_shows_only_the_tools_frames(tmp_path: Path) -> None:
    """A tool's traceback names its own code, never the jail's source on the host."""
    code = "def inner():\n    raise ValueError('boom')\n\ninner()\n"
    runner = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from sandbox.jail.warm_prepare import prepare\nfrom sandbox.jail.warm_run import run\n"
        "assert prepare({'LANG': 'C.UTF-8'})  # runs in this interpreter\n"
        f"run({{'code': {code!r}, 'path': None, 'argv': ['-c']}}, ['python3', '-c', 'x'])\n"
    )
    completed = subprocess.run(
        [PYTHON, "-I", "-S", "-c", runner, str(REPO)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env={"LANG": "C.UTF-8"},  # the locale a zygote starts in
    )
    assert completed.returncode == 1
    assert "ValueError: boom" in completed.stderr
    assert 'File "<string>", line 4, in <module>' in completed.stderr
    assert 'File "<string>", line 2, in inner' in completed.stderr
    assert "warm_run.py" not in completed.stderr and "warm_prepare.py" not in completed.stderr
    assert str(REPO) not in completed.stderr


def test_syntax_error_shows_no_jail_frame(tmp_path: Path) -> None:
    runner = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from sandbox.jail.warm_prepare import prepare\nfrom sandbox.jail.warm_run import run\n"
        "assert prepare({'LANG': 'C.UTF-8'})  # runs in this interpreter\n"
        "run({'code': 'def broken(:\\n', 'path': None, 'argv': ['-c']}, ['python3', '-c', 'x'])\n"
    )
    completed = subprocess.run(
        [PYTHON, "-I", "-S", "-c", runner, str(REPO)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env={"LANG": "C.UTF-8"},  # the locale a zygote starts in
    )
    assert completed.returncode == 1
    assert "SyntaxError" in completed.stderr
    assert str(REPO) not in completed.stderr


def test_a_zygote_clears_the_int_of_a_childs_pid_before_dropping_it() -> None:
    """A child's host pid, held as an int by the zygote, is zeroed in place: the next child,
    which inherits the zygote's freed memory, does not find it there."""
    from sandbox.jail.zygote import _forget_pid

    pid = int("4194301")  # an int object of its own, as os.fork() returns one
    digits = ctypes.string_at(id(pid) + type(pid).__basicsize__, 4)
    assert digits == (4194301).to_bytes(4, "little")
    _forget_pid(pid)
    assert ctypes.string_at(id(pid) + type(pid).__basicsize__, 4) == bytes(4)
    small = 200  # one of the interpreter's shared small ints: left alone
    _forget_pid(small)
    assert small == 200
