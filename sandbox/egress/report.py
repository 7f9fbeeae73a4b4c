"""What the proxy decided for a run, and the run's traffic: for its result and the audit log."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

Outcome = Literal["allowed", "refused", "failed"]
"""``refused``: the policy or the proxy's limits said no; ``failed``: allowed, but
the network did not answer (no address, connection refused, timeout)."""

Reason = Literal[
    "allowed",
    # the run's rules
    "denied",
    "host_not_allowed",
    "port_not_allowed",
    "private_address",
    "invalid_target",
    # the run's limits
    "connection_limit",
    "transfer_limit",
    # the client's request
    "bad_request",
    "unsupported_request",
    "headers_too_large",
    "header_timeout",
    # the network
    "dns_failure",
    "connect_failed",
    "connect_timeout",
    "upstream_error",
]

REFUSAL_STATUS: dict[str, int] = {
    "denied": 403,
    "host_not_allowed": 403,
    "port_not_allowed": 403,
    "private_address": 403,
    "invalid_target": 403,
    "connection_limit": 403,
    "transfer_limit": 403,
    "bad_request": 400,
    "unsupported_request": 400,
    "headers_too_large": 431,
    "header_timeout": 408,
    "dns_failure": 502,
    "connect_failed": 502,
    "connect_timeout": 504,
    "upstream_error": 502,
}
"""The HTTP status a client gets for each reason: 403 for every policy refusal."""


class DestinationCheck(BaseModel):
    """One request's destination and what the proxy's check of it found.

    The fields a decision and a run's network denial share (the denial is
    :class:`sandbox.spec.NetworkDenial`, the result's wire form).
    """

    reason: str
    """Why: ``allowed``, ``denied``, ``host_not_allowed``, ``private_address``..."""
    method: str | None
    host: str | None
    port: int | None
    rule: str | None
    """The allow or deny rule that decided, as written in the policy (None: no rule matched)."""
    address: str | None
    """The address checked and connected to (or the one refused)."""
    detail: str
    """One line for a person."""


_CHECK_FIELDS = frozenset(DestinationCheck.model_fields)


class EgressDecision(DestinationCheck):
    """One request (a CONNECT, or a plain-HTTP request) and what the proxy did with it."""

    model_config = ConfigDict(frozen=True)

    reason: Reason
    time: str
    request_id: str
    tool: str
    policy_version: str
    outcome: Outcome

    def denial(self) -> dict[str, Any]:
        """The entry of the run's ``denials`` (layer ``network``)."""
        return {"layer": "network", **self.model_dump(include=_CHECK_FIELDS)}

    def audit_record(self) -> dict[str, Any]:
        """One line of the audit log (``kind: "egress"``), keyed by the run's request id."""
        # Who and when first, then where to and why: a log line reads left to right.
        return {
            "kind": "egress",
            **self.model_dump(exclude=_CHECK_FIELDS),
            **self.model_dump(include=_CHECK_FIELDS),
        }


@dataclass
class EgressReport:
    """A run's traffic through the proxy, as it stands (final once the session is closed)."""

    connections: int = 0
    """Connections the run opened to the proxy."""
    upstream_connections: int = 0
    """Connections the proxy opened on the run's behalf."""
    bytes_out: int = 0
    """Bytes sent upstream (request heads and bodies, tunnelled data)."""
    bytes_in: int = 0
    """Bytes received from upstream."""
    decisions: list[EgressDecision] = field(default_factory=list)
    decisions_dropped: int = 0
    """Decisions past the per-run cap: counted, not kept."""

    @property
    def denials(self) -> list[dict[str, Any]]:
        """Every refusal, as the run's ``denials`` list them."""
        return [d.denial() for d in self.decisions if d.outcome == "refused"]

    def summary(self) -> dict[str, Any]:
        """The run result's ``network`` block (counts; denials are listed apart)."""
        return {
            "connections": self.connections,
            "upstream_connections": self.upstream_connections,
            "bytes_out": self.bytes_out,
            "bytes_in": self.bytes_in,
            "allowed": sum(1 for d in self.decisions if d.outcome == "allowed"),
            "refused": sum(1 for d in self.decisions if d.outcome == "refused"),
            "failed": sum(1 for d in self.decisions if d.outcome == "failed"),
            "decisions_dropped": self.decisions_dropped,
        }
