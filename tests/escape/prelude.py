"""Tool-side helpers prepended to every attack program.

Every attack prints ``REACHED <label>`` right before it tries something, then
one ``RESULT {json}`` line saying what happened (an errno, an exception, or
success). The host side parses those lines: a test only counts when the
attack demonstrably got as far as trying.
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


def reached(label):
    print("REACHED " + label, flush=True)


def report(label, **fields):
    fields["label"] = label
    print("RESULT " + json.dumps(fields, default=repr), flush=True)


def raw_syscall(nr, *args):
    """A syscall by number, straight through libc's syscall(2), errno as OSError."""
    converted = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    ctypes.set_errno(0)
    result = LIBC.syscall(ctypes.c_long(nr), *converted)
    if result == -1:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def _report_outcome(label, action):
    try:
        value = action()
    except OSError as exc:
        report(label, errno=exc.errno, error=str(exc))
        return None
    except BaseException as exc:
        report(label, exception=type(exc).__name__, error=str(exc))
        return None
    report(label, ok=True, value=repr(value)[:400])
    return value


def attempt(label, action):
    """Print REACHED, run ``action``, report its errno / exception / value."""
    reached(label)
    return _report_outcome(label, action)


def attempt_in_child(label, action):
    """Like attempt, in a forked child, so that a seccomp kill is observed, not suffered."""
    reached(label)
    pid = os.fork()
    if pid == 0:
        _report_outcome(label, action)
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
