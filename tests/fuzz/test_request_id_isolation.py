"""Request ids under concurrency: never mixed up between requests, carried end to end.

The id lives in a contextvar; a bug in how it is set or reset shows only
when requests interleave. Many concurrent dashboard calls, each with its
own id, must each get their own id back, in the header, in the body, and
in the echo that went bff -> agent -> bff.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from pagi.stack import Stack

pytestmark = pytest.mark.slow

REQUESTS = 120
CONCURRENCY = 40


async def _dashboards(base_url: str) -> list[tuple[str, httpx.Response]]:
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(client: httpx.AsyncClient) -> tuple[str, httpx.Response]:
        request_id = f"iso-{uuid.uuid4().hex}"
        async with semaphore:
            response = await client.get(
                "/api/v1/agi/dashboard-data", headers={"X-Request-Id": request_id}
            )
        return request_id, response

    async with httpx.AsyncClient(base_url=base_url, timeout=30, trust_env=False) as client:
        return await asyncio.gather(*(one(client) for _ in range(REQUESTS)))


def test_concurrent_requests_keep_their_own_ids(live_stack: Stack):
    answers = asyncio.run(_dashboards(live_stack.settings.url_of("bff")))
    mixed = []
    for sent, response in answers:
        assert response.status_code == 200, response.text
        body = response.json()
        echo = body["data"]["python_agent"].get("bff_echo", {})
        seen = {
            "header": response.headers.get("x-request-id"),
            "body": body.get("request_id"),
            "agent's echo": echo.get("request_id") if isinstance(echo, dict) else None,
        }
        wrong = {where: got for where, got in seen.items() if got is not None and got != sent}
        if wrong:
            mixed.append(f"sent {sent}, got {wrong}")
    assert not mixed, f"{len(mixed)} of {REQUESTS} answers carry another request's id:\n" + (
        "\n".join(mixed[:10])
    )
    carried = sum(
        1
        for sent, response in answers
        if response.json()["data"]["python_agent"].get("bff_echo", {}).get("request_id") == sent
    )
    # Guards the check: the id did travel bff -> agent -> bff for the healthy answers.
    assert carried > REQUESTS // 2, f"only {carried} answers carried the id end to end"
