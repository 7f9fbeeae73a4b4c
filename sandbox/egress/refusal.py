"""A request the proxy will not carry out, and the answer its client gets.

A refusal is ``403`` for every policy reason (``4xx``/``5xx`` for protocol
errors and network failures, see :data:`~sandbox.egress.report.REFUSAL_STATUS`)
with ``X-PAGI-Egress-Reason``, the deciding rule when there is one, and a
one-line body; the connection is closed after it.
"""

from __future__ import annotations

from sandbox.egress.ledger import Ruling
from sandbox.egress.report import REFUSAL_STATUS, Reason

REASON_HEADER = "X-PAGI-Egress-Reason"
"""Names why the proxy refused (one of :data:`~sandbox.egress.report.Reason`)."""
RULE_HEADER = "X-PAGI-Egress-Rule"
"""The policy rule that decided, when one did."""

_PHRASES = {
    400: "Bad Request",
    403: "Forbidden",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    504: "Gateway Timeout",
}


class Refusal(Exception):
    """A request the proxy will not carry out; answered, recorded, connection closed."""

    def __init__(self, ruling: Ruling) -> None:
        super().__init__(ruling.detail)
        self.ruling = ruling


def refusal_response(reason: Reason, detail: str, rule: str | None = None) -> bytes:
    """The whole answer to a refused request: status, reason header, one-line body."""
    status = REFUSAL_STATUS[reason]
    line = f"PAGI egress proxy: {reason}: {detail}"
    body = (line.encode("ascii", "backslashreplace")[:1000] + b"\n").replace(b"\r", b" ")
    head = [
        f"HTTP/1.1 {status} {_PHRASES[status]}",
        f"{REASON_HEADER}: {reason}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if rule is not None:
        head.insert(2, f"{RULE_HEADER}: {rule}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii", "backslashreplace") + body
