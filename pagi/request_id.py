"""Request ids: taken from ``X-Request-Id`` or generated, kept in a contextvar.

The contextvar is what the logger, the HTTP client factory and the gRPC
client read, so an id set once by the middleware reaches every log line and
every downstream call made while serving that request.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "X-Request-Id"
MAX_LENGTH = 128
# Ids are echoed in headers and logs: accept only a conservative charset so a
# client cannot inject header breaks or control characters.
_VALID = re.compile(rf"^[A-Za-z0-9._:\-]{{1,{MAX_LENGTH}}}$")

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


def new_request_id() -> str:
    """A fresh random request id."""
    return uuid.uuid4().hex


def accept_request_id(value: str | bytes | None) -> str:
    """The id to use for an incoming value: itself when well-formed, else a new one."""
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return new_request_id()
    if value and _VALID.match(value):
        return value
    return new_request_id()


def current_request_id() -> str | None:
    """The id of the request being served, if any."""
    return request_id_var.get()


class RequestIdMiddleware:
    """Pure ASGI middleware: binds the request id and echoes it on the response.

    ``annotate``, when given, is told each request's id (tracing puts it on
    the request's span).
    """

    def __init__(self, app: ASGIApp, annotate: Callable[[str], None] | None = None) -> None:
        self.app = app
        self.annotate = annotate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = None
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                raw = value
                break
        rid = accept_request_id(raw)
        scope.setdefault("state", {})["request_id"] = rid
        token = request_id_var.set(rid)
        if self.annotate is not None:
            self.annotate(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"
                ]
                headers.append((b"x-request-id", rid.encode("ascii")))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
