"""Run a Python tool's code in the jailed process itself, instead of exec'ing Python again.

The launcher and the zygote run on the same interpreter the Python tool
names, in the same isolated mode (``-I -S``); once :func:`contain` has
returned in the tool process, running the code here is what a fresh
``python -I -S -c CODE`` would do — minus a second interpreter start-up.
The code gets a fresh ``__main__``, ``sys.argv``, the listed environment and
stdin/stdout/stderr on the run's pipes; the jail's own modules are dropped
from ``sys.modules`` first; at the end, the run goes through what
interpreter shutdown does. Only where a fresh interpreter would start and
run the code the same way (the command's options, the tool's locale, a
script that is Python source): otherwise the tool's command is exec'd.
"""

from __future__ import annotations

import os
import sys
from _signal import SIG_DFL, SIGINT

TYPE_CHECKING = False  # typing and types cost each launcher started per run an import each
if TYPE_CHECKING:
    from types import TracebackType
    from typing import TextIO

_ZYGOTE_FLAGS = frozenset("IS")
"""The warm interpreter's own options (``-I -S``): a command must ask for both."""
_NEUTRAL_FLAGS = frozenset("sEPq")
"""Options that change nothing once -I is given (-s, -E, -P) or outside a terminal (-q)."""


def parse_python_argv(
    argv: list[str], interpreter: str, site: bool = False
) -> dict[str, object] | None:
    """If `argv` runs `interpreter` on code in a way we can reproduce, describe it.

    Returns ``{"code": str | None, "path": str | None, "argv": [...]}`` (code
    read from stdin when both are None), or None (exec the command instead):
    only a command started exactly as the warm interpreter was (``-I -S``,
    nothing that sets another of ``sys.flags``) can run in it. With `site`
    the warm interpreter is a package environment's, started with ``-I``
    and the ``site`` module: `argv[0]` must name it as given (a virtual
    environment is known by the name its interpreter is started by), and
    ``-S`` is not reproducible.
    """
    if not argv:
        return None
    if site:
        if argv[0] != interpreter:
            return None
    elif argv[0] != interpreter and os.path.realpath(argv[0]) != os.path.realpath(interpreter):
        return None
    flags: set[str] = set()
    index = 1
    described: dict[str, object] | None = None
    while index < len(argv) and argv[index].startswith("-") and argv[index] != "-":
        option = argv[index]
        if option == "-c":
            if index + 1 >= len(argv):
                return None
            described = {"code": argv[index + 1], "path": None, "argv": ["-c", *argv[index + 2 :]]}
            break
        if option.startswith("--") or not set(option[1:]) <= _ZYGOTE_FLAGS | _NEUTRAL_FLAGS:
            return None  # -m, -X, -W, -u, -B, ...: let the real interpreter handle them
        flags.update(option[1:])
        index += 1
    if described is None:
        if index >= len(argv) or argv[index] == "-":
            rest = ["-", *argv[index + 1 :]] if index < len(argv) else [""]
            described = {"code": None, "path": None, "argv": rest}
        else:
            described = {"code": None, "path": argv[index], "argv": argv[index:]}
    if site:
        return described if "I" in flags and "S" not in flags else None
    return described if _ZYGOTE_FLAGS <= flags else None


def _fresh_main(path: str | None) -> dict[str, object]:
    """A new ``__main__`` as CPython's start-up makes it for ``-c`` (no path), stdin or a script."""
    module = type(sys)("__main__")
    namespace = module.__dict__
    namespace["__annotations__"] = {}
    namespace["__builtins__"] = __builtins__
    namespace["__loader__"] = sys.modules["_frozen_importlib"].BuiltinImporter
    if path is not None:
        namespace["__file__"] = path
        namespace["__cached__"] = None
        if path != "<stdin>":
            loader = sys.modules["_frozen_importlib_external"].SourceFileLoader
            namespace["__loader__"] = loader("__main__", path)
    sys.modules["__main__"] = module
    return namespace


_ZIP_END_SEARCH_BYTES = 65536 + 22
"""Where a zip archive's end record can be: a comment of at most 64 KiB, then 22 bytes."""


