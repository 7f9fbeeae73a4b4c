"""What the jail needs for one run, as plain data the launcher can unmarshal.

A run arrives in two frames on the launcher's config fd. First the
:class:`JailConfig`: everything the jail is built from (paths, limits,
filter, layers), the same for every run of a tool under one policy. Then
the :class:`RunPayload`: what this one request brings (command, code,
files). The jail is complete before the payload is read, so a
run slot can hold a fully jailed process ready for its next request (see
:mod:`sandbox.host.runner`), and a payload can never influence how the jail is
built. Frames are marshal data (:func:`marshal.loads` is a builtin, unlike
json, which costs ~5 ms to import per launcher start) behind a 4-byte length. The
direction is trusted: only the Runner writes them. The framing is in
:mod:`sandbox.jail.protocol`.

The classes are plain slotted classes with typed, keyword-only
constructors rather than dataclasses: each launcher started per run imports it
on every run, and ``dataclasses`` (with ``inspect`` and ``typing``) would
cost it more than all the layers together.
"""

from __future__ import annotations

import marshal


class _Frame:
    """A value carried as one marshal frame: a dict of its slots (:attr:`__slots__`)."""

    __slots__ = ()

    def _values(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self._values().items())
        return f"{type(self).__name__}({fields})"


def _pick(values: object, fields: tuple[str, ...]) -> dict[str, object]:
    """`fields` of the unmarshalled `values` (KeyError if one is missing; others ignored)."""
    if not isinstance(values, dict):
        raise ValueError("a jail frame and its limits must be dicts")
    return {name: values[name] for name in fields}


class JailLimits(_Frame):
    """The limits the jail applies itself (the service's cgroup holds memory and pids too)."""

    __slots__ = (
        "wall_seconds",
        "cpu_seconds",
        "memory_bytes",
        "file_size_bytes",
        "open_files",
        "processes",
        "stack_bytes",
        "tmp_bytes",
    )
    wall_seconds: float
    """From the tool's payload on; init kills the run at it."""
    cpu_seconds: int
    """RLIMIT_CPU (SIGXCPU, then SIGKILL a second later)."""
    memory_bytes: int
    """RLIMIT_AS."""
    file_size_bytes: int
    """RLIMIT_FSIZE, once the run's input files are written."""
    open_files: int
    """RLIMIT_NOFILE."""
    processes: int
    """RLIMIT_NPROC."""
    stack_bytes: int
    """RLIMIT_STACK."""
    tmp_bytes: int
    """The size of each of the jail's tmpfs mounts, /tmp and /workdir."""

    def __init__(
        self,
        *,
        wall_seconds: float,
        cpu_seconds: int,
        memory_bytes: int,
        file_size_bytes: int,
        open_files: int,
        processes: int,
        stack_bytes: int,
        tmp_bytes: int,
    ) -> None:
        self.wall_seconds = wall_seconds
        self.cpu_seconds = cpu_seconds
        self.memory_bytes = memory_bytes
        self.file_size_bytes = file_size_bytes
        self.open_files = open_files
        self.processes = processes
        self.stack_bytes = stack_bytes
        self.tmp_bytes = tmp_bytes


