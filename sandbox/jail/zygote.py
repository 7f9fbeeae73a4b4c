"""The warm path's zygote: a pre-forked, single-threaded Python that forks one child per run.

Started by the service with no environment but LD_BIND_NOW and LANG (the
default tool locale), nothing but a unix socket (and /dev/null on fds 0-2),
one per run slot; it lives in the slot's cgroup, so its children are born
there (no per-run cgroup move). It preloads the interpreter's stdlib
modules a policy lists and makes what a warm child's set-up needs
(:func:`~sandbox.jail.inprocess.stage_in_zygote`: its environment emptied
once the interpreter and the dynamic loader have read it), then waits. For
each run the service sends a one-byte request (warm or cold) and five
fds — the run's stdin, stdout, stderr, config pipe and report pipe — and
nothing else: the zygote forks, and only the child reads the config pipe
(the jail's config, then, once jailed, the request's payload), so no
request data ever enters the zygote's memory. The child then does exactly what a cold
launcher does (:func:`run_one`): the same :func:`contain`, every layer in
the same order. Then a warm child runs the Python code in its preloaded
interpreter; a cold one execs the tool's command — for a Python tool, a
fresh interpreter, started inside the jail, that never held the jail's own
code (born in the slot's cgroup: no cgroup move per run either).
"""

from __future__ import annotations

import gc
import os
import socket
from _signal import SIG_DFL, SIG_IGN, SIGCHLD, SIGKILL, signal

from sandbox.jail import cgroup, mountns, netns, pidns
from sandbox.jail.inprocess import stage_in_zygote
from sandbox.jail.launcher import CONFIG_FD, REPORT_FD, run_one
from sandbox.jail.libc import address_of, prctl, writable_buffer

PR_SET_PDEATHSIG = 1
FDS_PER_RUN = 5
WARM = b"r"
"""Request: fork and run the code in the preloaded interpreter."""
COLD = b"x"
"""Request: fork, jail the child and exec the tool's command (the cold path)."""


def preload(modules: list[str]) -> None:
    """Import the listed stdlib modules once, for every future run to share."""
    for name in modules:
        try:
            __import__(name)
        except ImportError:
            pass  # a listed module this interpreter lacks only costs its run an import


def warm_up() -> None:
    """Initialise once what every run would otherwise initialise for itself, after its fork.

    The first ``compile`` in a process creates the ~120 classes of the ``_ast``
    module (a third of a warm run's Python time otherwise); ctypes makes an
    array type per buffer size on first use. Nothing here holds request data.
    """
    compile("pass", "<warm-up>", "exec")
    __import__("atexit")  # run by every in-process tool at its end
    stage_in_zygote()
    writable_buffer(24)  # capability sets, checked in every run
    address_of(bytes(4096))  # the seccomp program (up to 512 instructions)


def serve(
    socket_fd: int,
    cgroup_files: list[str],
    template: tuple[str, list[str], list[str]] | None,
    modules: list[str],
) -> None:
    """Join the slot's cgroup and namespaces, preload, then fork a child per request until EOF."""
    prctl(PR_SET_PDEATHSIG, SIGKILL)
    cgroup.join(cgroup_files)  # once: the children are born in the group
    prepared = {"cgroup"} if cgroup_files else set()
    try:
        netns.unshare()  # once: runs of this slot share an empty network namespace
        prepared.add("netns")
    except OSError:
        pass  # each run makes its own (or fails closed)
    if template is not None:
        try:
            mountns.make_private()
            mountns.build_template(*template)
            prepared.add("root")
        except OSError:
            pass  # each run builds its whole root
    # As root, each child starts as pid 1 of a fresh pid namespace: the jail
    # then needs no process outside it (see sandbox.jail.contain).
    own_pid_namespace = pidns.own_namespace() if os.geteuid() == 0 else None
    preload(modules)
    warm_up()
    for_every_run = frozenset(prepared)
    with_own_pid_namespace = for_every_run | {"pidns"}
    gc.freeze()  # fewer copy-on-write faults in the children: the collector skips these
    channel = socket.socket(fileno=socket_fd)
    signal(SIGCHLD, SIG_IGN)  # children are reaped by the kernel
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(channel, 16, FDS_PER_RUN)
        except InterruptedError:
            continue
        if not message:
            return
        if len(fds) != FDS_PER_RUN:
            for fd in fds:
                os.close(fd)
            continue
        layers_ready = for_every_run
        if own_pid_namespace is not None:
            try:
                pidns.fresh_for_children(own_pid_namespace)
                layers_ready = with_own_pid_namespace
            except OSError:
                pass  # this run's jail makes its pid namespace itself
        pid = os.fork()
        if pid == 0:
            # _signal, not signal: no enum conversion (and its page faults) per child.
            signal(SIGCHLD, SIG_DFL)  # survives exec otherwise
            channel.close()
            _place_fds(fds)
            run_one(CONFIG_FD, REPORT_FD, layers_ready, in_process=message == WARM)
        try:
            # The process the service kills to end the run early (with it, the
            # whole jail): init, or the process outside its pid namespace.
            os.write(fds[REPORT_FD], f"jail {pid}\n".encode())
        except OSError:
            pass  # the service gave up on this run: nothing reads its report
        for fd in fds:
            os.close(fd)


def _place_fds(fds: list[int]) -> None:
    """stdin, stdout, stderr, config, report -> fds 0, 1, 2, 3, 4; nothing else open."""
    high = [os.dup(fd) for fd in fds]  # out of the way of the targets first
    for fd in fds:
        os.close(fd)
    for target, fd in enumerate(high):
        os.dup2(fd, target)
        os.close(fd)
    os.closerange(FDS_PER_RUN, 1 << 16)
