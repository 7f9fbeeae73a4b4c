"""Plain HTTP: an absolute-form ``http://`` request carried to a checked host, its response back.

Each request gets its own upstream connection (``Connection: close``), so
each request on a kept-alive client connection is checked again. The
hop-by-hop and proxy header fields are dropped both ways, ``Host`` is set to
the destination checked, and a redirect is passed back, never followed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import h11

from sandbox.egress.client import ClientConnection
from sandbox.egress.config import READ_CHUNK
from sandbox.egress.ledger import Ruling
from sandbox.egress.refusal import Refusal
from sandbox.egress.request_target import http_target
from sandbox.egress.upstream import Dialer

MAX_RESPONSE_HEAD_BYTES = 64 * 1024
"""The largest response head the proxy takes from upstream."""

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


def end_to_end(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
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


async def forward(
    client: ClientConnection, dialer: Dialer, request: h11.Request, method: str
) -> bool:
    """Carry one plain-HTTP request upstream and its response back; whether to go on."""
    target, path = http_target(request.target)
    up_reader, up_writer = await dialer.open(method, target)
    client.upstream = up_writer
    upstream = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEAD_BYTES)
    host = target.authority.removesuffix(":80")
    headers = [(b"Host", host.encode("ascii"))]
    headers += end_to_end(request.headers)
    headers.append((b"Connection", b"close"))
    head = upstream.send(h11.Request(method=request.method, target=path, headers=headers))
    await _send_upstream(client, up_writer, head)
    body = asyncio.get_running_loop().create_task(_pump_request_body(client, upstream, up_writer))
    try:
        return await _relay_response(client, upstream, up_reader)
    finally:
        if not body.done():
            body.cancel()
        await asyncio.gather(body, return_exceptions=True)
        up_writer.transport.abort()
        client.upstream = None


async def _send_upstream(
    client: ClientConnection, writer: asyncio.StreamWriter, data: bytes | None
) -> None:
    if not data:
        return
    client.ledger.count(sent=len(data))
    writer.write(data)
    await asyncio.wait_for(writer.drain(), client.limits.idle_timeout_seconds)


async def _pump_request_body(
    client: ClientConnection, upstream: h11.Connection, writer: asyncio.StreamWriter
) -> None:
    while True:
        event = client.h11.next_event()
        if event is h11.NEED_DATA:
            await client.receive()
            continue
        if isinstance(event, h11.Data):
            await _send_upstream(client, writer, upstream.send(h11.Data(data=event.data)))
        elif isinstance(event, h11.EndOfMessage):
            await _send_upstream(client, writer, upstream.send(h11.EndOfMessage()))
            return
        else:
            return  # the client went away mid-body


async def _relay_response(
    client: ClientConnection, upstream: h11.Connection, reader: asyncio.StreamReader
) -> bool:
    while True:
        try:
            event = upstream.next_event()
        except h11.RemoteProtocolError as exc:
            if client.h11.our_state is h11.SEND_RESPONSE:
                raise Refusal(Ruling("failed", "upstream_error", f"bad response: {exc}")) from None
            return False
        if event is h11.NEED_DATA:
            data = await asyncio.wait_for(
                reader.read(READ_CHUNK), client.limits.idle_timeout_seconds
            )
            client.ledger.count(received=len(data))
            try:
                upstream.receive_data(data)
            except RuntimeError:
                return False
            continue
        if isinstance(event, h11.InformationalResponse):
            if event.status_code == 101:
                return False  # no protocol switch through a plain-HTTP request
            await client.send(
                h11.InformationalResponse(
                    status_code=event.status_code, headers=end_to_end(event.headers)
                )
            )
        elif isinstance(event, h11.Response):
            await client.send(
                h11.Response(
                    status_code=event.status_code,
                    headers=end_to_end(event.headers),
                    reason=event.reason,
                )
            )
        elif isinstance(event, h11.Data):
            await client.send(h11.Data(data=event.data))
        elif isinstance(event, h11.EndOfMessage):
            await client.send(h11.EndOfMessage())
            return True
        else:
            return False  # upstream closed mid-response: the client sees a cut