class JailConfig(_Frame):
    """The jail's input for one run: all a jail is built from, before any request."""

    __slots__ = (
        "env",
        "uid",
        "gid",
        "root_dir",
        "read_paths",
        "extra_read_paths",
        "hidden_paths",
        "limits",
        "network",
        "egress_port",
        "seccomp_bpf",
        "seccomp_notify",
        "landlock_abi",
        "exec_written",
        "hostname",
        "layers",
    )
    env: dict[str, str]
    """The whole environment of the tool (the policy's, per tool)."""
    uid: int
    """Unprivileged uid outside and inside the user namespace."""
    gid: int
    root_dir: str
    """Empty dir to mount the jail's root on (private to the run's ns), relative to the
    jail's working dir at its start: no host path of the service's state."""
    read_paths: list[str]
    """Host paths visible read-only (and executable) in the jail."""
    extra_read_paths: list[str]
    """Those of read_paths a slot's shared root lacks."""
    hidden_paths: list[str]
    """Paths under read_paths replaced by an empty dir."""
    limits: JailLimits
    network: bool
    """Keep the host network (no netns, inet sockets allowed)."""
    egress_port: int
    """0, or the port of the proxy listener the jail makes in a fresh netns of its own
    and passes to the service (TCP connect to it alone)."""
    seccomp_bpf: bytes
    """The compiled filter (struct sock_filter array)."""
    seccomp_notify: bool
    """The filter answers refusals through a listener."""
    landlock_abi: int
    """ABI to use (0 = do not use Landlock)."""
    exec_written: bool
    """Files the run writes may be executed (no noexec, Landlock EXECUTE)."""
    hostname: str
    layers: list[str]
    """The optional layers to apply (see :data:`OPTIONAL_LAYERS`)."""

    def __init__(
        self,
        *,
        env: dict[str, str],
        uid: int,
        gid: int,
        root_dir: str,
        read_paths: list[str],
        extra_read_paths: list[str],
        hidden_paths: list[str],
        limits: JailLimits,
        network: bool,
        egress_port: int,
        seccomp_bpf: bytes,
        seccomp_notify: bool,
        landlock_abi: int,
        exec_written: bool,
        hostname: str,
        layers: list[str],
    ) -> None:
        self.env = env
        self.uid = uid
        self.gid = gid
        self.root_dir = root_dir
        self.read_paths = read_paths
        self.extra_read_paths = extra_read_paths
        self.hidden_paths = hidden_paths
        self.limits = limits
        self.network = network
        self.egress_port = egress_port
        self.seccomp_bpf = seccomp_bpf
        self.seccomp_notify = seccomp_notify
        self.landlock_abi = landlock_abi
        self.exec_written = exec_written
        self.hostname = hostname
        self.layers = layers

    def to_bytes(self) -> bytes:
        """Serialise for the launcher."""
        values = self._values()
        values["limits"] = self.limits._values()
        return marshal.dumps(values)

    @classmethod
    def from_bytes(cls, data: bytes) -> JailConfig:
        """Read back what :meth:`to_bytes` wrote."""
        values = _pick(marshal.loads(data), cls.__slots__)
        values["limits"] = JailLimits(**_pick(values["limits"], JailLimits.__slots__))
        return cls(**values)  # type: ignore[arg-type]


OPTIONAL_LAYERS: frozenset[str] = frozenset(
    {"cgroup", "netns", "ipcns", "utsns", "landlock", "seccomp", "rlimits"}
)
"""Layers a run may go without when the host lacks them and the policy does not
require them. The others (privileges, no_new_privs, userns, pidns, mountns)
carry the jail's structure: without one of them nothing runs."""


class RunPayload(_Frame):
    """What one request brings to a jail already built."""

    __slots__ = ("argv", "files", "python")
    argv: list[str]
    """The tool command."""
    files: dict[str, bytes]
    """Written into /workdir before the tool gets its command."""
    python: dict[str, object] | None
    """The Python code to run warm, in the jail's interpreter, instead of exec (see
    :func:`~sandbox.jail.warm_command.parse_python_argv`), or None."""

    def __init__(
        self, *, argv: list[str], files: dict[str, bytes], python: dict[str, object] | None
    ) -> None:
        self.argv = argv
        self.files = files
        self.python = python

    def to_bytes(self) -> bytes:
        """Serialise for the jail's tool."""
        return marshal.dumps(self._values())

    @classmethod
    def from_bytes(cls, data: bytes) -> RunPayload:
        """Read back what :meth:`to_bytes` wrote."""
        return cls(**_pick(marshal.loads(data), cls.__slots__))  # type: ignore[arg-type]


WORKDIR_IN_JAIL = "/workdir"
"""Where the run's working dir appears inside the jail."""
