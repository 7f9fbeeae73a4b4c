"""What one run may reach through the egress proxy: its rules, private networks and limits.

Built once per policy version from a tool's ``[tools.NAME.network]`` table
(:meth:`sandbox.policy.PolicySnapshot.egress_of`) and handed to the proxy
when a run starts, so a run keeps the rules of the version it started
with whatever edit lands meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sandbox.egress.addresses import IPNetwork
from sandbox.egress.rules import RuleSet

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

# Policy keys: (default, floor, hard ceiling). No policy can pass a ceiling.
MAX_CONNECTIONS = (16, 1, 128)
"""Connections a run may hold open through the proxy at once."""
MAX_TRANSFER_BYTES = (64 * MIB, 1 * KIB, 1 * GIB)
"""Bytes a run may move through the proxy, out and in together."""
CONNECT_TIMEOUT_SECONDS = (10.0, 0.1, 30.0)
"""Resolving a name and connecting to it, per request."""
IDLE_TIMEOUT_SECONDS = (30.0, 0.1, 60.0)
"""A connection with no byte either way for this long is closed."""

# Not policy keys: what any client of the proxy is held to.
HEADER_TIMEOUT_SECONDS = 10.0
"""A request's head must arrive whole within this (slow-header clients are cut)."""
MAX_HEADER_BYTES = 32 * KIB
"""The largest request or response head."""
MAX_HEADER_COUNT = 100
"""The most header fields in one request."""
MAX_RECORDED_DECISIONS = 256
"""Decisions kept per run for its report and the audit log; later ones are counted only."""
READ_CHUNK = 64 * KIB
"""The most the proxy reads from one socket at once (and its stream buffers' limit)."""


@dataclass(frozen=True)
class EgressLimits:
    """The limits of one run's traffic through the proxy."""

    max_connections: int = MAX_CONNECTIONS[0]
    max_transfer_bytes: int = MAX_TRANSFER_BYTES[0]
    connect_timeout_seconds: float = CONNECT_TIMEOUT_SECONDS[0]
    idle_timeout_seconds: float = IDLE_TIMEOUT_SECONDS[0]
    header_timeout_seconds: float = HEADER_TIMEOUT_SECONDS
    max_header_bytes: int = MAX_HEADER_BYTES
    max_header_count: int = MAX_HEADER_COUNT


@dataclass(frozen=True)
class EgressPolicy:
    """Everything the proxy checks for one run."""

    rules: RuleSet
    allow_private: tuple[IPNetwork, ...] = ()
    limits: EgressLimits = field(default_factory=EgressLimits)
