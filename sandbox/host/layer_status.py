"""Each isolation layer's standing on this host: active only once a probe showed it.

The probe (:mod:`sandbox.host.probe`) sets it; the Runner refuses runs whose
required layers are not active (:func:`check_runnable`); ``/health`` shows it
(:mod:`sandbox.host.health`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sandbox.host.unavailable import RunnerUnavailable
from sandbox.jail.config import OPTIONAL_LAYERS
from sandbox.jail.layer import LAYERS
from sandbox.spec import RunSpec

STRUCTURAL_LAYERS = frozenset(LAYERS) - OPTIONAL_LAYERS
"""Without any of these no jail can be built here (the rest a policy may go without)."""


@dataclass(frozen=True)
class LayerStatus:
    """One layer's standing: active only when a probe showed it, else the reason why not."""

    active: bool
    reason: str | None = None
    launcher: str | None = None
    """The privileges layer: how jails are built (see :func:`~sandbox.host.probe.launcher_mode`)."""
    host_inodes: tuple[str, ...] | None = None
    """The mountns layer: the jail's files that are the host's own inodes."""

    def to_json(self) -> dict[str, Any]:
        """As ``/health`` shows it: ``{"active", "reason"?, ...}``."""
        shown: dict[str, Any] = {"active": self.active}
        if self.reason is not None:
            shown["reason"] = self.reason
        if self.launcher is not None:
            shown["launcher"] = self.launcher
        if self.host_inodes is not None:
            shown["host_inodes"] = list(self.host_inodes)
        return shown


def inactive(reason: str) -> LayerStatus:
    """A layer not shown active, and why."""
    return LayerStatus(active=False, reason=reason)


class LayerTable:
    """Every layer's :class:`LayerStatus` on this host (none active until a probe shows it)."""

    def __init__(self) -> None:
        self._status = {name: inactive("not probed yet") for name in LAYERS}

    def __getitem__(self, name: str) -> LayerStatus:
        return self._status[name]

    def __setitem__(self, name: str, status: LayerStatus) -> None:
        self._status[name] = status

    def items(self) -> list[tuple[str, LayerStatus]]:
        """Each layer and its status, in :data:`~sandbox.jail.layer.LAYERS` order."""
        return list(self._status.items())

    def missing(self, required: Iterable[str]) -> list[str]:
        """The required layers (unknown names included) that are not active here."""
        return sorted(
            name
            for name in set(required)
            if name not in self._status or not self._status[name].active
        )

    def active_optional(self) -> list[str]:
        """The optional layers a run gets here (those shown active)."""
        return [name for name in OPTIONAL_LAYERS if self._status[name].active]

    def set_all(self, status: LayerStatus) -> None:
        """Every layer: `status` (a probe proved nothing)."""
        for name in self._status:
            self._status[name] = status


def check_runnable(spec: RunSpec, layers: LayerTable, egress_problem: str | None) -> None:
    """Fail closed: raise unless every layer `spec` requires, and the jail's structure, is
    shown active here (`egress_problem`: why a networked run cannot reach its proxy)."""
    missing = layers.missing(spec.required_layers)
    if missing:
        raise RunnerUnavailable(
            f"required isolation layers unavailable: {', '.join(missing)}", layer=missing[0]
        )
    structural = layers.missing(STRUCTURAL_LAYERS)
    if structural:
        raise RunnerUnavailable(
            f"the jail cannot be built here: {', '.join(structural)} unavailable",
            layer=structural[0],
        )
    if spec.egress is not None and egress_problem is not None:
        raise RunnerUnavailable(f"egress: {egress_problem}", layer="netns")
    if spec.network and "netns" in spec.required_layers:
        raise RunnerUnavailable(
            f"tool {spec.tool!r} has network access, so it cannot run in its own"
            " network namespace (netns), which the policy requires",
            layer="netns",
        )
