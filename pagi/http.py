"""The one outgoing HTTP client factory.

Every call a service makes to another carries the contract's timeout, the
current request id and a token signed for the target service.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from pagi.auth import ReusedToken, TokenSigner
from pagi.request_id import HEADER, current_request_id

TIMEOUT_HEADER = "X-Request-Timeout-Ms"
"""A caller's time budget for the call, in ms: a callee that honours it answers
(perhaps degraded) before the caller gives up, instead of being cut off."""


def create_service_client(
    base_url: str,
    audience: str,
    signer: TokenSigner | None,
    timeout_seconds: float,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for one target service.

    ``audience`` is the target's service name; ``signer`` is the calling
    service's identity (``None`` sends no token, e.g. for ``/health``).
    """
    token = ReusedToken(signer, audience) if signer is not None else None

    async def add_headers(request: httpx.Request) -> None:
        rid = current_request_id()
        if rid and HEADER not in request.headers:
            request.headers[HEADER] = rid
        if token is not None and "authorization" not in request.headers:
            request.headers["Authorization"] = f"Bearer {token.get()}"

    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout_seconds),
        event_hooks={"request": [add_headers]},
        trust_env=False,
    )


async def read_capped(chunks: AsyncIterator[bytes], limit: int) -> bytes | None:
    """The whole stream, or None as soon as it exceeds ``limit`` bytes (nothing more is read)."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)