def _script_source(path: str) -> bytes | None:
    """The script's source; None where a fresh interpreter would not run it as source.

    That is: it cannot be read (the interpreter says so in its own words),
    it is a directory or a zip archive (run as a package, from its
    ``__main__.py``), or it is compiled code (a ``.pyc`` name or magic number).
    """
    import stat

    try:
        with open(path, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return None
            source = handle.read()
    except OSError:
        return None
    magic = sys.modules["_frozen_importlib_external"].MAGIC_NUMBER
    if path.endswith(".pyc") or source[:2] == magic[:2]:
        return None
    if b"PK\x05\x06" in source[-_ZIP_END_SEARCH_BYTES:]:
        return None  # perhaps a zip archive: the interpreter decides
    return source


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


def _exit_code(error: SystemExit) -> int:
    code = error.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


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
    exec(compile("pass", "<prepare>", "exec"), _fresh_main(None))  # noqa: S102 - a no-op
    global _ending
    _ending = _Ending()  # before the request, not on its way
    return True


_ending: _Ending | None = None
"""What the run's end calls, taken by :func:`prepare` (see :class:`_Ending`)."""


def run(python: dict[str, object], orig_argv: list[str]) -> None:
    """Run the tool's code here and exit the process with its status.

    :func:`prepare` ran first, in this process. `orig_argv`: the tool's
    whole command, what ``sys.orig_argv`` holds in a fresh interpreter.
    Returns only when a fresh interpreter would not run the script as
    source (see :func:`_script_source`): the caller then execs one (the
    run's report is closed by then, so it still says "warm").
    """
    path = python["path"]
    source: str | bytes
    if isinstance(path, str):
        script = _script_source(path)
        if script is None:
            return
        # As the interpreter does: the script's absolute path names it.
        source, filename = script, os.path.abspath(path)
    sys.orig_argv = list(orig_argv)
    ending = _ending if _ending is not None else _Ending()
    status = 0
    uncaught: BaseException | None = None
    namespace: dict[str, object] = {}
    try:
        if isinstance(path, str):
            namespace = _fresh_main(filename)
        elif isinstance(python["code"], str):
            source, filename = python["code"], "<string>"
            namespace = _fresh_main(None)
        else:
            source, filename = sys.stdin.buffer.read(), "<stdin>"
            namespace = _fresh_main(filename)
        sys.argv = [str(a) for a in python["argv"]]  # type: ignore[union-attr]
        exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - this is the tool
    except SystemExit as error:
        status = _exit_code(error)
    except BaseException as error:  # noqa: BLE001 - report like the interpreter does
        uncaught = error.with_traceback(_tool_frames(error.__traceback__))
    interrupted = isinstance(uncaught, KeyboardInterrupt)
    if uncaught is not None:
        # Shown once it is no longer being handled, as the interpreter shows it.
        sys.last_type, sys.last_value = type(uncaught), uncaught
        sys.last_traceback = uncaught.__traceback__
        status = _display_uncaught(uncaught, ending)
        del uncaught
    # The module goes at shutdown as garbage: nothing here may keep it.
    del namespace
    status = _finish(status, ending)
    if interrupted:
        # As the interpreter ends on an unhandled KeyboardInterrupt: by the
        # signal itself, so that whoever waits for it knows.
        ending.signal(SIGINT, SIG_DFL)
        ending.kill(ending.getpid(), SIGINT)
    ending.exit(status)


class _Ending:
    """What the end of a run calls, taken before the code runs.

    A fresh interpreter ends in C: code that replaces ``os._exit``,
    ``gc.collect``, ``atexit._run_exitfuncs`` or ``sys.__excepthook__``
    does not change how it ends, nor does it here.
    """

    def __init__(self) -> None:
        import atexit
        import gc
        import weakref
        from _signal import signal

        self.exit = os._exit
        self.kill = os.kill
        self.getpid = os.getpid
        self.signal = signal
        self.run_exit_functions = atexit._run_exitfuncs
        self.collect = gc.collect
        self.weak_reference = weakref.ref
        self.display = sys.__excepthook__
        self.default_unraisable_hook = sys.__unraisablehook__


def _display_uncaught(error: BaseException, ending: _Ending) -> int:
    """Show an uncaught exception through sys.excepthook as the interpreter does; the status.

    A hook that is missing or fails has its own error shown, then the
    original one, by the interpreter's display; one that raises SystemExit
    sets the status.
    """
    hook = getattr(sys, "excepthook", _MISSING)
    if hook is _MISSING:
        _write_stderr("sys.excepthook is missing\n")
        ending.display(type(error), error, error.__traceback__)
        return 1
    try:
        hook(type(error), error, error.__traceback__)  # type: ignore[operator]
    except SystemExit as leaving:
        return _exit_code(leaving)
    except BaseException as failure:  # noqa: BLE001 - shown as the interpreter shows it
        failure = failure.with_traceback(_tool_frames(failure.__traceback__))
        _flush_quietly(getattr(sys, "stdout", None))
        _write_stderr("Error in sys.excepthook:\n")
        ending.display(type(failure), failure, failure.__traceback__)
        _write_stderr("\nOriginal exception was:\n")
        ending.display(type(error), error, error.__traceback__)
    return 1


_MISSING = object()


def _write_stderr(text: str) -> None:
    stream = getattr(sys, "stderr", None)
    if stream is not None:
        try:
            stream.write(text)
        except Exception:  # noqa: BLE001 - as PySys_WriteStderr, which ignores failures
            pass


def _flush_quietly(stream: object) -> None:
    try:
        stream.flush()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001
        pass


def _tool_frames(trace: TracebackType | None) -> TracebackType | None:
    """`trace` without its leading frames of this module: a tool sees only its own frames.

    Those frames are the jail's own, which the tool has no business seeing
    (a fresh interpreter shows none of them).
    """
    while trace is not None and trace.tb_frame.f_code.co_filename == __file__:
        trace = trace.tb_next
    return trace


def _finish(status: int, ending: _Ending) -> int:
    """What interpreter shutdown does, in its order; the exit status.

    Threads joined, atexit handlers run, the standard streams flushed, then
    the code's module released (its objects' ``__del__`` run, its files are
    flushed and closed) and the streams flushed once more. Unlike a fresh
    interpreter, it leaves the objects of other modules unfinalised.
    Whatever the code left behind, this only reports, never raises.
    """
    threading = sys.modules.get("threading")
    if threading is not None:
        try:
            threading._shutdown()  # type: ignore[attr-defined]
        except Exception as error:  # noqa: BLE001 - reported as the interpreter does
            _report_unraisable(error, threading, ending)
    ending.run_exit_functions()
    status = _flush_standard_streams(status, ending)
    for name in ("stdin", "stdout", "stderr"):
        setattr(sys, name, getattr(sys, f"__{name}__", None))
    sys.last_type = sys.last_value = sys.last_traceback = None
    try:
        _release_main_module(ending)
    except Exception:  # noqa: BLE001 - what the code did to sys.modules is its own
        pass
    _flush_standard_streams(status, ending, report=False)  # what finalisers printed
    return status


def _release_main_module(ending: _Ending) -> None:
    """Let ``__main__`` go as shutdown does: as garbage, finalisers before any global is unbound.

    Only a module something else still holds has its globals unbound, as
    the interpreter unbinds them (:func:`_clear_module_dict`).
    """
    main = sys.modules.pop("__main__", None)
    if not isinstance(main, type(sys)):
        return
    left = ending.weak_reference(main)
    del main
    # The young generations first: a full collection also empties the
    # interpreter's free lists, which costs a forked process ~200 page faults.
    for generation in (1, 2):
        ending.collect(generation)
        if left() is None:
            return
    held = left()
    if held is not None:
        _clear_module_dict(held.__dict__)
        del held
        ending.collect()


def _flush_standard_streams(status: int, ending: _Ending, report: bool = True) -> int:
    """Flush stdout and stderr; 120 if one fails, and a failing stdout reported (`report`)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name, None)
        if stream is None or _closed(stream):
            continue
        try:
            stream.flush()
        except Exception as error:  # noqa: BLE001 - e.g. its fd was closed
            status = status or 120
            if report and name == "stdout":
                _report_unraisable(error, stream, ending)
    return status


def _closed(stream: object) -> bool:
    """As the interpreter asks at shutdown: a stream without a usable ``closed`` is open."""
    try:
        return bool(stream.closed)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001
        return False


def _report_unraisable(error: BaseException, culprit: object, ending: _Ending) -> None:
    """``Exception ignored in: <culprit>`` through sys.unraisablehook, as C code reports it."""
    try:
        arguments = _unraisable_arguments_type()(
            (type(error), error, _tool_frames(error.__traceback__), None, culprit)
        )
    except Exception:  # noqa: BLE001 - nothing better to report it with
        return
    hook = getattr(sys, "unraisablehook", None) or ending.default_unraisable_hook
    try:
        hook(arguments)
    except Exception:  # noqa: BLE001 - as the interpreter falls back on its own display
        ending.default_unraisable_hook(arguments)


def _unraisable_arguments_type() -> type:
    """The type sys.unraisablehook takes (it is not exposed): from one unraisable error."""
    caught: list[object] = []
    hook, sys.unraisablehook = sys.unraisablehook, caught.append

    class Failing:
        def __del__(self) -> None:
            raise RuntimeError

    try:
        Failing()
    finally:
        sys.unraisablehook = hook
    return type(caught[0])


def _clear_module_dict(namespace: dict[str, object]) -> None:
    """Release a module's globals as interpreter shutdown does: ``_name`` ones, then the rest."""
    for first in (True, False):
        for name, value in list(namespace.items()):
            if value is None or not isinstance(name, str) or name == "__builtins__":
                continue
            if not first or (name.startswith("_") and not name.startswith("__")):
                namespace[name] = None
