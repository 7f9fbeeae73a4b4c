"""CONNECT: a tunnel to a checked destination, bytes copied both ways, no TLS interception.

The tunnel lives until both ends are done, or neither moved a byte for the
idle timeout, or the run passes its transfer limit.
"""

from __future__ import annotations

import asyncio
import contextlib

import h11

from sandbox.egress.client import ClientConnection
from sandbox.egress.config import READ_CHUNK
from sandbox.egress.request_target import connect_target
from sandbox.egress.upstream import Dialer


async def tunnel(client: ClientConnection, dialer: Dialer, request: h11.Request) -> None:
    """Serve a CONNECT request: open the tunnel it asks for and carry it to the end."""
    target = connect_target(request.target)
    up_reader, up_writer = await dialer.open("CONNECT", target)
    client.upstream = up_writer
    # The CONNECT request's end, then the switch: what the client sent
    # after its head (it may not wait for our 200) is the tunnel's first bytes.
    while True:
        event = client.h11.next_event()
        if event is h11.PAUSED:
            break
        if event is h11.NEED_DATA:
            await client.receive()
        elif not isinstance(event, h11.EndOfMessage):
            return  # a CONNECT with a body, or the client left
    client.writer.write(
        client.h11.send(h11.Response(status_code=200, headers=[], reason=b"Connection established"))
    )
    early, closed = client.h11.trailing_data
    if early:
        client.ledger.count(sent=len(early))
        up_writer.write(early)
    if closed:
        return
    await relay(client, up_reader, up_writer)


async def relay(
    client: ClientConnection, up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter
) -> None:
    """Copy bytes both ways until both ends are done, or idle too long, or over the cap."""
    ledger, idle_timeout = client.ledger, client.limits.idle_timeout_seconds
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
                ledger.count(sent=len(data))
            else:
                ledger.count(received=len(data))
            last[0] = loop.time()
            sink.write(data)
            await sink.drain()
            last[0] = loop.time()

    tasks = {
        loop.create_task(pump(client.reader, up_writer, True)),
        loop.create_task(pump(up_reader, client.writer, False)),
    }
    try:
        pending = tasks
        while pending:
            idle_left = last[0] + idle_timeout - loop.time()
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
