"""The jail: every layer, applied in one fixed order by :func:`contain`.

Read :func:`contain` and the three checklists it runs, one per process
(:func:`_launcher_as_root` or :func:`_launcher_unprivileged`,
:func:`_init_steps`, :func:`_tool_steps`), top to bottom to audit the
order. It runs in a fresh, single-threaded process (a zygote's child, or a
launcher the service starts when no zygote can serve the run), as root
(root mode) or as any other uid without capabilities (unprivileged mode,
as in a hardened container). A zygote running as root starts each child as
pid 1 of a fresh pid namespace: that process is the jail's init from the
start, and forks once, the tool. Otherwise the launcher makes the pid
namespace itself and forks its init (it cannot be in that namespace),
then only waits for it:

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

(Bracketed steps: only when the launcher makes the pid namespace itself,
that is when the zygote did not make it ahead, see :class:`Prepared`.
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
:func:`_send_workdir`), ``cold`` (a warm run goes cold after all, see
:data:`~sandbox.jail.protocol.WENT_COLD`), ``wall_timeout``,
``refusals N [NR:COUNT ...]`` (in all, then per syscall number), ``refused
NR[,ARG...]:COUNT ...`` (the refused calls with their decisive arguments),
then ``exit N`` / ``signal N`` (the tool's status, last). The report ends
(EOF) when init has exited.
"""

from __future__ import annotations

# Only builtin or tiny modules here and in the layer modules: a launcher
# the service starts pays every import on each run (typing, or signal with its enums, cost
# more than all the layers together). Hence `_signal`, and no typing.
import os
import sys
from _signal import SIG_DFL, SIGINT, SIGKILL, default_int_handler, signal

from sandbox.jail import (
    fds,
    files,
    init,
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
from sandbox.jail.libc import prctl
from sandbox.jail.protocol import JAIL, LAYER_FAILED, WORKDIR_MESSAGE, read_frame

__all__ = ["LAYERS", "JailConfig", "LayerError", "Prepared", "contain", "receive"]

LAYER_FAILED_EXIT = 126


class Prepared:
    """What a slot's zygote already put in place for the process it forks, before any run."""

    __slots__ = ("cgroup", "netns", "root", "pidns")
    cgroup: bool
    """The zygote lives in the slot's cgroup, so its children are born there (a
    launcher the service starts is moved there by the service before it reads its
    config)."""
    netns: bool
    """The slot's empty network namespace, shared by its runs (see :mod:`netns`)."""
    root: bool
    """The shared, read-only part of the jail's root (see :func:`mountns.build_template`)."""
    pidns: bool
    """This process is pid 1 of a pid namespace made for this run alone (see
    :func:`pidns.fresh_for_children`): it is the jail's init from the start."""

    def __init__(
        self, *, cgroup: bool = False, netns: bool = False, root: bool = False, pidns: bool = False
    ) -> None:
        self.cgroup = cgroup
        self.netns = netns
        self.root = root
        self.pidns = pidns

    def with_pidns(self) -> Prepared:
        """The same, and a fresh pid namespace of the run's own."""
        return Prepared(cgroup=self.cgroup, netns=self.netns, root=self.root, pidns=True)


NOTHING_PREPARED = Prepared()
"""A launcher the service started itself: the jail builds every layer."""


def _apply(layer: str, step: object, /, *arguments: object, **keywords: object) -> object:
    try:
        return step(*arguments, **keywords)  # type: ignore[operator]
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
    config: JailConfig, report: int, source: int, prepared: Prepared = NOTHING_PREPARED
) -> tuple[int, int, int]:
    """Apply every layer; return only in the jailed tool (pid 2 of its ns).

    The caller may then get ready (nothing of any request exists yet), takes
    the run's payload from `source` (the config fd) with :func:`receive`,
    passing it what this returns, and execs the tool or runs its Python
    code, with nothing but fds 0-2 open. Never returns in init (or in the
    launcher above it): those exit. Init starts the wall clock when the
    tool has its payload. `prepared`: what the caller's parent, a slot's
    zygote, already put in place.
    """
    _report(report, JAIL)
    as_root = os.geteuid() == 0
    try:
        if as_root:
            _launcher_as_root(config, report, prepared)
        else:
            _launcher_unprivileged(config, report, prepared)
    except LayerError as error:
        _fail(report, error)
    if not prepared.pidns:
        # This process made the pid namespace, so it cannot be in it: its
        # child is the namespace's pid 1, and this one only waits for it.
        init_pid = os.fork()
        if init_pid:
            _wait_for_init(init_pid, (source, report))
        # The process to kill to end the run is init itself: killed, the
        # launcher above it reaps it and exits (killing the launcher would
        # leave init to whoever reaps orphans).
        _report(report, JAIL)

    # Pid 1 of the new pid namespace: init.
    # The tool tells init on `started` when its payload is in: the clock starts.
    started_read, started_write = os.pipe2(os.O_CLOEXEC)
    up_read, up_write = os.pipe2(os.O_CLOEXEC)
    down_read, down_write = os.pipe2(os.O_CLOEXEC)
    try:
        workdir = _init_steps(config, made_pid_namespace=not prepared.pidns)
    except LayerError as error:
        _fail(report, error)
    tool_pid = os.fork()
    if tool_pid:
        _send_workdir(report, workdir)
        os.close(up_write)
        os.close(down_read)
        os.close(source)  # the payload is the tool's alone
        os.close(started_write)  # or it would never see the end of a tool that died
        init.serve(
            tool_pid,
            listener_pipes=(up_read, down_write),
            started=started_read,
            wall_seconds=config.limits.wall_seconds,
            report=report,
        )

    # Pid 2: the tool.
    os.close(workdir)
    channel = (source, started_write, report)
    try:
        _tool_steps(config, listener_pipes=(up_write, down_read), keep=channel)
    except LayerError as error:
        _fail(report, error)
    return channel


