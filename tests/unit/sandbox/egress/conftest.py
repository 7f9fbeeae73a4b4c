"""Fixtures of the egress tests: a certificate, a pointable resolver, a session per run."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest

from sandbox.egress.addresses import IPAddress
from sandbox.egress.config import EgressLimits, EgressPolicy
from sandbox.egress.proxy import EgressProxy, EgressSession
from sandbox.egress.resolver import ResolveError
from sandbox.egress.rules import RuleSet
from tests.unit.sandbox.egress.origin import make_certificate


class PointedResolver:
    """Answers the test's names from a table; an entry may be a list of answers, one per lookup."""

    def __init__(self, table: dict[str, Any]) -> None:
        self.table = table
        self.calls: list[str] = []

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        self.calls.append(host)
        answer = self.table.get(host)
        if answer is None:
            raise ResolveError(f"{host}: no such name")
        if callable(answer):
            answer = await answer()
        if answer and isinstance(answer[0], list):
            answer = answer[min(self.calls.count(host), len(answer)) - 1]
        return [ip_address(a) for a in answer]


def egress(
    allow: list[str],
    deny: list[str] = (),  # type: ignore[assignment]
    allow_private: list[str] = ("127.0.0.1/32",),  # type: ignore[assignment]
    **limits: Any,
) -> EgressPolicy:
    return EgressPolicy(
        rules=RuleSet.parse(tuple(allow), tuple(deny)),
        allow_private=tuple(ip_network(n) for n in allow_private),
        limits=EgressLimits(**limits),
    )


def loopback_listener() -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    return listener


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def resolver() -> PointedResolver:
    return PointedResolver({"allowed.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})


@pytest.fixture
async def proxy(resolver: PointedResolver) -> AsyncIterator[EgressProxy]:
    decisions: list[Any] = []
    proxy = EgressProxy(resolver=resolver, on_decision=decisions.append)
    proxy.audited = decisions  # type: ignore[attr-defined]
    yield proxy
    await proxy.close()


@pytest.fixture
def run_session(proxy: EgressProxy) -> Callable[..., Any]:
    """``async with run_session(policy) as (port, session)``: one run's proxy on a loopback port."""

    @asynccontextmanager
    async def start(
        policy: EgressPolicy, request_id: str = "req-1"
    ) -> AsyncIterator[tuple[int, EgressSession]]:
        listener = loopback_listener()
        port = listener.getsockname()[1]
        session = proxy.open_session(
            listener, policy, request_id=request_id, tool="fetch", policy_version="v1"
        )
        try:
            yield port, session
        finally:
            await session.close()

    return start


async def exchange(port: int, data: bytes, *, wait: float = 5.0) -> bytes:
    """Send ``data`` on a new connection to the proxy; everything read until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), wait)
    finally:
        writer.close()
