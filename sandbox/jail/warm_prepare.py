"""Make the jail's interpreter stand in for a fresh one, before the run's request arrives.

The launcher and the zygote run on the same interpreter the Python tool
names, in the same isolated mode (``-I -S``). Before a warm run's payload
arrives, :func:`prepare` gives it the tool's environment, stdin/stdout/stderr
on the run's pipes as a fresh interpreter makes them, and drops the jail's
own modules from ``sys.modules``; a zygote makes the costly parts once, for
all its children (:func:`stage_in_zygote`). Where a fresh interpreter would
start otherwise (the tool's locale), the run goes cold instead. The code
then runs in :mod:`sandbox.jail.warm_run`.
"""

from __future__ import annotations

import os
import sys

from sandbox.jail import warm_run

TYPE_CHECKING = False  # typing and types cost each launcher started per run an import each
if TYPE_CHECKING:
    from typing import TextIO


def _jail_module_names() -> tuple[str, ...]:
    return tuple(name for name in sys.modules if name == "sandbox" or name.startswith("sandbox."))


def _forget_jail_modules() -> None:
    names = _staged.jail_modules if _staged is not None else _jail_module_names()
    for name in names:
        sys.modules.pop(name, None)
    sys.path[:] = [entry for entry in sys.path if not entry.startswith(_REPO_PREFIXES)]
    # The finders that imported them, each with a listing of its directory.
    for entry in [path for path in sys.path_importer_cache if path.startswith(_REPO_PREFIXES)]:
        del sys.path_importer_cache[entry]


_REPO_PREFIXES: tuple[str, ...] = ()


def set_repo_prefixes(prefixes: tuple[str, ...]) -> None:
    """sys.path entries the launcher added to import the jail, removed before the code runs."""
    global _REPO_PREFIXES
    _REPO_PREFIXES = prefixes


class _Staged:
    """What a zygote makes once, before it forks, for every warm child's :func:`prepare`."""

    def __init__(self) -> None:
        self.jail_modules = _jail_module_names()
        self.streams = _streams_on_a_pipe()
        # Keeps the jail's modules alive in the children once they leave
        # sys.modules (freeing them would write to every page they span).
        self.modules = tuple(sys.modules[name] for name in self.jail_modules)


_staged: _Staged | None = None


def stage_in_zygote() -> None:
    """In a zygote, before its first fork: make what each warm child's :func:`prepare` needs.

    A forked child pays a copy-on-write fault for every page it first
    writes: sys.modules walked key by key, three text streams built from
    their codecs and the environment emptied key by key cost a warm run
    about 100 such faults (of ~950). Made here once, they cost the children
    nothing until used. The zygote's own environment is emptied (only the
    dynamic loader and the interpreter's start-up read it), so a child's
    starts empty.
    """
    global _staged
    _staged = _Staged()
    os.environ.clear()
    __import__("_locale")  # each warm child checks the tool's locale
    __import__("weakref")  # and sees its module go at the end (_release_main_module)


_COERCION_TARGETS = frozenset({"C.UTF-8", "C.utf8", "UTF-8"})
"""Locales under which Python gives stdin and stdout the surrogateescape handler (PEP 538)."""


def _stdio_errors(environment: dict[str, str]) -> str | None:
    """The error handler a fresh interpreter would give stdin and stdout in `environment`.

    None when a fresh interpreter would start otherwise than this one did: under
    the C or POSIX locale (or one not installed) it turns on UTF-8 mode and
    adds ``LC_CTYPE`` to its environment (PEP 538, PEP 540); under a locale
    whose character set is not UTF-8 it encodes with that set. An interpreter
    that is already running cannot change either. Called once the process
    environment is `environment`: the locale is set as the interpreter would
    set it at start-up.
    """
    import _locale

    names = ("LC_ALL", "LC_CTYPE", "LANG")
    requested = next((environment[name] for name in names if environment.get(name)), "")
    try:
        current = _locale.setlocale(_locale.LC_CTYPE)
        if requested == current and "LOCPATH" not in environment:
            locale = current  # this interpreter started under it (a zygote does)
        else:
            locale = _locale.setlocale(_locale.LC_CTYPE, "")
    except _locale.Error:
        return None  # not installed: a fresh interpreter falls back to C
    if locale in ("C", "POSIX") or sys.flags.utf8_mode:
        return None
    if _locale.nl_langinfo(_locale.CODESET).lower().replace("-", "") != "utf8":
        return None
    return "surrogateescape" if locale in _COERCION_TARGETS else "strict"


