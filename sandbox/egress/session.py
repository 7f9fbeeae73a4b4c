"""One run's session at the proxy: its listener, its connections and their requests, its end.

Connections beyond the run's limit are answered with a refusal and closed;
each accepted one is served request by request (a CONNECT turns it into a
tunnel, a plain-HTTP request is forwarded and the next one read). Closing
the session cuts every connection of the run and closes its listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import replace

import h11

from pagi.logging import log_event
from sandbox.egress.client import ClientConnection
from sandbox.egress.config import READ_CHUNK, EgressPolicy
from sandbox.egress.forward import forward
from sandbox.egress.ledger import DecisionSink, Ledger, Ruling, RunLabels, TransferLimit
from sandbox.egress.refusal import Refusal, refusal_response
from sandbox.egress.report import EgressReport, Reason
from sandbox.egress.resolver import Resolver
from sandbox.egress.tunnel import tunnel
from sandbox.egress.upstream import Dialer

logger = logging.getLogger(__name__)

CLOSE_GRACE_SECONDS = 5.0
"""How long closing waits for the run's connections to wind up once cut."""


class EgressSession:
    """One run's traffic through the proxy: its listener, rules, limits and record.

    Made by :meth:`~sandbox.egress.proxy.EgressProxy.open_session`; :meth:`close`
    at the run's end (``async with`` the session closes it on the way out).
    """

    def __init__(
        self,
        listener: socket.socket,
        policy: EgressPolicy,
        labels: RunLabels,
        *,
        resolver: Resolver,
        on_decision: DecisionSink | None = None,
        on_close: Callable[[EgressSession], None] | None = None,
    ) -> None:
        self._listener = listener
        self.policy = policy
        self.labels = labels
        self._ledger = Ledger(
            labels,
            max_transfer_bytes=policy.limits.max_transfer_bytes,
            on_decision=on_decision,
            on_over_transfer=self._cut_all_but_current,
        )
        self.report: EgressReport = self._ledger.report
        self._dialer = Dialer(policy, resolver, self._ledger)
        self._on_close = on_close
        self._active = 0
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._refusals: set[asyncio.Task[None]] = set()
        listener.setblocking(False)
        self._accept_task = asyncio.get_running_loop().create_task(
            self._accept_loop(), name=f"egress-accept-{labels.request_id}"
        )

    @property
    def open_connections(self) -> int:
        """The run's connections being served now."""
        return self._active

    @property
    def closed(self) -> bool:
        """Whether the session ended (nothing of the run gets through any more)."""
        return self._closed

    async def __aenter__(self) -> EgressSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> EgressReport:
        """Stop accepting, cut every connection of the run, close the listener; the report."""
        if self._closed:
            return self.report
        self._closed = True
        self._accept_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._accept_task
        self._listener.close()
        tasks = [*self._tasks, *self._refusals]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_GRACE_SECONDS)
        if self._on_close is not None:
            self._on_close(self)
        return self.report

    def _cut_all_but_current(self) -> None:
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()

    # ----------------------------------------------------------------- connections

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, _ = await loop.sock_accept(self._listener)
            except OSError as exc:
                log_event(logger, "egress_accept_failed", logging.WARNING, error=str(exc))
                await asyncio.sleep(0.05)
                continue
            self.report.connections += 1
            if self._active >= self.policy.limits.max_connections:
                self._ledger.record(
                    Ruling(
                        "refused",
                        "connection_limit",
                        f"the run has {self._active} connections open, its limit",
                    )
                )
                refusal = loop.create_task(
                    self._refuse_raw(client, "connection_limit", "too many connections")
                )
                self._refusals.add(refusal)
                refusal.add_done_callback(self._refusals.discard)
                continue
            self._active += 1
            task = loop.create_task(self._serve(client))
            self._tasks.add(task)
            task.add_done_callback(self._connection_done)
            # Give other runs' connections a turn between accepts.
            await asyncio.sleep(0)

    def _connection_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._active -= 1

    async def _refuse_raw(self, client: socket.socket, reason: Reason, detail: str) -> None:
        loop = asyncio.get_running_loop()
        client.setblocking(False)
        try:
            await asyncio.wait_for(
                loop.sock_sendall(client, refusal_response(reason, detail)), timeout=1.0
            )
        except (OSError, TimeoutError):
            pass
        finally:
            client.close()

    async def _serve(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        try:
            reader, writer = await asyncio.open_connection(sock=sock, limit=READ_CHUNK)
        except OSError:
            sock.close()
            return
        client = ClientConnection(reader, writer, self.policy.limits, self._ledger)
        try:
            await self._requests(client)
        except (TransferLimit, ConnectionError, TimeoutError, h11.LocalProtocolError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # noqa: BLE001 - one connection's bug never reaches the service
            log_event(logger, "egress_connection_error", logging.ERROR, error=repr(exc))
        finally:
            client.abort()

    async def _requests(self, client: ClientConnection) -> None:
        """The connection's requests, one after another, until one ends it."""
        while True:
            request = await client.next_request()
            if request is None:
                return
            method = request.method.decode("ascii", "replace").upper()
            try:
                if method == "CONNECT":
                    await tunnel(client, self._dialer, request)
                    return
                if not await forward(client, self._dialer, request, method):
                    return
            except Refusal as refusal:
                await client.refuse(replace(refusal.ruling, method=method))
                return
            if not client.next_cycle():
                return
