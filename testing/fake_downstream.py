"""A real HTTP server on loopback standing in for a downstream service.

Each route's behaviour (delay, status, body) is set by the test; every
request it receives is recorded so tests can check the headers sent.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from testing.stack import closed_port


@dataclass
class Behaviour:
    """How the fake answers one path."""

    status: int = 200
    body: Any = field(default_factory=lambda: {"fake": True})
    delay: float = 0.0
    raw: bytes | None = None


@dataclass
class Received:
    """One request the fake got."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FakeDownstream:
    """An ASGI app answering every path as ``behaviours[path]`` says."""

    def __init__(self) -> None:
        self.behaviours: dict[str, Behaviour] = {}
        self.received: list[Received] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        body = await request.body()
        self.received.append(
            Received(request.method, request.url.path, dict(request.headers), body)
        )
        behaviour = self.behaviours.get(request.url.path, Behaviour())
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        if behaviour.raw is not None:
            response: Response = Response(behaviour.raw, behaviour.status)
        else:
            response = JSONResponse(behaviour.body, behaviour.status)
        await response(scope, receive, send)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve(app: FakeDownstream) -> Iterator[str]:
    """Serve ``app`` on a free loopback port in a thread; yields its base URL."""
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise TimeoutError("fake downstream did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        server.force_exit = True  # do not wait for requests the test left sleeping
        thread.join(timeout=10)


def closed_port_url() -> str:
    """A loopback URL that refuses connections for the whole test run."""
    return f"http://127.0.0.1:{closed_port()}"
