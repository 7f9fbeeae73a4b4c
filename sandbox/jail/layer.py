"""Layer names and the error a layer raises when it cannot be applied."""

from __future__ import annotations

LAYERS: tuple[str, ...] = (
    "userns",
    "pidns",
    "netns",
    "mountns",
    "ipcns",
    "utsns",
    "landlock",
    "seccomp",
    "rlimits",
    "cgroup",
    "no_new_privs",
    "privileges",
)


class LayerError(Exception):
    """A layer could not be applied: the run must not go on (fail closed)."""

    def __init__(self, layer: str, reason: str) -> None:
        super().__init__(f"{layer}: {reason}")
        self.layer = layer
        self.reason = reason
