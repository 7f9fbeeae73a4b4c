"""What the runner shows of itself on ``/health``: every layer, the warm path, the proxy.

Typed here; :meth:`IsolationReport.to_json` is the only place that gives it
the shape ``/health`` serves (``{layer: {"active", "reason"?, ...}, "warm_path":
..., "limit_scope": ..., "egress_proxy": ..., "denials_observable": ...}``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sandbox.host.layer_status import LayerStatus
from sandbox.host.slots import Slot

WarmPathState = Literal["ready", "degraded_cold_fallback", "cold_fallback"]


@dataclass(frozen=True)
class SeccompDetails:
    """The filter a run gets, in instructions, and whether its refusals are counted."""

    filter_size: int
    allowlist_size: int
    refusals_counted: bool


@dataclass(frozen=True)
class LockPinState:
    """Host inodes a run reaches, pinned with shared locks (see :mod:`sandbox.host.lock_pins`)."""

    pinned: list[str]
    failed: dict[str, str]


@dataclass(frozen=True)
class WarmPath:
    """The slots' zygotes and the jails built ahead of their runs."""

    state: WarmPathState
    zygotes_ready: int
    slots: int
    restarts: int
    recycle_after_runs: int
    jails_built_ahead: int
    runs_on_jails_built_ahead: int
    warm_runs_started_cold: int
    """Warm runs whose tool's locale needed a fresh interpreter (warm_prepare.prepare)."""
    preloaded_modules: list[str]
    package_env_zygotes: dict[str, int]
    """Per package environment, the slots where a run of it started its zygote."""


@dataclass
class RunCounters:
    """What the runner counts of its runs for ``/health``."""

    on_spares: int = 0
    """Runs that found their jail built ahead."""
    warm_started_cold: int = 0


def warm_path(
    slots: Sequence[Slot],
    counters: RunCounters,
    *,
    restarts: int,
    recycle_after_runs: int,
    preloaded_modules: Sequence[str],
) -> WarmPath:
    """The warm path's state now: zygotes up, jails built ahead, what the runs used."""
    ready = sum(1 for slot in slots if slot.zygote is not None and slot.zygote.alive())
    envs = sorted({env for slot in slots for env in slot.env_zygotes})
    return WarmPath(
        state=_warm_path_state(ready, len(slots)),
        zygotes_ready=ready,
        slots=len(slots),
        restarts=restarts,
        recycle_after_runs=recycle_after_runs,
        jails_built_ahead=sum(1 for slot in slots if slot.spare is not None),
        runs_on_jails_built_ahead=counters.on_spares,
        warm_runs_started_cold=counters.warm_started_cold,
        preloaded_modules=list(preloaded_modules),
        package_env_zygotes={
            env: sum(1 for slot in slots if slot.env_zygote_alive(env)) for env in envs
        },
    )


def _warm_path_state(zygotes_ready: int, slots: int) -> WarmPathState:
    """``ready``: every slot has its zygote; else runs of the others start cold."""
    if zygotes_ready and zygotes_ready == slots:
        return "ready"
    return "degraded_cold_fallback" if zygotes_ready else "cold_fallback"


@dataclass(frozen=True)
class LimitScope:
    """What each limit bounds here: the whole ``run`` (a cgroup), or each ``process``."""

    wall_seconds: str
    cpu_seconds: str
    memory_bytes: str
    processes: str


def limit_scope(controllers: Collection[str]) -> LimitScope:
    """The scope of each limit with these cgroup controllers (none: no cgroup layer)."""

    def scope(controller: str, fallback: str) -> str:
        return "run" if controller in controllers or "v2" in controllers else fallback

    return LimitScope(
        wall_seconds="run",
        cpu_seconds=scope("cpuacct", "process"),
        memory_bytes=scope("memory", "process"),
        processes=scope("pids", "user_namespace"),
    )


@dataclass(frozen=True)
class EgressProxyState:
    """Whether networked runs can reach the egress proxy (else why not), and its load."""

    problem: str | None
    stats: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        reason = {"reason": self.problem} if self.problem is not None else {}
        return {"available": self.problem is None, **reason, **self.stats}


@dataclass(frozen=True)
class DenialVisibility:
    """Whether a result's ``denials`` can name a kind of refusal here, and how (or why not)."""

    observed: bool
    how: str


def observable_denials(notify: bool) -> dict[str, DenialVisibility]:
    """Which kinds of refusal a result's ``denials`` can name on this host, and why not."""
    seccomp = (
        "each refused syscall, with its decisive arguments, from the jail's init"
        " (seccomp user notification)"
        if notify
        else "no seccomp user notification here: refused syscalls answer EPERM unseen"
    )
    return {
        "seccomp": DenialVisibility(notify, seccomp),
        "limit": DenialVisibility(
            True,
            "the limit that stopped the run, seen by the service (memory and"
            " processes only through the run's cgroup; see limit_scope)",
        ),
        "landlock": DenialVisibility(
            False,
            "the kernel answers EACCES inside the syscall; its audit records"
            " (Landlock ABI 7) are not read, so nothing is reported rather than guessed",
        ),
        "mount": DenialVisibility(
            False,
            "a write to a read-only mount (EROFS) or an exec from a noexec one"
            " (EACCES) is answered inside the syscall, where no supervisor sees it",
        ),
    }


@dataclass(frozen=True)
class IsolationReport:
    """The runner's isolation as ``/health`` shows it (see :meth:`to_json`)."""

    layers: list[tuple[str, LayerStatus]]
    seccomp: SeccompDetails
    landlock_abi: int
    lock_pins: LockPinState
    warm_path: WarmPath
    limit_scope: LimitScope
    egress_proxy: EgressProxyState
    denials_observable: dict[str, DenialVisibility]

    def to_json(self) -> dict[str, Any]:
        """Layer -> {"active", "reason"?, ...} (with each layer's details), then the rest."""
        shown: dict[str, Any] = {name: status.to_json() for name, status in self.layers}
        shown["seccomp"].update(asdict(self.seccomp))
        shown["landlock"]["abi"] = self.landlock_abi
        shown["mountns"]["lock_pins"] = asdict(self.lock_pins)
        shown["warm_path"] = asdict(self.warm_path)
        shown["limit_scope"] = asdict(self.limit_scope)
        shown["egress_proxy"] = self.egress_proxy.to_json()
        shown["denials_observable"] = {
            kind: asdict(visibility) for kind, visibility in self.denials_observable.items()
        }
        return shown
