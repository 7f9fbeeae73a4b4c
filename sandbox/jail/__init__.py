"""The jail: every layer, applied in one fixed order by :func:`contain`.

Read :func:`contain` top to bottom to audit the order. It runs in a fresh,
single-threaded process (a zygote's child, or the cold launcher when no
zygote is up), as root (root mode) or as any other uid without capabilities
(unprivileged mode, as in a hardened container). A zygote running as root
starts each child as pid 1 of a fresh pid namespace: that process is the
jail's init from the start, and forks once, the tool. Otherwise the
launcher makes the pid namespace itself and forks its init (it cannot be
in that namespace), then only waits for it:

    launcher (root)        mountns (minimal root, pivot; its /proc if pid 1)
                           -> privileges (drop uid) -> userns -> [pidns], netns, ipcns,
                           utsns, mountns (owned by userns)
    launcher (not root)    privileges (checked) -> userns (jail uid -> own uid)
                           -> pidns, netns, ipcns, utsns -> mountns (minimal root, pivot)
      └─ init, pid 1       [/proc of the new pid ns], hostname, non-dumpable, capabilities
                           dropped; answers seccomp notifications, enforces the wall
                           clock, reports the tool's status
          └─ tool, pid 2   rlimits -> no_new_privs -> landlock -> no capabilities (checked)
                           -> seccomp (last) -> fds closed but three -> returns; then
                           (:func:`receive`) payload read, clock started, files written,
                           file size limit, last fds closed -> exec / run code

(Bracketed steps: only when the launcher makes the pid namespace itself.
Every process of the run is in the slot's cgroup from its start, and the
launcher, and init, each lead a session of their own.)

The jail is complete before the request it serves exists: the tool reads
the request's payload only after every layer is in force (see
:mod:`sandbox.jail.config`). From the moment the tool has its payload, init
enforces the wall-clock limit: at the limit it kills every other process of
the namespace (the service, out of the run's reach, kills init or the
launcher above it half a second later if that ever fails). Every step raises :class:`LayerError`
naming its layer when it cannot be applied; the run then stops before the
tool runs (fail closed) and the failure is reported on the report fd.

Report fd protocol (its words in :mod:`sandbox.jail.protocol`; text lines on a
unix socket, written by the launcher, init or tool setup; closed before the
tool runs its code, so the tool cannot write to it): ``jail`` (first, from the
process to kill to end the run: the service learns its pid from the socket's
credentials, so no host pid is ever written or held in the jail's memory; a
launcher that forks init says it first, then init, which is the one to kill
once it is up), ``layer_failed LAYER REASON``, ``workdir`` (from init, before
the tool exists, with a descriptor of the run's working dir: see
:func:`_send_workdir`), ``cold`` (a warm jail execs a fresh interpreter after
all, see :func:`~sandbox.jail.inprocess.prepare`), ``wall_timeout``,
``refusals N [NR:COUNT ...]`` (in all, then per syscall number), ``refused
NR[,ARG...]:COUNT ...`` (the refused calls with their decisive arguments),
then ``exit N`` / ``signal N`` (the tool's status, last). The report ends
(EOF) when init has exited.
"""

from __future__ import annotations

# Only builtin or tiny modules here and in the layer modules: the cold path
# pays every import on each run (typing, or signal with its enums, cost
# more than all the layers together). Hence `_signal`, and no typing.
import os
import sys
from _signal import SIG_DFL, SIGINT, SIGKILL, default_int_handler, signal

from sandbox.jail import (
    fds,
    files,
    ipcns,
    landlock,
    limits,
    mountns,
    netns,
    pidns,
    privileges,
    seccomp,
    userns,
    utsns,
)
from sandbox.jail.config import WORKDIR_IN_JAIL, JailConfig, RunPayload
from sandbox.jail.layer import LAYERS, LayerError
from sandbox.jail.libc import SYS_PIDFD_GETFD, prctl, syscall
from sandbox.jail.protocol import (
    JAIL,
    LAYER_FAILED,
    REFUSALS,
    REFUSED,
    WALL_TIMEOUT,
    WORKDIR_MESSAGE,
    read_frame,
)

