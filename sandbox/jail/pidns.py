"""PID namespace: the tool is pid 2 of its own tree, under a minimal init (pid 1).

``unshare(CLONE_NEWPID)`` only affects the caller's future children: the
next child is pid 1 ("init") of the new namespace. A zygote running as root
makes one before each fork (:func:`fresh_for_children`), so the jail's first
process is its init; otherwise the jail makes it and forks init itself. Init
forks the tool, answers seccomp notifications, enforces the wall clock,
reaps, and exits when the tool exits — which makes the kernel kill every
other process of the namespace: nothing survives a run through setsid,
double fork or a stopped process.
"""

from __future__ import annotations

import os
import select
from _signal import SIGKILL
from time import monotonic

from sandbox.jail.libc import SYS_SETNS, SYS_UNSHARE, syscall
from sandbox.jail.protocol import EXIT, SIGNAL

CLONE_NEWPID = 0x20000000
PR_SET_PDEATHSIG = 1


def unshare() -> None:
    """Put the caller's future children in a new pid namespace."""
    syscall(SYS_UNSHARE, CLONE_NEWPID)


def own_namespace() -> int:
    """An fd of the caller's own pid namespace, for :func:`fresh_for_children`."""
    return os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)


def fresh_for_children(own: int) -> None:
    """Make the caller's next child pid 1 of a new pid namespace (needs real root).

    The kernel allows one :func:`unshare` per "pid namespace for children":
    setns to the caller's own (`own`, from :func:`own_namespace`) resets it
    first. Only the next child lands in the new namespace as its pid 1 (a
    second child would be its pid 2): call this before every fork.
    """
    syscall(SYS_SETNS, own, CLONE_NEWPID)
    syscall(SYS_UNSHARE, CLONE_NEWPID)


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
    from sandbox.jail import seccomp  # already imported by contain(); no cost

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