def _launcher_as_root(config: JailConfig, report: int, prepared: Prepared) -> None:
    """Root mode, in the launcher (or the zygote's child): the checklist of its steps.

    As real root, outside any namespace, the run's root is built; then the
    drop to the jail uid, which owns the namespaces. As pid 1 already, its
    /proc is mounted now, while real root. Only root mode shares a zygote's
    network namespace and root (a zygote that is not root cannot build them).
    """
    _apply("privileges", privileges.own_session)
    _apply(
        "mountns",
        mountns.build_root,
        **_root_of(config),
        template_ready=prepared.root,
        as_real_root=True,
        own_proc=prepared.pidns,
    )
    _apply("privileges", privileges.drop_to_unprivileged, uid=config.uid, gid=config.gid)
    _apply("userns", userns.enter, uid=config.uid, gid=config.gid)
    if not prepared.pidns:
        _apply("pidns", pidns.unshare)
    _unshare_netns(config, report, slot_netns_shared=prepared.netns)
    if "ipcns" in config.layers:
        _apply("ipcns", ipcns.unshare)
    if "utsns" in config.layers:
        _apply("utsns", utsns.unshare)
    _apply("mountns", mountns.unshare)


def _launcher_unprivileged(config: JailConfig, report: int, prepared: Prepared) -> None:
    """Unprivileged mode (no root, no capability), in the launcher: the checklist of its steps.

    The user namespace first, the jail uid inside mapped to the service's
    uid outside; its capabilities build everything else, mounts last.
    """
    _apply("privileges", privileges.own_session)
    if prepared.pidns:
        # Only root's /proc of the new namespace is mounted before the drop.
        raise LayerError("pidns", "a pid namespace made ahead needs a jail run as root")
    _apply("privileges", privileges.check_unprivileged_launcher)
    _apply(
        "userns",
        userns.enter,
        uid=config.uid,
        gid=config.gid,
        outside_uid=os.geteuid(),
        outside_gid=os.getegid(),
    )
    _apply("pidns", pidns.unshare)
    _unshare_netns(config, report, slot_netns_shared=False)
    if "ipcns" in config.layers:
        _apply("ipcns", ipcns.unshare)
    if "utsns" in config.layers:
        _apply("utsns", utsns.unshare)
    _apply(
        "mountns",
        mountns.build_root,
        **_root_of(config),
        template_ready=False,
        as_real_root=False,
    )


