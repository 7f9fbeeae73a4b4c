"""Stop working for a client that has gone: cancel its request's handler.

An ASGI server tells an application that the client disconnected only
through ``receive()``, which a plain handler no longer calls once it has
read the body. Work that takes long (a tool run, an agent run) would carry
on for nobody. :class:`CancelOnDisconnect` keeps reading ``receive()``
beside the handler and cancels it when the client goes before the answer
is complete; the handler sees :class:`asyncio.CancelledError` and cleans up
as for any cancellation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class CancelOnDisconnect:
    """Pure ASGI middleware: cancel the handling of ``paths`` when the client disconnects."""

    def __init__(self, app: ASGIApp, paths: Collection[str]) -> None:
        self.app = app
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        messages: asyncio.Queue[Message] = asyncio.Queue()
        answered = False
        client_gone = False

        async def tracked_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True
            await send(message)

        handler = asyncio.ensure_future(self.app(scope, messages.get, tracked_send))

        async def watch() -> None:
            nonlocal client_gone
            while True:
                message = await receive()
                await messages.put(message)  # the handler may read it too
                if message["type"] == "http.disconnect":
                    if not answered and not handler.done():
                        client_gone = True
                        handler.cancel()
                    return

        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait({handler})
        finally:
            watcher.cancel()
            if not handler.done():  # this task itself was cancelled (server shutdown)
                handler.cancel()
                await asyncio.wait({handler})
        if handler.cancelled() and client_gone:
            return  # nobody is left to answer
        handler.result()  # the handler's own outcome, exceptions included
