"""Server-sent events: the one encoding every PAGI stream uses.

Each event is ``event: NAME`` and one ``data:`` line of JSON (ASCII, so no
character of the payload can end the line), optionally with an ``id:``.
"""

from __future__ import annotations

import json
from typing import Any

MEDIA_TYPE = "text/event-stream"
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
"""Headers that keep caches and proxies (nginx) from holding events back."""
KEEPALIVE = b": keep-alive\n\n"
"""A comment line: clients ignore it; it keeps idle connections (and proxies) open."""


def sse_event(event: str, data: dict[str, Any], event_id: int | str | None = None) -> bytes:
    """One server-sent event; ``data`` is one line of JSON."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    payload = json.dumps(data, ensure_ascii=True)
    return f"{head}event: {event}\ndata: {payload}\n\n".encode("ascii")


def stream_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI entry of a 200 answered as server-sent events of ``schema``."""
    return {"description": description, "content": {MEDIA_TYPE: {"schema": schema}}}