__all__ = ["LAYERS", "JailConfig", "LayerError", "contain", "receive"]

LAYER_FAILED_EXIT = 126


def _apply(layer: str, step: object, *arguments: object) -> object:
    try:
        return step(*arguments)  # type: ignore[operator]
    except Exception as error:  # noqa: BLE001 - any failure of a layer is a refusal to run
        raise LayerError(layer, f"{type(error).__name__}: {error}") from None


def _report(report: int, line: str) -> None:
    os.write(report, (line.replace("\n", " ") + "\n").encode())


_WORKDIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _send_workdir(report: int, workdir: int) -> None:
    """In init: hand the service a descriptor of the run's working dir (``workdir`` line).

    The service reads the files the tool left under ``out/`` through it once
    the tool has ended, and holding it keeps that tmpfs alive until then,
    whatever became of the jail. Sent with the line (SCM_RIGHTS), then closed here.
    """
    import _socket  # preloaded in a zygote; a launcher the service started pays it

    channel = _socket.socket(fileno=report)
    try:
        rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, workdir.to_bytes(4, sys.byteorder))]
        channel.sendmsg([WORKDIR_MESSAGE], rights)
    except OSError:
        pass  # the service is gone: nobody to collect for
    finally:
        channel.detach()  # the report fd stays open
        os.close(workdir)


def _fail(report: int, error: LayerError) -> None:
    _report(report, f"{LAYER_FAILED} {error.layer} {error.reason}")
    os._exit(LAYER_FAILED_EXIT)


