"""Init, pid 1 of a run's pid namespace: serves the tool's seccomp listener, times it, reports.

Init is forked (or, from a root zygote, born) once every layer of the
namespace level is in place (see :func:`sandbox.jail.contain`); it forks
the tool and then only runs :func:`serve`: it takes the tool's seccomp
notification listener (pidfd_getfd), answers each refused syscall with
EPERM and counts it, starts the wall clock when the tool has its payload,
kills every other process of the namespace at the limit, and writes the
report's last lines. When init exits, the kernel kills what is left.
"""

from __future__ import annotations

import os
import select
from _signal import SIGKILL
from time import monotonic

from sandbox.jail import seccomp
from sandbox.jail.libc import SYS_PIDFD_GETFD, syscall
from sandbox.jail.protocol import EXIT, LAYER_FAILED, REFUSALS, REFUSED, SIGNAL, WALL_TIMEOUT


def serve(
    tool_pid: int, listener_pipes: tuple[int, int], started: int, wall_seconds: float, report: int
) -> None:
    """Take the seccomp listener from the tool, serve it and time the tool, report; exit.

    The wall clock starts when the tool says its payload is in (a jail
    waiting for its request has no clock running). At the limit, every
    other process of the namespace is killed. The tool's status is the
    report's last line.
    """
    for fd in (0, 1, 2):
        os.close(fd)
    listener = _take_listener(tool_pid, listener_pipes, report)
    exit_status_words(0)  # faulted in now, not once the tool has exited
    calls: dict[tuple[int, ...], int] = {}
    status, refusals, timed_out = wait_for_tool(tool_pid, listener, started, wall_seconds, calls)
    # One write: the service answers as soon as it reads the status.
    lines = f"{WALL_TIMEOUT}\n" if timed_out else ""
    if listener is not None:
        counts = " ".join(f"{number}:{count}" for number, count in refusals.items())
        lines += f"{REFUSALS} {sum(refusals.values())} {counts}\n"
    if calls:
        named = " ".join(f"{','.join(map(str, call))}:{count}" for call, count in calls.items())
        lines += f"{REFUSED} {named}\n"
    os.write(report, f"{lines}{exit_status_words(status)}\n".encode())
    os._exit(0)


def _take_listener(tool_pid: int, listener_pipes: tuple[int, int], report: int) -> int | None:
    """A copy of the tool's listener, whose fd number the tool writes up; None without one.

    The tool waits for the answer (``k``) before it closes its own copy.
    """
    up_read, down_write = listener_pipes
    listener: int | None = None
    message = os.read(up_read, 32)
    if message:
        try:
            tool_pidfd = os.pidfd_open(tool_pid)
            listener = syscall(SYS_PIDFD_GETFD, tool_pidfd, int(message), 0)
            os.close(tool_pidfd)
            os.write(down_write, b"k")
        except OSError as error:
            os.write(report, f"{LAYER_FAILED} seccomp cannot take listener: {error}\n".encode())
            os.kill(tool_pid, SIGKILL)
    os.close(up_read)
    os.close(down_write)
    return listener


def exit_status_words(status: int) -> str:
    """``exit N`` or ``signal N`` for a wait status."""
    if os.WIFSIGNALED(status):
        return f"{SIGNAL} {os.WTERMSIG(status)}"
    return f"{EXIT} {os.waitstatus_to_exitcode(status)}"


NAMED_REFUSALS = 64
"""Distinct syscalls counted by number; refusals of any further ones are counted as -1.
As many distinct refused calls (a syscall with its decisive arguments) are
kept; further ones are counted by syscall only."""


def wait_for_tool(
    tool_pid: int,
    listener_fd: int | None,
    started: int,
    wall_seconds: float,
    calls: dict[tuple[int, ...], int],
) -> tuple[int, dict[int, int], bool]:
    """Init's loop: answer seccomp refusals (EPERM, counted per syscall) until the tool exits.

    The tool writes one byte on `started` when its run begins; from then
    on it has `wall_seconds`, after which every process of the namespace
    but init is killed. Returns the tool's wait status, the refusals
    answered (syscall number -> count; -1 holds syscalls beyond the first
    :data:`NAMED_REFUSALS`) and whether the wall clock ran out; `calls`
    receives the refused calls with their decisive arguments (see
    :func:`~sandbox.jail.seccomp.refuse_notification`) -> count. Orphans
    re-parented to init stay zombies until init exits, bounded by the pids
    limit; the kernel kills and reaps them all when init exits.
    """
    pidfd = os.pidfd_open(tool_pid)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.register(started, select.POLLIN)
    if listener_fd is not None:
        poller.register(listener_fd, select.POLLIN)
    refusals: dict[int, int] = {}
    deadline: float | None = None
    timed_out = False
    while True:
        # Checked on every turn: a stream of refusals must not hold the clock off.
        if deadline is not None and monotonic() >= deadline:
            deadline = None
            timed_out = True
            os.kill(-1, SIGKILL)  # from pid 1: every process of this namespace but itself
        timeout = None if deadline is None else int((deadline - monotonic()) * 1000) + 1
        for fd, events in poller.poll(timeout):
            if fd == pidfd:
                _, status = os.waitpid(tool_pid, 0)
                return status, refusals, timed_out
            if fd == started:
                poller.unregister(started)
                if events & select.POLLIN and os.read(started, 1) == b"s":
                    deadline = monotonic() + wall_seconds
                continue
            if events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                poller.unregister(fd)
                continue
            if listener_fd is None:
                continue
            call = seccomp.refuse_notification(listener_fd)
            if call is not None:
                if call in calls or len(calls) < NAMED_REFUSALS:
                    calls[call] = calls.get(call, 0) + 1
                number = call[0]
                if number == seccomp.FOREIGN:
                    continue  # a kill (SIGSYS), not a refusal: the service counts it so
                if number not in refusals and len(refusals) >= NAMED_REFUSALS:
                    number = -1
                refusals[number] = refusals.get(number, 0) + 1
