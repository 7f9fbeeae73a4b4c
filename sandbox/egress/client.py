"""One connection of a run to the proxy: its HTTP/1.1 state, its request heads, its refusals.

The request heads are held to the proxy's limits (size, field count, a
deadline for the whole head); what a request then does is
:func:`~sandbox.egress.tunnel.tunnel` (CONNECT) or
:func:`~sandbox.egress.forward.forward` (plain HTTP).
"""

from __future__ import annotations

import asyncio
import contextlib

import h11

from sandbox.egress.config import READ_CHUNK, EgressLimits
from sandbox.egress.ledger import Ledger, Ruling
from sandbox.egress.refusal import refusal_response


class ClientConnection:
    """The run's end of one connection: its streams, its h11 state, the upstream it reached."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        limits: EgressLimits,
        ledger: Ledger,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.limits = limits
        self.ledger = ledger
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self.upstream: asyncio.StreamWriter | None = None
        """The upstream connection in use, cut with this one."""

    def abort(self) -> None:
        """Cut both sides now (no flush, no goodbye)."""
        for writer in (self.upstream, self.writer):
            if writer is not None:
                writer.transport.abort()

    async def receive(self) -> None:
        """Feed the client's next bytes to h11 (at most the idle timeout's wait)."""
        data = await asyncio.wait_for(
            self.reader.read(READ_CHUNK), self.limits.idle_timeout_seconds
        )
        self.h11.receive_data(data)

    async def send(self, event: h11.Event) -> None:
        """Send one event of the response to the client (at most the idle timeout's wait)."""
        data = self.h11.send(event)
        if data:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), self.limits.idle_timeout_seconds)

    async def next_request(self) -> h11.Request | None:
        """The next request's head, or None when the client is done (or refused)."""
        received = 0
        try:
            async with asyncio.timeout(self.limits.header_timeout_seconds):
                while True:
                    event = self.h11.next_event()
                    if event is h11.NEED_DATA:
                        data = await self.reader.read(READ_CHUNK)
                        received += len(data)
                        self.h11.receive_data(data)
                        continue
                    if isinstance(event, h11.Request):
                        break
                    return None  # ConnectionClosed (or PAUSED: nothing more for us)
        except TimeoutError:
            if received:
                await self.refuse(
                    Ruling(
                        "refused",
                        "header_timeout",
                        f"the request head did not arrive within"
                        f" {self.limits.header_timeout_seconds} s",
                    )
                )
            return None
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:
                ruling = Ruling(
                    "refused",
                    "headers_too_large",
                    f"request head larger than {self.limits.max_header_bytes} bytes",
                )
            else:
                ruling = Ruling("refused", "bad_request", f"not an HTTP/1.1 request ({exc})")
            await self.refuse(ruling)
            return None
        if len(event.headers) > self.limits.max_header_count:
            await self.refuse(
                Ruling(
                    "refused",
                    "headers_too_large",
                    f"{len(event.headers)} header fields, more than {self.limits.max_header_count}",
                    method=event.method.decode("ascii", "replace"),
                )
            )
            return None
        return event

    def next_cycle(self) -> bool:
        """Ready the connection for the client's next request; False when it cannot take one."""
        if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
            return False
        self.h11.start_next_cycle()
        return True

    async def refuse(self, ruling: Ruling) -> None:
        """Record ``ruling`` and, if no response has begun, answer with the refusal."""
        self.ledger.record(ruling)
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self.writer.write(refusal_response(ruling.reason, ruling.detail, ruling.rule))
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(self.writer.drain(), 1.0)
