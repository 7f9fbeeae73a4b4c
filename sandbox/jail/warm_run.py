"""Run a Python tool's code warm, in the jailed process itself, and end as a fresh interpreter ends.

Once :func:`~sandbox.jail.contain` has returned in the tool process and
:mod:`sandbox.jail.warm_prepare` has made this interpreter stand in for a
fresh one, :func:`run` does what ``python -I -S -c CODE`` (or a script, or
stdin) would: a fresh ``__main__``, ``sys.argv``, the code, then what
interpreter shutdown does, in its order. Only where a fresh interpreter
would run the code as source: otherwise the tool's command is exec'd.
"""

from __future__ import annotations

import os
import sys
from _signal import SIG_DFL, SIGINT

TYPE_CHECKING = False  # typing and types cost each launcher started per run an import each
if TYPE_CHECKING:
    from types import TracebackType


def fresh_main(path: str | None) -> dict[str, object]:
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


def _exit_code(error: SystemExit) -> int:
    code = error.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


_ending: _Ending | None = None
"""What the run's end calls, taken before the request by :func:`take_ending`."""


def take_ending() -> None:
    """Take what the run's end calls now, before the request, not on its way (see
    :class:`_Ending`)."""
    global _ending
    _ending = _Ending()


def run(python: dict[str, object], orig_argv: list[str]) -> None:
    """Run the tool's code here and exit the process with its status.

    :func:`~sandbox.jail.warm_prepare.prepare` ran first, in this process. `orig_argv`: the tool's
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
            namespace = fresh_main(filename)
        elif isinstance(python["code"], str):
            source, filename = python["code"], "<string>"
            namespace = fresh_main(None)
        else:
            source, filename = sys.stdin.buffer.read(), "<stdin>"
            namespace = fresh_main(filename)
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