def _unshare_netns(config: JailConfig, report: int, *, slot_netns_shared: bool) -> None:
    """The run's network namespace: its own with an egress listener, the slot's, or a new one.

    In the user namespace, as the jail uid: the namespace is owned by it.
    """
    if config.egress_port:
        # A namespace of this run's alone, whatever the layers or the
        # zygote prepared: its loopback carries the proxy's listener.
        _apply("netns", netns.unshare)
        _apply("netns", netns.pass_listener, report=report, port=config.egress_port)
    elif "netns" in config.layers and not config.network and not slot_netns_shared:
        _apply("netns", netns.unshare)


def _root_of(config: JailConfig) -> dict[str, object]:
    """What :func:`mountns.build_root` builds the run's root from, by its parameter names."""
    return {
        "root": config.root_dir,
        "read_paths": config.read_paths,
        "extra_read_paths": config.extra_read_paths,
        "hidden_paths": config.hidden_paths,
        "tmp_bytes": config.limits.tmp_bytes,
        "owner": (config.uid, config.gid),
        "exec_written": config.exec_written,
    }


def _init_steps(config: JailConfig, *, made_pid_namespace: bool) -> int:
    """In init, pid 1, before it forks the tool: the checklist of its steps.

    Returns a descriptor of the run's working dir, opened before the tool
    exists, so it is the run's own tmpfs whatever the tool does later: the
    service collects out/ through it.
    """
    # Python's SIGINT handler would let the tool interrupt it; as pid 1 with
    # the default action, the kernel drops a signal sent from inside the namespace.
    signal(SIGINT, SIG_DFL)
    if made_pid_namespace:
        _die_with_parent(0)  # the namespace's parent is outside it
        # The tool stays in init's group: it may leave it (setsid), and the
        # seccomp layer refuses what would name that group from inside.
        _apply("privileges", privileges.own_session)
        _apply("mountns", mountns.mount_proc)
    if "utsns" in config.layers:
        _apply("utsns", utsns.set_hostname, name=config.hostname)
    _apply("privileges", privileges.set_non_dumpable)
    _apply("privileges", privileges.drop_capabilities)
    return _apply("mountns", os.open, WORKDIR_IN_JAIL, _WORKDIR_FLAGS)  # type: ignore[return-value]


def _tool_steps(
    config: JailConfig, *, listener_pipes: tuple[int, int], keep: tuple[int, int, int]
) -> None:
    """In the tool, pid 2, before its request: the checklist of its steps (seccomp last).

    `listener_pipes`: the tool's ends of the pipes it hands init its seccomp
    listener through; `keep`: the descriptors :func:`receive` needs.
    """
    signal(SIGINT, default_int_handler)  # as in any Python (an exec resets it to the default)
    _die_with_parent(1)
    # Dumpable again (as after an exec) so init, with no more capabilities
    # than the tool, may take the seccomp listener with pidfd_getfd.
    _apply("privileges", privileges.set_dumpable)
    if "rlimits" in config.layers:
        # The file size limit once the run's files are written (receive).
        _apply("rlimits", limits.apply, config.limits, file_size=False)
    _apply("no_new_privs", privileges.set_no_new_privs)
    if "landlock" in config.layers and config.landlock_abi:
        _apply(
            "landlock",
            landlock.restrict,
            abi=config.landlock_abi,
            read_paths=config.read_paths,
            write_paths=[WORKDIR_IN_JAIL, "/tmp"],
            device_paths=list(mountns.DEVICES),
            network=config.network,
            connect_port=config.egress_port,
            exec_written=config.exec_written,
        )
    _apply("privileges", privileges.check_no_capabilities)
    if "seccomp" in config.layers:
        listener = _apply(
            "seccomp", seccomp.load, bpf=config.seccomp_bpf, notify=config.seccomp_notify
        )
        if listener is not None:
            _hand_listener_to_init(listener, listener_pipes)  # type: ignore[arg-type]
    _apply("privileges", fds.close_inherited, keep=keep)


def _hand_listener_to_init(listener: int, listener_pipes: tuple[int, int]) -> None:
    """Init takes a copy (pidfd_getfd); the tool must not keep one, or it could answer
    its own refused syscalls."""
    up_write, down_read = listener_pipes
    os.write(up_write, f"{listener}\n".encode())
    if os.read(down_read, 1) != b"k":
        raise LayerError("seccomp", "init did not take the notification listener")
    os.close(listener)


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
