"""A slot's zygote: a pre-forked, single-threaded Python that forks one child per run.

Started by the service with no environment but LD_BIND_NOW and LANG (the
default tool locale), nothing but a unix socket and the slot's cgroup files
(and /dev/null on fds 0-2), one per run slot, in a session of its own, its
working dir the service's dir of run roots; it lives in the slot's cgroup,
so its children are born there (no per-run cgroup move). It preloads the interpreter's stdlib
modules a policy lists and makes what a warm child's set-up needs
(:func:`~sandbox.jail.warm_prepare.stage_in_zygote`: its environment emptied
once the interpreter and the dynamic loader have read it), then waits. For
each run the service sends a one-byte request (its :class:`RunMode`) and five
fds — the run's stdin, stdout, stderr, config pipe and report socket — and
nothing else: the zygote forks, and only the child reads the config pipe
(the jail's config, then, once jailed, the request's payload), so no
request data ever enters the zygote's memory. The child then does exactly
what a launcher the service starts does (:func:`~sandbox.jail.run.run_one`):
the same :func:`contain`, every layer in the same order. Then a warm child
runs the Python code in its preloaded interpreter; a cold one execs the
tool's command — for a Python tool, a fresh interpreter, started inside the
jail, that never held the jail's own code (born in the slot's cgroup: no
cgroup move per run either).
"""

from __future__ import annotations

import gc
import os
import socket
import sys
from _signal import SIG_DFL, SIG_IGN, SIGCHLD, SIGKILL, signal
from ctypes import memset

from sandbox.jail import Prepared, cgroup, mountns, netns, pidns
from sandbox.jail.libc import address_of, prctl, writable_buffer
from sandbox.jail.protocol import CONFIG_FD, FDS_PER_RUN, REPORT_FD, RunMode
from sandbox.jail.run import run_one
from sandbox.jail.warm_prepare import stage_in_zygote

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


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
    __import__("atexit")  # run by every warm tool at its end
    stage_in_zygote()
    writable_buffer(24)  # capability sets, checked in every run
    address_of(bytes(4096))  # the seccomp program (up to 512 instructions)


KEPT_ARGUMENTS = ("python", "-I", "-S", "/proc/self/fd/N/sandbox/jail/launch.py", "--zygote")
"""What a zygote's command line still shows once it is up (the rest is blanked): the
launch script is named through an fd, not by its host path (a package environment's
zygote: the same without ``-S``)."""


def blank_command_line(keep: int) -> None:
    """Zero the memory of this process's arguments after the first `keep` of them.

    The kernel shows that memory as /proc/PID/cmdline, for this process and
    every child it forks: a warm tool reading its own finds there only how
    the zygote was started, not the paths it was given.
    """
    arg_start, arg_end = _argument_area()
    kept = sum(len(os.fsencode(argument)) + 1 for argument in sys.orig_argv[:keep])
    if arg_start and arg_start + kept < arg_end:
        memset(arg_start + kept, 0, arg_end - arg_start - kept)


def _argument_area() -> tuple[int, int]:
    """Where this process's arguments lie in its memory: fields 48 and 49 of /proc/self/stat.

    That line also holds this process's host pid, its parent's (the
    service's) and its group's: it is read into a buffer that is zeroed
    after, and parsed byte by byte, so that no object holding them is left
    in the memory every warm run inherits.
    """
    line = bytearray(4096)
    fd = os.open("/proc/self/stat", os.O_RDONLY | os.O_CLOEXEC)
    try:
        length = os.readv(fd, [line])
    finally:
        os.close(fd)
    field = -1  # fields after the command name's closing parenthesis, counted from 0
    position = line.rfind(b")", 0, length) + 1
    values = [0, 0]
    while position < length and field <= 46:
        byte = line[position]
        if byte == 0x20:
            field += 1
        elif field in (45, 46):
            values[field - 45] = values[field - 45] * 10 + byte - 0x30
        position += 1
    line[:] = bytes(len(line))
    return values[0], values[1]


def _forget_pid(pid: int) -> None:
    """Zero the digits of the int object holding a child's host pid, before it is dropped.

    Its memory is freed, not cleared: the next child would find that pid
    in the heap it inherits. Pids up to 256 are the interpreter's shared,
    static small ints: nothing to forget there.
    """
    if pid > 256:
        header = type(pid).__basicsize__
        memset(id(pid) + header, 0, sys.getsizeof(pid) - header)


def _parse(
    arguments: list[str],
) -> tuple[int, list[int], tuple[str, list[str], list[str]] | None, list[str]]:
    socket_fd, cgroups, root, read_paths, hidden_paths, *modules = arguments
    cgroup_fds = [] if cgroups == "-" else [int(fd) for fd in cgroups.split(",")]
    template = None if root == "-" else (root, read_paths.split(":"), hidden_paths.split(":"))
    return int(socket_fd), cgroup_fds, template, modules


def serve(arguments: list[str]) -> None:
    """Join the slot's cgroup and namespaces, preload, then fork a child per request until EOF.

    `arguments`: ``SOCKET CGROUPS ROOT READ HIDDEN MODULE...`` (see
    :func:`~sandbox.jail.launcher.main`). The list is emptied: the caller's
    frame lies under every warm tool's code. Nothing in them names the
    service's state (ROOT is the slot's dir relative to the zygote's
    working dir, CGROUPS are open fds) and nothing this loop does holds a
    host pid: a warm tool can read its whole memory, freed parts included.
    """
    socket_fd, cgroup_fds, template, modules = _parse(arguments)
    arguments.clear()
    prctl(PR_SET_PDEATHSIG, SIGKILL)
    # A jail's init whose launcher was killed first comes back here, and is
    # reaped at once (SIGCHLD ignored below), not left to the host's pid 1.
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    cgroup.join_through(cgroup_fds)  # once: the children are born in the group
    in_slot_cgroup = bool(cgroup_fds)
    shared_netns = shared_root = False
    try:
        netns.unshare()  # once: runs of this slot share an empty network namespace
        shared_netns = True
    except OSError:
        pass  # each run makes its own (or fails closed)
    if template is not None:
        try:
            mountns.make_private()
            mountns.build_template(*template)
            shared_root = True
        except OSError:
            pass  # each run builds its whole root
    # As root, each child starts as pid 1 of a fresh pid namespace: the jail
    # then needs no process outside it (see sandbox.jail.contain).
    own_pid_namespace = pidns.own_namespace() if os.geteuid() == 0 else None
    preload(modules)
    warm_up()
    # Every child runs under this frame, and warm tools' code in this
    # interpreter: nothing here may name the host paths given at start.
    del cgroup_fds, template, modules
    # A package environment's zygote runs without -S: one argument fewer before --zygote.
    blank_command_line(keep=sys.orig_argv.index("--zygote") + 1)
    for_every_run = Prepared(cgroup=in_slot_cgroup, netns=shared_netns, root=shared_root)
    with_own_pid_namespace = for_every_run.with_pidns()
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
            mode = RunMode.WARM if message == RunMode.WARM else RunMode.COLD
            run_one(CONFIG_FD, REPORT_FD, layers_ready, mode=mode)
        _forget_pid(pid)  # the child tells the service who it is (see sandbox.jail.contain)
        del pid
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
