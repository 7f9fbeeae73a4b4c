"""uvicorn's HTTP/1.1 protocol with PAGI's two additions for hostile clients.

- Requests h11 cannot parse (bad header bytes, oversized header fields, bad
  chunking, TLS bytes on a plain port) get PAGI's JSON error body, not
  uvicorn's ``text/plain`` one: every error of every service is JSON.
- A client gets :data:`HEADER_TIMEOUT_SECONDS` to send a request's headers.
  uvicorn has no such timer, so a client that trickles header bytes keeps a
  connection (and a file descriptor) forever; enough of them exhaust the
  service's descriptors.
"""

from __future__ import annotations

import asyncio
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_SECONDS = 10.0


class PagiH11Protocol(H11Protocol):
    """H11Protocol with JSON 400 answers and a deadline for request headers."""

    _header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # h11 leaves IDLE only once a request's headers are complete. Between
        # requests uvicorn's keep-alive timer rules; the first bytes of the
        # next request start this deadline again.
        if self.conn.their_state is not h11.IDLE:
            self._disarm_header_deadline()
        elif self._header_deadline is None and not self.transport.is_closing():
            self._arm_header_deadline()

    def send_400_response(self, msg: str) -> None:
        body = json.dumps({"error": "bad_request", "detail": msg, "request_id": None}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._header_deadline = self.loop.call_later(
            HEADER_TIMEOUT_SECONDS, self._header_deadline_passed
        )

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_deadline_passed(self) -> None:
        self._header_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()
