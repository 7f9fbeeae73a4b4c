"""The egress proxy: an HTTP forward proxy with CONNECT, one session per run, in the service's loop.

A run's session serves one listening socket (the only thing the run can
reach from its empty network namespace, see :mod:`.netns_listener`) under
the run's :class:`~sandbox.egress.config.EgressPolicy`:

- ``CONNECT host:port`` opens a tunnel (HTTPS and anything else; no TLS
  interception); an absolute-form ``GET http://host/...`` is forwarded as
  plain HTTP, each request on a kept-alive connection checked again;
- every destination is checked against the rules (deny first), the name is
  resolved once by the proxy, the request is refused if any address is
  non-public and not in ``allow_private``, and the connection goes to one of
  exactly the addresses checked (no second lookup, no DNS rebinding);
- redirects are the client's business: the proxy never follows one, and
  the follow-up request is checked like any other;
- a refusal is ``403`` (``4xx``/``5xx`` for protocol errors and network
  failures) with ``X-PAGI-Egress-Reason`` and a one-line body;
- per run: connections at once, bytes in + out, connect and idle timeouts;
  per request: head size, field count and a deadline for the head.

Closing the session cuts every connection of the run and closes its listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from ipaddress import IPv6Address

import h11

from pagi.logging import log_event
from sandbox.egress.addresses import IPAddress, non_public_kind, permitted_private
from sandbox.egress.config import MAX_RECORDED_DECISIONS, EgressPolicy
from sandbox.egress.report import (
    REFUSAL_STATUS,
    EgressDecision,
    EgressReport,
    Outcome,
    Reason,
)
from sandbox.egress.resolver import ResolveError, Resolver, SystemResolver
from sandbox.egress.rules import Target, TargetError, parse_target, split_host_port

logger = logging.getLogger(__name__)

REASON_HEADER = "X-PAGI-Egress-Reason"
"""Names why the proxy refused (one of :data:`~sandbox.egress.report.Reason`)."""
RULE_HEADER = "X-PAGI-Egress-Rule"
"""The policy rule that decided, when one did."""
READ_CHUNK = 64 * 1024
MAX_RESPONSE_HEAD_BYTES = 64 * 1024
CLOSE_GRACE_SECONDS = 5.0

DecisionSink = Callable[[EgressDecision], None]

_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"te",
        b"trailer",
        b"upgrade",
    }
)
_ABSOLUTE_HTTP = re.compile(rb"http://([^/?#]*)([/?][^#]*)?", re.IGNORECASE)


class _Stop(Exception):
    """A request the proxy will not carry out; answered, recorded, connection closed."""

    def __init__(
        self,
        outcome: Outcome,
        reason: Reason,
        detail: str,
        *,
        rule: str | None = None,
        address: IPAddress | None = None,
    ) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.reason = reason
        self.detail = detail
        self.rule = rule
        self.address = address
        self.target: Target | None = None


class _TransferLimit(Exception):
    """The run moved as many bytes as its policy allows."""


def refusal_response(reason: Reason, detail: str, rule: str | None = None) -> bytes:
    """The whole answer to a refused request: status, reason header, one-line body."""
    status = REFUSAL_STATUS[reason]
    phrase = {
        400: "Bad Request",
        403: "Forbidden",
        408: "Request Timeout",
        431: "Request Header Fields Too Large",
        502: "Bad Gateway",
        504: "Gateway Timeout",
    }[status]
    line = f"PAGI egress proxy: {reason}: {detail}"
    body = (line.encode("ascii", "backslashreplace")[:1000] + b"\n").replace(b"\r", b" ")
    head = [
        f"HTTP/1.1 {status} {phrase}",
        f"{REASON_HEADER}: {reason}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if rule is not None:
        head.insert(2, f"{RULE_HEADER}: {rule}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii", "backslashreplace") + body


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class EgressSession:
    """One run's traffic through the proxy: its listener, rules, limits and record.

    Made by :meth:`EgressProxy.open_session`; :meth:`close` at the run's end.
    """

    def __init__(
        self,
        proxy: EgressProxy,
        listener: socket.socket,
        policy: EgressPolicy,
        *,
        request_id: str,
        tool: str,
        policy_version: str,
    ) -> None:
        self._proxy = proxy
        self._listener = listener
        self.policy = policy
        self.request_id = request_id
        self.tool = tool
        self.policy_version = policy_version
        self.report = EgressReport()
        self._active = 0
        self._over_transfer = False
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._refusals: set[asyncio.Task[None]] = set()
        listener.setblocking(False)
        self._accept_task = asyncio.get_running_loop().create_task(
            self._accept_loop(), name=f"egress-accept-{request_id}"
        )

    @property
    def closed(self) -> bool:
        """Whether the session ended (nothing of the run gets through any more)."""
        return self._closed

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
        self._proxy._forget(self)
        return self.report

    # ----------------------------------------------------------------- accounting

    def _record(
        self,
        outcome: Outcome,
        reason: Reason,
        detail: str,
        *,
        method: str | None = None,
        target: Target | None = None,
        rule: str | None = None,
        address: IPAddress | None = None,
    ) -> None:
        decision = EgressDecision(
            time=_now(),
            request_id=self.request_id,
            tool=self.tool,
            policy_version=self.policy_version,
            outcome=outcome,
            reason=reason,
            method=method,
            host=target.host if target else None,
            port=target.port if target else None,
            rule=rule,
            address=str(address) if address is not None else None,
            detail=detail,
        )
        if len(self.report.decisions) >= MAX_RECORDED_DECISIONS:
            self.report.decisions_dropped += 1
            return
        self.report.decisions.append(decision)
        self._proxy._emit(decision)

    def _count(self, sent: int = 0, received: int = 0) -> None:
        """Add to the run's bytes; :class:`_TransferLimit` once past its cap."""
        self.report.bytes_out += sent
        self.report.bytes_in += received
        if self.report.bytes_out + self.report.bytes_in > self.policy.limits.max_transfer_bytes:
            if not self._over_transfer:
                self._over_transfer = True
                self._record(
                    "refused",
                    "transfer_limit",
                    f"the run moved more than {self.policy.limits.max_transfer_bytes} bytes;"
                    " its connections are cut",
                )
                self._cut_all(except_current=True)
            raise _TransferLimit

    def _cut_all(self, except_current: bool = False) -> None:
        current = asyncio.current_task()
        for task in list(self._tasks):
            if not (except_current and task is current):
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
                self._record(
                    "refused",
                    "connection_limit",
                    f"the run has {self._active} connections open, its limit",
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

    async def _serve(self, client: socket.socket) -> None:
        client.setblocking(False)
        try:
            reader, writer = await asyncio.open_connection(sock=client, limit=READ_CHUNK)
        except OSError:
            client.close()
            return
        connection = _ClientConnection(self, reader, writer)
        try:
            await connection.serve()
        except (_TransferLimit, ConnectionError, TimeoutError, h11.LocalProtocolError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # noqa: BLE001 - one connection's bug never reaches the service
            log_event(logger, "egress_connection_error", logging.ERROR, error=repr(exc))
        finally:
            connection.abort()

    # ----------------------------------------------------------------- destinations

    async def open_upstream(
        self, method: str, target: Target
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Check ``target`` and connect to it, or raise :class:`_Stop` saying why not."""
        if self._over_transfer:
            raise _Stop("refused", "transfer_limit", "the run used up its transfer limit")
        verdict = self.policy.rules.decide(target)
        if not verdict.allowed:
            assert verdict.reason is not None
            detail = {
                "denied": f"{target.authority} matches a deny rule",
                "port_not_allowed": f"port {target.port} is not allowed for {target.host}",
                "host_not_allowed": f"no allow rule matches {target.host}",
            }[verdict.reason]
            raise _Stop("refused", verdict.reason, detail, rule=verdict.rule)
        limits = self.policy.limits
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limits.connect_timeout_seconds
        if target.address is not None:
            addresses = [target.address]
        else:
            try:
                addresses = await asyncio.wait_for(
                    self._proxy.resolver.resolve(target.host, target.port),
                    limits.connect_timeout_seconds,
                )
            except TimeoutError:
                raise _Stop(
                    "failed", "dns_failure", f"resolving {target.host} timed out", rule=verdict.rule
                ) from None
            except ResolveError as exc:
                raise _Stop("failed", "dns_failure", str(exc), rule=verdict.rule) from None
            if not addresses:
                raise _Stop(
                    "failed", "dns_failure", f"{target.host}: no address", rule=verdict.rule
                )
        for address in addresses:
            kind = non_public_kind(address)
            if kind is not None and permitted_private(address, self.policy.allow_private) is None:
                raise _Stop(
                    "refused",
                    "private_address",
                    f"{target.host} is {address}, a {kind} address not in allow_private",
                    rule=verdict.rule,
                    address=address,
                )
        last_error = "no address"
        for address in addresses:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                streams = await asyncio.wait_for(
                    self._connect_exactly(address, target.port), remaining
                )
            except TimeoutError:
                break
            except OSError as exc:
                last_error = f"{address}: {exc.strerror or exc}"
                continue
            self.report.upstream_connections += 1
            self._record(
                "allowed",
                "allowed",
                f"{method} {target.authority} via {address}",
                method=method,
                target=target,
                rule=verdict.rule,
                address=address,
            )
            return streams
        else:
            raise _Stop(
                "failed", "connect_failed", f"connecting to {last_error}", rule=verdict.rule
            )
        raise _Stop(
            "failed",
            "connect_timeout",
            f"no connection to {target.authority} within {limits.connect_timeout_seconds} s",
            rule=verdict.rule,
        )

    @staticmethod
    async def _connect_exactly(
        address: IPAddress, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect to the address itself: a numeric sockaddr, never a name to look up."""
        family = socket.AF_INET6 if isinstance(address, IPv6Address) else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (str(address), port))
            return await asyncio.open_connection(sock=sock, limit=READ_CHUNK)
        except BaseException:
            sock.close()
            raise


class _ClientConnection:
    """One connection of the run to the proxy: its requests, one after another."""

    def __init__(
        self, session: EgressSession, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.session = session
        self.limits = session.policy.limits
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes
        )
        self.upstream: asyncio.StreamWriter | None = None

    def abort(self) -> None:
        """Cut both sides now (no flush, no goodbye)."""
        for writer in (self.upstream, self.writer):
            if writer is not None:
                writer.transport.abort()

    async def serve(self) -> None:
        while True:
            request = await self._read_request_head()
            if request is None:
                return
            method = request.method.decode("ascii", "replace").upper()
            try:
                if method == "CONNECT":
                    await self._tunnel(request)
                    return
                if not await self._forward(request, method):
                    return
            except _Stop as stop:
                await self._refuse(stop, method=method, target=stop.target)
                return
            if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
                return
            self.h11.start_next_cycle()

    # ----------------------------------------------------------------- request heads

    async def _read_request_head(self) -> h11.Request | None:
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
                await self._refuse(
                    _Stop(
                        "refused",
                        "header_timeout",
                        f"the request head did not arrive within"
                        f" {self.limits.header_timeout_seconds} s",
                    )
                )
            return None
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:
                stop = _Stop(
                    "refused",
                    "headers_too_large",
                    f"request head larger than {self.limits.max_header_bytes} bytes",
                )
            else:
                stop = _Stop("refused", "bad_request", f"not an HTTP/1.1 request ({exc})")
            await self._refuse(stop)
            return None
        if len(event.headers) > self.limits.max_header_count:
            await self._refuse(
                _Stop(
                    "refused",
                    "headers_too_large",
                    f"{len(event.headers)} header fields, more than {self.limits.max_header_count}",
                ),
                method=event.method.decode("ascii", "replace"),
            )
            return None
        return event

    async def _refuse(
        self, stop: _Stop, *, method: str | None = None, target: Target | None = None
    ) -> None:
        self.session._record(
            stop.outcome,
            stop.reason,
            stop.detail,
            method=method,
            target=target,
            rule=stop.rule,
            address=stop.address,
        )
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self.writer.write(refusal_response(stop.reason, stop.detail, stop.rule))
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(self.writer.drain(), 1.0)

    # ----------------------------------------------------------------- CONNECT

    async def _tunnel(self, request: h11.Request) -> None:
        target = self._connect_target(request.target)
        try:
            up_reader, up_writer = await self.session.open_upstream("CONNECT", target)
        except _Stop as stop:
            stop.target = target
            raise
        self.upstream = up_writer
        # The CONNECT request's end, then the switch: what the client sent
        # after its head (it may not wait for our 200) is the tunnel's first bytes.
        while True:
            event = self.h11.next_event()
            if event is h11.PAUSED:
                break
            if event is h11.NEED_DATA:
                data = await asyncio.wait_for(
                    self.reader.read(READ_CHUNK), self.limits.idle_timeout_seconds
                )
                self.h11.receive_data(data)
            elif not isinstance(event, h11.EndOfMessage):
                return  # a CONNECT with a body, or the client left
        self.writer.write(
            self.h11.send(
                h11.Response(status_code=200, headers=[], reason=b"Connection established")
            )
        )
        early, closed = self.h11.trailing_data
        if early:
            self.session._count(sent=len(early))
            up_writer.write(early)
        if closed:
            return
        await self._relay(self.reader, self.writer, up_reader, up_writer)

    def _connect_target(self, raw: bytes) -> Target:
        try:
            text = raw.decode("ascii")
            host, port = split_host_port(text)
            if port is None:
                raise ValueError("CONNECT needs host:port")
            return parse_target(host, port)
        except (UnicodeDecodeError, ValueError, TargetError) as exc:
            raise _Stop("refused", "invalid_target", f"CONNECT target: {exc}") from None

    async def _relay(
        self,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        """Copy bytes both ways until both ends are done, or idle too long, or over the cap."""
        loop = asyncio.get_running_loop()
        last = [loop.time()]

        async def pump(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, outbound: bool
        ) -> None:
            while True:
                data = await source.read(READ_CHUNK)
                if not data:
                    if sink.can_write_eof():
                        with contextlib.suppress(OSError):
                            sink.write_eof()
                    return
                if outbound:
                    self.session._count(sent=len(data))
                else:
                    self.session._count(received=len(data))
                last[0] = loop.time()
                sink.write(data)
                await sink.drain()
                last[0] = loop.time()

        tasks = {
            loop.create_task(pump(client_reader, up_writer, True)),
            loop.create_task(pump(up_reader, client_writer, False)),
        }
        try:
            pending = tasks
            while pending:
                idle_left = last[0] + self.limits.idle_timeout_seconds - loop.time()
                if idle_left <= 0:
                    return
                done, pending = await asyncio.wait(
                    pending, timeout=idle_left, return_when=asyncio.FIRST_EXCEPTION
                )
                for task in done:
                    if task.exception() is not None:
                        return
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # ----------------------------------------------------------------- plain HTTP

    def _http_target(self, raw: bytes) -> tuple[Target, bytes]:
        """(destination, origin-form path) of an absolute-form ``http://`` request target."""
        match = _ABSOLUTE_HTTP.fullmatch(raw)
        if match is None:
            if raw.lower().startswith(b"https://"):
                raise _Stop(
                    "refused",
                    "unsupported_request",
                    "HTTPS goes through CONNECT (the proxy does not open TLS for you)",
                )
            if raw.startswith(b"/"):
                raise _Stop(
                    "refused",
                    "unsupported_request",
                    "not a proxy request: send an absolute http:// URL, or CONNECT",
                )
            raise _Stop("refused", "unsupported_request", "only http:// URLs and CONNECT")
        authority, path = match.group(1), match.group(2) or b"/"
        if path.startswith(b"?"):
            path = b"/" + path
        try:
            text = authority.decode("ascii")
            if "@" in text:
                raise ValueError("user info in the URL")
            host, port = split_host_port(text)
            return parse_target(host, port or 80), path
        except (UnicodeDecodeError, ValueError, TargetError) as exc:
            raise _Stop("refused", "invalid_target", f"request target: {exc}") from None

    async def _forward(self, request: h11.Request, method: str) -> bool:
        """Carry one plain-HTTP request upstream and its response back; whether to go on."""
        target, path = self._http_target(request.target)
        try:
            up_reader, up_writer = await self.session.open_upstream(method, target)
        except _Stop as stop:
            stop.target = target
            raise
        self.upstream = up_writer
        upstream = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEAD_BYTES)
        host = target.authority.removesuffix(":80")
        headers = [(b"Host", host.encode("ascii"))]
        headers += _end_to_end(request.headers)
        headers.append((b"Connection", b"close"))
        head = upstream.send(h11.Request(method=request.method, target=path, headers=headers))
        await self._send_upstream(up_writer, head)
        body = asyncio.get_running_loop().create_task(self._pump_request_body(upstream, up_writer))
        try:
            return await self._relay_response(upstream, up_reader)
        finally:
            if not body.done():
                body.cancel()
            await asyncio.gather(body, return_exceptions=True)
            up_writer.transport.abort()
            self.upstream = None

    async def _send_upstream(self, writer: asyncio.StreamWriter, data: bytes | None) -> None:
        if not data:
            return
        self.session._count(sent=len(data))
        writer.write(data)
        await asyncio.wait_for(writer.drain(), self.limits.idle_timeout_seconds)

    async def _pump_request_body(
        self, upstream: h11.Connection, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                data = await asyncio.wait_for(
                    self.reader.read(READ_CHUNK), self.limits.idle_timeout_seconds
                )
                self.h11.receive_data(data)
                continue
            if isinstance(event, h11.Data):
                await self._send_upstream(writer, upstream.send(h11.Data(data=event.data)))
            elif isinstance(event, h11.EndOfMessage):
                await self._send_upstream(writer, upstream.send(h11.EndOfMessage()))
                return
            else:
                return  # the client went away mid-body

    async def _relay_response(self, upstream: h11.Connection, reader: asyncio.StreamReader) -> bool:
        while True:
            try:
                event = upstream.next_event()
            except h11.RemoteProtocolError as exc:
                if self.h11.our_state is h11.SEND_RESPONSE:
                    raise _Stop("failed", "upstream_error", f"bad response: {exc}") from None
                return False
            if event is h11.NEED_DATA:
                data = await asyncio.wait_for(
                    reader.read(READ_CHUNK), self.limits.idle_timeout_seconds
                )
                self.session._count(received=len(data))
                try:
                    upstream.receive_data(data)
                except RuntimeError:
                    return False
                continue
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    return False  # no protocol switch through a plain-HTTP request
                await self._to_client(
                    h11.InformationalResponse(
                        status_code=event.status_code, headers=_end_to_end(event.headers)
                    )
                )
            elif isinstance(event, h11.Response):
                await self._to_client(
                    h11.Response(
                        status_code=event.status_code,
                        headers=_end_to_end(event.headers),
                        reason=event.reason,
                    )
                )
            elif isinstance(event, h11.Data):
                await self._to_client(h11.Data(data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                await self._to_client(h11.EndOfMessage())
                return True
            else:
                return False  # upstream closed mid-response: the client sees a cut

    async def _to_client(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), self.limits.idle_timeout_seconds)


def _end_to_end(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The header fields a proxy passes on: hop-by-hop ones (and those Connection names) dropped.

    ``Host`` is dropped too: the proxy sets it to the destination it checked.
    """
    named = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.split(b",")
    }
    return [
        (name, value)
        for name, value in headers
        if name.lower() not in _HOP_BY_HOP and name.lower() not in named and name.lower() != b"host"
    ]


class EgressProxy:
    """The service's egress proxy: one per service, one session per networked run."""

    def __init__(
        self, *, resolver: Resolver | None = None, on_decision: DecisionSink | None = None
    ) -> None:
        self._own_resolver = resolver is None
        self.resolver: Resolver = resolver or SystemResolver()
        self._on_decision = on_decision
        self._sessions: set[EgressSession] = set()

    def open_session(
        self,
        listener: socket.socket,
        policy: EgressPolicy,
        *,
        request_id: str,
        tool: str,
        policy_version: str,
    ) -> EgressSession:
        """Serve ``listener`` for one run under ``policy`` until the session is closed.

        Call from the service's event loop. The session owns ``listener`` from
        now on and closes it at the end.
        """
        session = EgressSession(
            self,
            listener,
            policy,
            request_id=request_id,
            tool=tool,
            policy_version=policy_version,
        )
        self._sessions.add(session)
        return session

    @contextlib.asynccontextmanager
    async def session(
        self,
        listener: socket.socket,
        policy: EgressPolicy,
        *,
        request_id: str,
        tool: str,
        policy_version: str,
    ) -> AsyncIterator[EgressSession]:
        """``async with proxy.session(...) as session``: closed (and reported) on the way out."""
        opened = self.open_session(
            listener, policy, request_id=request_id, tool=tool, policy_version=policy_version
        )
        try:
            yield opened
        finally:
            await opened.close()

    def stats(self) -> dict[str, int]:
        """Open sessions and their connections (for /health)."""
        return {
            "sessions": len(self._sessions),
            "connections": sum(s._active for s in self._sessions),
        }

    async def close(self) -> None:
        """Close every open session (service shutdown)."""
        for session in list(self._sessions):
            await session.close()
        if self._own_resolver and isinstance(self.resolver, SystemResolver):
            self.resolver.close()

    def _forget(self, session: EgressSession) -> None:
        self._sessions.discard(session)

    def _emit(self, decision: EgressDecision) -> None:
        if self._on_decision is None:
            return
        try:
            self._on_decision(decision)
        except Exception as exc:  # noqa: BLE001 - a failing sink never breaks a run's traffic
            log_event(logger, "egress_decision_sink_failed", logging.ERROR, error=repr(exc))
