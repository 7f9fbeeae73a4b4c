"""A run's ledger at the proxy: every decision (up to the cap) and every byte, against its cap.

The proxy's parts rule on requests (:class:`Ruling`); the ledger stamps each
ruling with the run's names into an :class:`~sandbox.egress.report.EgressDecision`,
keeps it in the run's :class:`~sandbox.egress.report.EgressReport` and hands
it to the service's sink. Bytes are counted here too, and the run's
connections are cut once it moves more than its transfer limit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from pagi.logging import log_event
from sandbox.egress.addresses import IPAddress
from sandbox.egress.config import MAX_RECORDED_DECISIONS
from sandbox.egress.report import EgressDecision, EgressReport, Outcome, Reason
from sandbox.egress.rules import Target

logger = logging.getLogger(__name__)

DecisionSink = Callable[[EgressDecision], None]


@dataclass(frozen=True)
class Ruling:
    """What the proxy ruled on one request, before the ledger stamps it with the run's names."""

    outcome: Outcome
    reason: Reason
    detail: str
    method: str | None = None
    target: Target | None = None
    rule: str | None = None
    address: IPAddress | None = None


@dataclass(frozen=True)
class RunLabels:
    """Whose traffic it is: the names every decision of the run carries."""

    request_id: str
    tool: str
    policy_version: str


class TransferLimit(Exception):
    """The run moved as many bytes as its policy allows."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Ledger:
    """One run's decisions and bytes through the proxy (its report), kept as they happen."""

    def __init__(
        self,
        labels: RunLabels,
        *,
        max_transfer_bytes: int,
        on_decision: DecisionSink | None,
        on_over_transfer: Callable[[], None],
    ) -> None:
        self.labels = labels
        self.max_transfer_bytes = max_transfer_bytes
        self.report = EgressReport()
        self.over_transfer = False
        """Whether the run has moved more than its transfer limit (it gets nothing more)."""
        self._on_decision = on_decision
        self._on_over_transfer = on_over_transfer

    def record(self, ruling: Ruling) -> None:
        """Keep ``ruling`` as one of the run's decisions (past the cap: count it) and emit it."""
        target = ruling.target
        decision = EgressDecision(
            time=_now(),
            request_id=self.labels.request_id,
            tool=self.labels.tool,
            policy_version=self.labels.policy_version,
            outcome=ruling.outcome,
            reason=ruling.reason,
            method=ruling.method,
            host=target.host if target else None,
            port=target.port if target else None,
            rule=ruling.rule,
            address=str(ruling.address) if ruling.address is not None else None,
            detail=ruling.detail,
        )
        if len(self.report.decisions) >= MAX_RECORDED_DECISIONS:
            self.report.decisions_dropped += 1
            return
        self.report.decisions.append(decision)
        self._emit(decision)

    def count(self, sent: int = 0, received: int = 0) -> None:
        """Add to the run's bytes; :class:`TransferLimit` once past its cap."""
        self.report.bytes_out += sent
        self.report.bytes_in += received
        if self.report.bytes_out + self.report.bytes_in > self.max_transfer_bytes:
            if not self.over_transfer:
                self.over_transfer = True
                self.record(
                    Ruling(
                        "refused",
                        "transfer_limit",
                        f"the run moved more than {self.max_transfer_bytes} bytes;"
                        " its connections are cut",
                    )
                )
                self._on_over_transfer()
            raise TransferLimit

    def _emit(self, decision: EgressDecision) -> None:
        if self._on_decision is None:
            return
        try:
            self._on_decision(decision)
        except Exception as exc:  # noqa: BLE001 - a failing sink never breaks a run's traffic
            log_event(logger, "egress_decision_sink_failed", logging.ERROR, error=repr(exc))
