"""What the jail needs for one run, as plain data the launcher can unmarshal.

A run arrives in two frames on the launcher's config fd. First the
:class:`JailConfig`: everything the jail is built from (paths, limits,
filter, layers), the same for every run of a tool under one policy. Then
the :class:`RunPayload`: what this one request brings (command, code,
files). The jail is complete before the payload is read, so a
run slot can hold a fully jailed process ready for its next request (see
:mod:`sandbox.host.runner`), and a payload can never influence how the jail is
built. Frames are marshal data (:func:`marshal.loads` is a builtin, unlike
json, which costs ~5 ms to import per cold run) behind a 4-byte length. The
direction is trusted: only the Runner writes them. The framing is in
:mod:`sandbox.jail.protocol`.
"""

from __future__ import annotations

import marshal

_FIELDS: tuple[str, ...] = (
    "env",  # dict[str, str]: the whole environment of the tool (the policy's, per tool)
    "uid",  # int: unprivileged uid outside and inside the user namespace
    "gid",  # int
    "root_dir",  # str: empty dir to mount the jail's root on (private to the run's ns),
    # relative to the jail's working dir at its start: no host path of the service's state
    "read_paths",  # list[str]: host paths visible read-only (and executable) in the jail
    "extra_read_paths",  # list[str]: those of read_paths a slot's shared root lacks
    "hidden_paths",  # list[str]: paths under read_paths replaced by an empty dir
    "limits",  # dict[str, int | float]
    "network",  # bool: keep the host network (no netns, inet sockets allowed)
    "egress_port",  # int: 0, or the port of the proxy listener the jail makes in a fresh
    # netns of its own and passes to the service (TCP connect to it alone)
    "seccomp_bpf",  # bytes: the compiled filter (struct sock_filter array)
    "seccomp_notify",  # bool: the filter answers refusals through a listener
    "landlock_abi",  # int: ABI to use (0 = do not use Landlock)
    "exec_written",  # bool: files the run writes may be executed (no noexec, Landlock EXECUTE)
    "hostname",  # str
    "layers",  # list[str]: the optional layers to apply (see OPTIONAL_LAYERS)
)

OPTIONAL_LAYERS: frozenset[str] = frozenset(
    {"cgroup", "netns", "ipcns", "utsns", "landlock", "seccomp", "rlimits"}
)
"""Layers a run may go without when the host lacks them and the policy does not
require them. The others (privileges, no_new_privs, userns, pidns, mountns)
carry the jail's structure: without one of them nothing runs."""


_PAYLOAD_FIELDS: tuple[str, ...] = (
    "argv",  # list[str]: the tool command
    "files",  # dict[str, bytes]: written into /workdir before the tool gets its command
    "python",  # dict | None: run Python code in-process instead of exec
)


def _load(data: bytes, fields: tuple[str, ...]) -> dict[str, object]:
    values = marshal.loads(data)
    if not isinstance(values, dict):
        raise ValueError("a jail frame must be a dict")
    return {name: values[name] for name in fields}


class JailConfig:
    """The jail's input for one run (see the field comments above)."""

    __slots__ = _FIELDS

    def __init__(self, **values: object) -> None:
        for name in _FIELDS:
            setattr(self, name, values[name])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, JailConfig):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in _FIELDS)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def to_bytes(self) -> bytes:
        """Serialise for the launcher."""
        return marshal.dumps({name: getattr(self, name) for name in _FIELDS})

    @classmethod
    def from_bytes(cls, data: bytes) -> JailConfig:
        """Read back what :meth:`to_bytes` wrote."""
        return cls(**_load(data, _FIELDS))


class RunPayload:
    """What one request brings to a jail already built (see the field comments above)."""

    __slots__ = _PAYLOAD_FIELDS

    def __init__(self, **values: object) -> None:
        for name in _PAYLOAD_FIELDS:
            setattr(self, name, values[name])

    def to_bytes(self) -> bytes:
        """Serialise for the jail's tool."""
        return marshal.dumps({name: getattr(self, name) for name in _PAYLOAD_FIELDS})

    @classmethod
    def from_bytes(cls, data: bytes) -> RunPayload:
        """Read back what :meth:`to_bytes` wrote."""
        return cls(**_load(data, _PAYLOAD_FIELDS))


WORKDIR_IN_JAIL = "/workdir"
"""Where the run's working dir appears inside the jail."""
