"""Run a Python tool's code in the jailed process itself, instead of exec'ing Python again.

The launcher and the zygote run on the same interpreter the Python tool
names, in the same isolated mode (``-I -S``); once :func:`contain` has
returned in the tool process, running the code here is what a fresh
``python -I -S -c CODE`` would do — minus a second interpreter start-up.
The code gets a fresh ``__main__``, ``sys.argv``, the listed environment and
stdin/stdout/stderr on the run's pipes; the jail's own modules are dropped
from ``sys.modules`` first.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing and types cost the cold path an import each
if TYPE_CHECKING:
    from types import TracebackType

_ALLOWED_FLAGS = frozenset("IsSEBuqb")


def parse_python_argv(argv: list[str], interpreter: str) -> dict[str, object] | None:
    """If `argv` runs `interpreter` on code in a way we can reproduce, describe it.

    Returns ``{"code": str | None, "path": str | None, "argv": [...]}`` (code
    read from stdin when both are None), or None (exec the command instead).
    """
    if not argv:
        return None
    if argv[0] != interpreter and os.path.realpath(argv[0]) != os.path.realpath(interpreter):
        return None
    index = 1
    while index < len(argv) and argv[index].startswith("-") and argv[index] != "-":
        option = argv[index]
        if option == "-c":
            if index + 1 >= len(argv):
                return None
            return {"code": argv[index + 1], "path": None, "argv": ["-c", *argv[index + 2 :]]}
        if option.startswith("--") or not set(option[1:]) <= _ALLOWED_FLAGS:
            return None  # -m, -X, -W, ...: let the real interpreter handle them
        index += 1
    if index >= len(argv) or argv[index] == "-":
        return {
            "code": None,
            "path": None,
            "argv": ["-", *argv[index + 1 :]] if index < len(argv) else [""],
        }
    return {"code": None, "path": argv[index], "argv": argv[index:]}


def _fresh_main(path: str | None) -> dict[str, object]:
    module = type(sys)("__main__")
    module.__dict__["__builtins__"] = __builtins__
    if path is not None:
        module.__file__ = path
    sys.modules["__main__"] = module
    return module.__dict__


def _forget_jail_modules() -> None:
    for name in [n for n in sys.modules if n == "sandbox" or n.startswith("sandbox.")]:
        del sys.modules[name]
    sys.path[:] = [entry for entry in sys.path if not entry.startswith(_REPO_PREFIXES)]


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


def prepare(environment: dict[str, str]) -> None:
    """Before the run's payload arrives: the environment, stdio on the run's pipes, no jail modules.

    None of it depends on the request, and all of it costs (a forked
    process pays a copy-on-write fault for each page it first writes), so a
    jail built ahead of its request does it while it waits.
    """
    import io

    os.environ.clear()
    os.environ.update(environment)
    # The one start-up variable that still matters once the interpreter runs.
    sys.dont_write_bytecode = bool(environment.get("PYTHONDONTWRITEBYTECODE"))
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8")
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace"
    )
    _forget_jail_modules()
    # Fault in now what every run goes through (see jail._rehearse): compiling,
    # a fresh __main__, the end of the run.
    exec(compile("pass", "<prepare>", "exec"), _fresh_main(None))  # noqa: S102 - a no-op
    import atexit  # noqa: F401 - imported now, used by _finish


def run(python: dict[str, object]) -> None:
    """Run the tool's code here and exit the process with its status (never returns).

    :func:`prepare` ran first, in this process.
    """
    status = 0
    try:
        path = python["path"]
        if isinstance(path, str):
            with open(path, "rb") as handle:
                source: str | bytes = handle.read()
            filename = path
        elif isinstance(python["code"], str):
            source, filename = python["code"], "<string>"
        else:
            source, filename = sys.stdin.buffer.read(), "<stdin>"
        sys.argv = [str(a) for a in python["argv"]]  # type: ignore[union-attr]
        namespace = _fresh_main(path if isinstance(path, str) else None)
        exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - this is the tool
    except SystemExit as error:
        status = _exit_code(error)
    except BaseException as error:  # noqa: BLE001 - report like the interpreter does
        trace = _tool_frames(error.__traceback__)
        sys.excepthook(type(error), error.with_traceback(trace), trace)
        status = 1
    os._exit(_finish(status))


def _tool_frames(trace: TracebackType | None) -> TracebackType | None:
    """`trace` without its leading frames of this module: a tool sees only its own frames.

    Those frames would show the host path of the jail's source, which the
    tool has no business knowing (a fresh interpreter shows none of them).
    """
    while trace is not None and trace.tb_frame.f_code.co_filename == __file__:
        trace = trace.tb_next
    return trace


def _finish(status: int) -> int:
    """What interpreter shutdown does: join threads, atexit, flush."""
    threading = sys.modules.get("threading")
    if threading is not None:
        try:
            threading._shutdown()  # type: ignore[attr-defined]
        except BaseException:  # noqa: BLE001
            pass
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - e.g. a closed pipe
            status = status or 120
    return status
