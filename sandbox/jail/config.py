"""What the jail needs for one run, as plain data the launcher can unmarshal.

The Runner builds a :class:`JailConfig` from a ``RunSpec``; the launcher (cold
path) or a zygote child (warm path) reads it back with :func:`marshal.loads`
— a builtin, unlike json, which costs ~5 ms to import per cold run. The
direction is trusted: only the Runner writes it.
"""

from __future__ import annotations

import marshal

_FIELDS: tuple[str, ...] = (
    "argv",  # list[str]: the tool command
    "env",  # dict[str, str]: the whole environment of the tool
    "uid",  # int: unprivileged uid outside and inside the user namespace
    "gid",  # int
    "root_dir",  # str: empty host dir to mount the jail's root on (private to the run's ns)
    "files",  # dict[str, bytes]: written into the fresh /workdir tmpfs before the run
    "cgroup_dirs",  # list[str]: cgroup dirs to join (one per v1 controller, or one v2 dir)
    "read_paths",  # list[str]: host paths visible read-only (and executable) in the jail
    "extra_read_paths",  # list[str]: those of read_paths a slot's shared root lacks
    "hidden_paths",  # list[str]: paths under read_paths replaced by an empty dir
    "limits",  # dict[str, int | float]
    "network",  # bool: keep the host network (no netns, inet sockets allowed)
    "seccomp_bpf",  # bytes: the compiled filter (struct sock_filter array)
    "seccomp_notify",  # bool: the filter answers refusals through a listener
    "landlock_abi",  # int: ABI to use (0 = do not use Landlock)
    "hostname",  # str
    "python",  # dict | None: run Python code in-process instead of exec
    "layers",  # list[str]: the optional layers to apply (see OPTIONAL_LAYERS)
)

OPTIONAL_LAYERS: frozenset[str] = frozenset(
    {"cgroup", "netns", "ipcns", "utsns", "landlock", "seccomp", "rlimits"}
)
"""Layers a run may go without when the host lacks them and the policy does not
require them. The others (privileges, no_new_privs, userns, pidns, mountns)
carry the jail's structure: without one of them nothing runs."""


class JailConfig:
    """The jail's input for one run (see the field comments above)."""

    __slots__ = _FIELDS

    def __init__(self, **values: object) -> None:
        for name in _FIELDS:
            setattr(self, name, values[name])

    def to_bytes(self) -> bytes:
        """Serialise for the launcher."""
        return marshal.dumps({name: getattr(self, name) for name in _FIELDS})

    @classmethod
    def from_bytes(cls, data: bytes) -> JailConfig:
        """Read back what :meth:`to_bytes` wrote."""
        values = marshal.loads(data)
        if not isinstance(values, dict):
            raise ValueError("jail config must be a dict")
        return cls(**{name: values[name] for name in _FIELDS})


WORKDIR_IN_JAIL = "/workdir"
"""Where the run's working dir appears inside the jail."""
