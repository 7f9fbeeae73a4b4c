"""What the service asks the jail to run, and what a run produced.

These two types are the whole interface between the HTTP service (policy,
admission, audit) and the runner (jail, cold and warm paths).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, computed_field

from sandbox.egress.config import EgressPolicy
from sandbox.egress.report import DestinationCheck
from sandbox.files_out import OutputCollection

LimitName = Literal[
    "wall_time", "cpu_time", "memory", "file_size", "output", "processes", "open_files"
]


DenialLayer = Literal["seccomp", "landlock", "mount", "limit", "network"]


class Denial(BaseModel):
    """One kind of thing the jail refused a run, in words, with the policy key that governs it.

    Made by the service from what the jail's supervisor (outside the tool's
    reach) reported, never from the tool's output: a tool cannot add one.
    """

    model_config = ConfigDict(frozen=True)

    layer: DenialLayer = Field(description="The isolation layer that refused it.")
    what: str = Field(
        description="What was refused: a syscall with its decisive arguments"
        " (`socket(AF_INET, SOCK_STREAM)`), a path and access, or a limit and its value."
    )
    count: int = Field(ge=1, description="How many times, in this run.")
    hint: str = Field(
        description="Why, and the policy key that would allow it, or that nothing in the"
        " policy can."
    )


KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB


class LimitRange(NamedTuple):
    """One resource limit of a run: the only place its floor, default and ceiling are set."""

    floor: float
    """The least a run can start with; no policy may set less."""
    default: float
    """What a tool gets when the policy sets nothing (``[defaults]`` omitted)."""
    ceiling: float
    """A constant of the code: no policy may set more."""


LIMIT_RANGES: Mapping[str, LimitRange] = MappingProxyType(
    {
        "wall_seconds": LimitRange(0.1, 5.0, 60.0),
        "cpu_seconds": LimitRange(1, 5, 60),
        "memory_bytes": LimitRange(16 * MIB, 256 * MIB, 2 * GIB),
        "file_size_bytes": LimitRange(0, 16 * MIB, 256 * MIB),
        "open_files": LimitRange(8, 64, 1024),
        "processes": LimitRange(1, 16, 256),
        "output_bytes": LimitRange(1 * KIB, 64 * KIB, 8 * MIB),
        "stack_bytes": LimitRange(1 * MIB, 8 * MIB, 64 * MIB),
    }
)
"""Each field of :class:`RunLimits`, by name."""


def _limit(name: str) -> Any:
    bounds = LIMIT_RANGES[name]
    return Field(bounds.default, ge=bounds.floor, le=bounds.ceiling)


class RunLimits(BaseModel):
    """Resource limits of one run (already clamped to the policy's ceilings)."""

    model_config = ConfigDict(frozen=True)

    wall_seconds: float = _limit("wall_seconds")
    cpu_seconds: int = _limit("cpu_seconds")
    memory_bytes: int = _limit("memory_bytes")
    file_size_bytes: int = _limit("file_size_bytes")
    open_files: int = _limit("open_files")
    processes: int = _limit("processes")
    output_bytes: int = _limit("output_bytes")
    stack_bytes: int = _limit("stack_bytes")


class OutputCaps(BaseModel):
    """What of the files a tool leaves under ``out/`` is returned with content."""

    model_config = ConfigDict(frozen=True)

    files: int = Field(16, ge=0)
    bytes: int = Field(1024 * 1024, ge=0)


class RunSpec(BaseModel):
    """One tool run: the command, its input, its confinement."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    tool: str
    argv: tuple[str, ...]
    stdin: bytes = b""
    files: dict[str, bytes] = Field(default_factory=dict)
    """Files written into the fresh working dir before the run (e.g. the code)."""
    env: dict[str, str] = Field(default_factory=dict)
    limits: RunLimits = Field(default_factory=RunLimits)
    network: bool = False
    """The host's whole network (``network = true``)."""
    egress: EgressPolicy | None = None
    """What the run may reach through the egress proxy (its own empty network
    namespace, the proxy's listener on its loopback); None: no proxy."""
    request_id: str = ""
    """The request the run serves: the egress proxy's decisions carry it."""
    readable_paths: tuple[str, ...] = ()
    """Extra paths the tool may read/execute (Landlock); the workdir is always writable."""
    denied_syscalls: tuple[str, ...] = ()
    """Syscalls refused on top of the always-refused set."""
    required_layers: frozenset[str] = frozenset()
    warm: bool = False
    """Run on the warm (pre-forked) path when one is available."""
    package_env: str | None = None
    """A package environment's directory: read-only at its own path in the jail, and the
    warm path's interpreter is its ``bin/python`` (``argv[0]``), with `preload` imported."""
    preload: tuple[str, ...] = ()
    outputs: OutputCaps | None = None
    """Collect what the tool leaves under ``out/``, within these caps (None: nothing)."""
    policy_version: str = ""
    explain_denials: bool = True
    """Append one ``pagi-sandbox: refused ...`` line per denial to the run's stderr."""
    allow_exec_written: bool = False
    """Files the run writes may be executed, mapped executable or loaded as libraries."""


class NetworkDenial(DestinationCheck):
    """One request the egress proxy refused (the ``network`` layer of the run's denials)."""

    layer: Literal["network"] = "network"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def what(self) -> str:
        """The refused destination, ``host:port`` (``[v6]:port``), as a denials list names it."""
        if self.host is None:
            return "(no target)"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.port is not None else host


class NetworkUsage(BaseModel):
    """A run's traffic through the egress proxy, and what it refused."""

    connections: int
    """Connections the run opened to the proxy."""
    upstream_connections: int
    """Connections the proxy opened on the run's behalf."""
    bytes_out: int
    bytes_in: int
    allowed: int
    refused: int
    failed: int
    """Requests allowed whose destination did not answer (no address, refused, timeout)."""
    decisions_dropped: int = 0
    """Decisions past the per-run record cap: counted, not listed."""
    denials: list[NetworkDenial] = Field(default_factory=list)


class RunResult(BaseModel):
    """What one run produced."""

    stdout: str
    stderr: str
    exit_code: int | None
    """The tool's exit status; None when it was killed by a signal."""
    signal: int | None = None
    duration_ms: float
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    limit_hit: LimitName | None = None
    seccomp_refusals: int = 0
    seccomp_denials: dict[str, int] = Field(default_factory=dict)
    """The refusals by syscall name."""
    denials: list[Denial] = Field(default_factory=list)
    """What the jail refused, aggregated and bounded (see :mod:`sandbox.denials`)."""
    supervisor_died: bool = False
    """The jail's init ended before it reported the tool's status (the output is kept)."""
    path: Literal["cold", "warm"] = "cold"
    network: NetworkUsage | None = None
    """Traffic through the egress proxy (None: the run had no proxy)."""
    egress_audit: list[dict[str, Any]] = Field(default_factory=list)
    """The egress proxy's decisions, as audit records (for the audit log, not the client)."""
    files: OutputCollection | None = None
    """What the tool left under ``out/`` (None: nothing there, or nothing collected)."""
