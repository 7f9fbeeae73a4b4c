"""Tool-side helpers prepended to every attack program.

Every attack prints ``REACHED <label>`` right before it tries something, then
one ``RESULT {json}`` line saying what happened (an errno, an exception, or
success). The host side parses those lines: a test only counts when the
attack demonstrably got as far as trying. A RESULT also says what was tried,
when the attack tells it: the syscall (``syscall=``, or the number
:func:`raw_syscall` last made) and the host path it aimed at (``path=``), so
that a refusal is credited to a layer only with evidence for that layer.

First of all, the program prints the ids of its pid and user namespaces
and the boot-time clock (``NAMESPACES {json}``): after the run, the host
looks for any process still in them (a survivor, whatever it calls itself).
"""

from __future__ import annotations

PRELUDE = r'''
import ctypes
import json
import os
import sys

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long
MARKER = "@MARKER@"
_LAST_SYSCALL = []


def _namespaces():
    try:
        found = {name: os.readlink("/proc/self/ns/" + name) for name in ("pid", "user")}
    except OSError as exc:
        return {"errno": exc.errno}
    import time
    found["boottime"] = time.clock_gettime(time.CLOCK_BOOTTIME)
    return found


print("NAMESPACES " + json.dumps(_namespaces()), flush=True)


def reached(label):
    print("REACHED " + label, flush=True)


def report(label, **fields):
    fields["label"] = label
    print("RESULT " + json.dumps(fields, default=repr), flush=True)


def raw_syscall(nr, *args):
    """A syscall by number, straight through libc's syscall(2), errno as OSError."""
    converted = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    _LAST_SYSCALL[:] = [nr]
    ctypes.set_errno(0)
    result = LIBC.syscall(ctypes.c_long(nr), *converted)
    if result == -1:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def _report_outcome(label, action, tried):
    _LAST_SYSCALL[:] = []
    try:
        value = action()
    except OSError as exc:
        report(label, errno=exc.errno, error=str(exc), **_tried(tried))
        return None
    except BaseException as exc:
        report(label, exception=type(exc).__name__, error=str(exc), **_tried(tried))
        return None
    report(label, ok=True, value=repr(value)[:400], **_tried(tried))
    return value


def _tried(tried):
    tried = {key: value for key, value in tried.items() if value is not None}
    if "syscall" not in tried and _LAST_SYSCALL:
        tried["syscall_nr"] = _LAST_SYSCALL[0]
    return tried


def attempt(label, action, syscall=None, path=None):
    """Print REACHED, run ``action``, report its errno / exception / value.

    ``syscall``: the syscall(s) ``action`` makes (a name or a list), when it
    is not a :func:`raw_syscall`; ``path``: the host path it aims at.
    """
    reached(label)
    return _report_outcome(label, action, {"syscall": syscall, "path": path})


def attempt_in_child(label, action, syscall=None, path=None):
    """Like attempt, in a forked child, so that a seccomp kill is observed, not suffered."""
    reached(label)
    pid = os.fork()
    if pid == 0:
        _report_outcome(label, action, {"syscall": syscall, "path": path})
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        report(label, signal=os.WTERMSIG(status))


def set_comm(name):
    """PR_SET_NAME: the host sees ``name`` in /proc/<pid>/comm (survivor hunting)."""
    LIBC.prctl(15, ctypes.c_char_p(name.encode()), 0, 0, 0)


def c_buffer(size):
    return ctypes.create_string_buffer(size)

'''