def _die_with_parent(parent: int) -> None:
    """SIGKILL when the parent dies. `parent` as this process sees it (0: outside its pid ns)."""
    prctl(pidns.PR_SET_PDEATHSIG, SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(LAYER_FAILED_EXIT)


def contain(
    config: JailConfig, report: int, source: int, prepared: frozenset[str] = frozenset()
) -> tuple[int, int, int]:
    """Apply every layer; return only in the jailed tool (pid 2 of its ns).

    The caller may then get ready (nothing of any request exists yet), takes
    the run's payload from `source` (the config fd) with :func:`receive`,
    passing it what this returns, and execs the tool or runs its Python
    code, with nothing but fds 0-2 open. Never returns in init (or in the
    launcher above it): those exit. Init starts the wall clock when the
    tool has its payload.
    `prepared`: layers the caller's parent, a slot's zygote, already put in
    place: "cgroup" (the zygote lives in the slot's group, so its children
    are born there; a launcher the service starts is moved there by the
    service before it reads its config), "netns" (an empty network namespace of the slot, see
    :mod:`netns`), "root" (the shared, read-only part of the jail's root,
    see :func:`mountns.build_template`) and "pidns" (this process is pid 1
    of a pid namespace made for this run alone, see
    :func:`pidns.fresh_for_children`).
    """
    # A zygote running as root makes each child pid 1 of a fresh pid namespace
    # (see :mod:`sandbox.jail.zygote`); otherwise this process makes one below.
    pid1 = "pidns" in prepared
    _report(report, JAIL)
    try:
        _apply("privileges", privileges.own_session)
        layers = set(config.layers)
        root = os.geteuid() == 0
        if pid1 and not root:
            # Only root's /proc of the new namespace is mounted before the drop.
            raise LayerError("pidns", "a pid namespace made ahead needs a jail run as root")
        jail_root = (
            config.root_dir,
            config.read_paths,
            config.extra_read_paths,
            config.hidden_paths,
            config.limits.tmp_bytes,
            (config.uid, config.gid),
            config.exec_written,
        )
        if root:
            # Root mode: as real root, outside any namespace, the run's root is
            # built; then the drop to the jail uid, which owns the namespaces.
            # As pid 1 already, its /proc is mounted now, while real root.
            _apply("mountns", mountns.build_root, *jail_root, "root" in prepared, True, pid1)
            _apply("privileges", privileges.drop_to_unprivileged, config.uid, config.gid)
            _apply("userns", userns.enter, config.uid, config.gid)
        else:
            # Unprivileged mode (no root, no capability): the user namespace
            # first, the jail uid inside mapped to the service's uid outside;
            # its capabilities build everything else, mounts last.
            _apply("privileges", privileges.check_unprivileged_launcher)
            _apply("userns", userns.enter, config.uid, config.gid, os.geteuid(), os.getegid())
        # In the user namespace, as the jail uid: namespaces owned by it. Only
        # root mode shares a zygote's network namespace and root (a zygote
        # that is not root cannot build them).
        if not pid1:
            _apply("pidns", pidns.unshare)
        if config.egress_port:
            # A namespace of this run's alone, whatever the layers or the
            # zygote prepared: its loopback carries the proxy's listener.
            _apply("netns", netns.unshare)
            _apply("netns", netns.pass_listener, report, config.egress_port)
        elif "netns" in layers and not config.network and ("netns" not in prepared or not root):
            _apply("netns", netns.unshare)
        if "ipcns" in layers:
            _apply("ipcns", ipcns.unshare)
        if "utsns" in layers:
            _apply("utsns", utsns.unshare)
        if root:
            _apply("mountns", mountns.unshare)
        else:
            _apply("mountns", mountns.build_root, *jail_root, False, False)
    except LayerError as error:
        _fail(report, error)

    if not pid1:
        # This process made the pid namespace, so it cannot be in it: its
        # child is the namespace's pid 1, and this one only waits for it.
        init_pid = os.fork()
        if init_pid:
            _wait_for_init(init_pid, (source, report))

    # Pid 1 of the new pid namespace: init. Python's SIGINT handler would let
    # the tool interrupt it; as pid 1 with the default action, the kernel
    # drops a signal sent from inside the namespace.
    signal(SIGINT, SIG_DFL)
    if not pid1:
        # The process to kill to end the run is init itself: killed, the
        # launcher above it reaps it and exits (killing the launcher would
        # leave init to whoever reaps orphans).
        _report(report, JAIL)
    # The tool tells init on `started` when its payload is in: the clock starts.
    started_read, started_write = os.pipe2(os.O_CLOEXEC)
    up_read, up_write = os.pipe2(os.O_CLOEXEC)
    down_read, down_write = os.pipe2(os.O_CLOEXEC)
    try:
        if not pid1:
            _die_with_parent(0)  # the namespace's parent is outside it
            # The tool stays in init's group: it may leave it (setsid), and the
            # seccomp layer refuses what would name that group from inside.
            _apply("privileges", privileges.own_session)
            _apply("mountns", mountns.mount_proc)
        if "utsns" in layers:
            _apply("utsns", utsns.set_hostname, config.hostname)
        _apply("privileges", privileges.set_non_dumpable)
        _apply("privileges", privileges.drop_capabilities)
        # Opened before the tool exists, so it is the run's own tmpfs, whatever
        # the tool does later: the service collects out/ through it.
        workdir = _apply("mountns", os.open, WORKDIR_IN_JAIL, _WORKDIR_FLAGS)
    except LayerError as error:
        _fail(report, error)
    tool_pid = os.fork()
    if tool_pid:
        _send_workdir(report, workdir)
        os.close(up_write)
        os.close(down_read)
        os.close(source)  # the payload is the tool's alone
        os.close(started_write)  # or it would never see the end of a tool that died
        wall_seconds = config.limits.wall_seconds
        _init(tool_pid, (up_read, down_write), started_read, wall_seconds, report)

    # Pid 2: the tool.
    os.close(workdir)
    signal(SIGINT, default_int_handler)  # as in any Python (an exec resets it to the default)
    try:
        _die_with_parent(1)
        # Dumpable again (as after an exec) so init, with no more capabilities
        # than the tool, may take the seccomp listener with pidfd_getfd.
        _apply("privileges", privileges.set_dumpable)
        if "rlimits" in layers:
            # The file size limit once the run's files are written (receive).
            _apply("rlimits", limits.apply, config.limits, False)
        _apply("no_new_privs", privileges.set_no_new_privs)
        if "landlock" in layers and config.landlock_abi:
            _apply(
                "landlock",
                landlock.restrict,
                config.landlock_abi,
                config.read_paths,
                [WORKDIR_IN_JAIL, "/tmp"],
                list(mountns.DEVICES),
                config.network,
                config.egress_port,
                config.exec_written,
            )
        _apply("privileges", privileges.check_no_capabilities)
        listener = None
        if "seccomp" in layers:
            listener = _apply("seccomp", seccomp.load, config.seccomp_bpf, config.seccomp_notify)
        if listener is not None:
            # Init takes a copy (pidfd_getfd); the tool must not keep one, or it
            # could answer its own refused syscalls.
            os.write(up_write, f"{listener}\n".encode())
            if os.read(down_read, 1) != b"k":
                raise LayerError("seccomp", "init did not take the notification listener")
            os.close(listener)
        _apply("privileges", fds.close_inherited, (source, started_write, report))
    except LayerError as error:
        _fail(report, error)
    return (source, started_write, report)


def _rehearse() -> None:
    """Go through a payload's decoding once while no request waits.

    A process forked from the zygote pays a copy-on-write fault for each
    page it first writes, reference counts included. Run before a jail
    waits, this moves those faults of the payload's path off the request's.
    """
    RunPayload.from_bytes(RunPayload(argv=[], files={}, python=None).to_bytes())


def receive(config: JailConfig, channel: tuple[int, int, int]) -> RunPayload:
    """In the jailed tool: wait for the run's payload, write its files, close the last fds.

    `channel` is what :func:`contain` returned: the config fd the payload
    arrives on, the pipe that starts init's clock, the report fd.
    Nothing of the tool's own code has run yet, so the tool's process may
    still be trusted with them; all three are closed before returning.
    Exits the process if the run is withdrawn (the config fd closes).
    """
    source, started, report = channel
    _rehearse()
    try:
        payload = RunPayload.from_bytes(read_frame(source))
    except (EOFError, ValueError, KeyError, TypeError):
        os._exit(LAYER_FAILED_EXIT)
    os.write(started, b"s")
    try:
        # As the tool's own user, every layer in force: nothing already in
        # the working dir is followed (see sandbox.jail.files).
        files.write_input_files(WORKDIR_IN_JAIL, payload.files)
        if "rlimits" in config.layers:
            limits.apply_file_size(config.limits)
    except OSError as error:
        _fail(report, LayerError("mountns", f"cannot write the run's files: {error}"))
    payload.files = {}
    for fd in channel:
        os.close(fd)
    return payload


def _wait_for_init(init_pid: int, run_fds: tuple[int, int]) -> None:
    """Outside the new pid namespace: wait for its init, then exit.

    Killing this process (the service does, at its backstop) kills init
    (its parent-death signal), and with it the whole namespace.
    """
    for fd in (0, 1, 2, *run_fds):  # only the jail may hold the run's pipes
        os.close(fd)
    os.waitpid(init_pid, 0)
    os._exit(0)


def _init(
    tool_pid: int, listener_pipes: tuple[int, int], started: int, wall_seconds: float, report: int
) -> None:
    """Pid 1: take the seccomp listener from the tool, serve it and time the tool, report.

    The wall clock starts when the tool says its payload is in (a jail
    waiting for its request has no clock running). At the limit, every
    other process of the namespace is killed. The tool's status is the
    report's last line.
    """
    for fd in (0, 1, 2):
        os.close(fd)
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
            _report(report, f"{LAYER_FAILED} seccomp cannot take listener: {error}")
            os.kill(tool_pid, SIGKILL)
    os.close(up_read)
    os.close(down_write)
    pidns.exit_status_words(0)  # faulted in now, not once the tool has exited
    calls: dict[tuple[int, ...], int] = {}
    status, refusals, timed_out = pidns.wait_for_tool(
        tool_pid, listener, started, wall_seconds, calls
    )
    # One write: the service answers as soon as it reads the status.
    lines = f"{WALL_TIMEOUT}\n" if timed_out else ""
    if listener is not None:
        counts = " ".join(f"{number}:{count}" for number, count in refusals.items())
        lines += f"{REFUSALS} {sum(refusals.values())} {counts}\n"
    if calls:
        named = " ".join(f"{','.join(map(str, call))}:{count}" for call, count in calls.items())
        lines += f"{REFUSED} {named}\n"
    os.write(report, f"{lines}{pidns.exit_status_words(status)}\n".encode())
    os._exit(0)