def _make_streams(errors: str = "surrogateescape") -> tuple[TextIO, TextIO, TextIO]:
    """stdin, stdout and stderr over fds 0-2, as a fresh interpreter makes them (UTF-8).

    As CPython's start-up does: a buffered binary layer sized by the fd, text
    over it that never translates newlines (a carriage return reaches the
    code as it came), the ``<stdin>``-style names and modes, and stderr flushed at
    each line.
    """
    import io

    def stream(fd: int, mode: str, name: str, errors: str, line_buffering: bool) -> TextIO:
        buffered = open(fd, mode + "b", buffering=-1, closefd=False)  # noqa: SIM115
        buffered.raw.name = name
        text = io.TextIOWrapper(
            buffered, "utf-8", errors, newline="\n", line_buffering=line_buffering
        )
        text.mode = mode  # type: ignore[misc]
        return text

    return (
        stream(0, "r", "<stdin>", errors, False),
        stream(1, "w", "<stdout>", errors, False),
        stream(2, "w", "<stderr>", "backslashreplace", True),
    )


def _streams_on_a_pipe() -> tuple[TextIO, TextIO, TextIO]:
    """stdin, stdout and stderr streams over fds 0-2 while those are a pipe's ends.

    A stream keeps only its fd number and what it learnt of that fd when
    made (not seekable, a pipe's block size): a zygote's child, whose fds
    0-2 are the run's pipes, can use these as if made for them.
    """
    saved = [os.dup(fd) for fd in (0, 1, 2)]
    read_end, write_end = os.pipe()
    try:
        os.dup2(read_end, 0)
        os.dup2(write_end, 1)
        os.dup2(write_end, 2)
        return _make_streams()
    finally:
        for fd, copy in enumerate(saved):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(read_end)
        os.close(write_end)


def prepare(environment: dict[str, str]) -> bool:
    """Before the run's payload arrives: the environment, stdio on the run's pipes, no jail modules.

    None of it depends on the request, and all of it costs (a forked
    process pays a copy-on-write fault for each page it first writes), so a
    jail built ahead of its request does it while it waits; a zygote's
    child finds part of it made already (:func:`stage_in_zygote`).
    False when the code cannot run here as a fresh interpreter would run it
    (its locale, see :func:`_stdio_errors`): the caller then execs one.
    """
    if os.environ:
        os.environ.clear()
    for name, value in environment.items():
        os.environ[name] = value
    errors = _stdio_errors(environment)
    if errors is None:
        return False
    # The one start-up variable that still matters once the interpreter runs.
    sys.dont_write_bytecode = bool(environment.get("PYTHONDONTWRITEBYTECODE"))
    if "TZ" in environment and "time" in sys.modules:
        # The zygote's time module read its own (absent) TZ when imported.
        sys.modules["time"].tzset()
    if _staged is not None and errors == "surrogateescape":
        streams = _staged.streams
    else:
        streams = _make_streams(errors)
    # In a fresh interpreter sys.__stdout__ is sys.stdout, and so on.
    sys.stdin, sys.stdout, sys.stderr = sys.__stdin__, sys.__stdout__, sys.__stderr__ = streams
    _forget_jail_modules()
    # Fault in now what every run goes through (see jail._rehearse): compiling,
    # a fresh __main__, the end of the run.
    exec(compile("pass", "<prepare>", "exec"), warm_run.fresh_main(None))  # noqa: S102 - a no-op
    warm_run.take_ending()
    return True
