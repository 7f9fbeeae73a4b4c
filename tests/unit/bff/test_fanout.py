"""call_downstream: whatever a call raises becomes an error entry, never an exception."""

from __future__ import annotations

import httpx

from bff.fanout import DownstreamCall, call_downstream


def _raising(exc: Exception) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return httpx.MockTransport(handler)


async def test_an_unexpected_exception_becomes_an_error_entry() -> None:
    async with httpx.AsyncClient(
        transport=_raising(RuntimeError("surprise")), base_url="http://x"
    ) as client:
        outcome = await call_downstream(
            DownstreamCall("memory", "memory", client, "GET", "/memory/latest"), 1.0
        )
    assert not outcome.ok
    assert outcome.body == {
        "error": "the call to memory failed (RuntimeError)",
        "service": "memory",
    }


async def test_an_empty_success_body_is_not_an_answer() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(204))
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
        outcome = await call_downstream(
            DownstreamCall("memory", "memory", client, "GET", "/memory/latest"), 1.0
        )
    assert outcome.body["error"] == "memory answered something that is not a JSON object"
