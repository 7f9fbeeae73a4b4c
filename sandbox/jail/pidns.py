"""PID namespace: the tool is pid 2 of its own tree, under a minimal init (pid 1).

``unshare(CLONE_NEWPID)`` only affects the caller's future children, so the
caller forks: the child is pid 1 ("init") of the new namespace. Init forks
the tool, answers seccomp notifications, reaps, and exits when the tool
exits — which makes the kernel kill every other process of the namespace:
nothing survives a run through setsid, double fork or a stopped process.
"""

from __future__ import annotations

import os
import select

from sandbox.jail.libc import SYS_UNSHARE, syscall

CLONE_NEWPID = 0x20000000
PR_SET_PDEATHSIG = 1


def unshare() -> None:
    """Put the caller's future children in a new pid namespace."""
    syscall(SYS_UNSHARE, CLONE_NEWPID)


def exit_status_words(status: int) -> str:
    """``exit N`` or ``signal N`` for a wait status."""
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit {os.waitstatus_to_exitcode(status)}"


def wait_for_tool(tool_pid: int, listener_fd: int | None) -> tuple[int, int]:
    """Init's loop: answer seccomp refusals (EPERM, counted) until the tool exits.

    Returns the tool's wait status and the refusals answered. Orphans
    re-parented to init stay zombies until init exits, bounded by the pids
    limit; the kernel kills and reaps them all when init exits.
    """
    from sandbox.jail import seccomp  # already imported by contain(); no cost

    pidfd = os.pidfd_open(tool_pid)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    if listener_fd is not None:
        poller.register(listener_fd, select.POLLIN)
    refusals = 0
    while True:
        for fd, events in poller.poll():
            if fd == pidfd:
                _, status = os.waitpid(tool_pid, 0)
                return status, refusals
            if events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                poller.unregister(fd)
                continue
            if listener_fd is not None and seccomp.refuse_notification(listener_fd):
                refusals += 1
