"""GatewayClient, the client the agent uses, against a real gateway on loopback."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.client import GatewayClient, GatewayError, PlanChunk, PlanResult
from pagi.auth import TokenSigner
from pagi.request_id import request_id_var
from testing.gateway import RunningGateway, serve_gateway
from testing.stack import free_port
from tests.unit.gateway.fake_backends import BlockingBackend

PROMPT = "Analyze sales.csv and find the trends"


@pytest.fixture(scope="module")
def agent_signer(keys_dir: Path) -> TokenSigner:
    return TokenSigner.from_keys_dir(keys_dir, "agent")


def untrusted_signer() -> TokenSigner:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return TokenSigner("agent", pem)


async def test_get_plan(gateway: RunningGateway, agent_signer: TokenSigner, json_logs) -> None:
    client = GatewayClient(gateway.target, agent_signer, timeout_seconds=5)
    request_id_var.set("rid-client-42")
    try:
        result = await client.get_plan(PROMPT)
    finally:
        await client.close()
    assert isinstance(result, PlanResult)
    assert len(result.steps) >= 3 and result.steps[0].startswith("1. ")
    assert result.model == "pagi-local-planner-1" and result.backend == "local"
    assert result.latency_ms > 0
    served = [line for line in json_logs.lines if '"plan_served"' in line]
    assert '"request_id": "rid-client-42"' in served[-1]  # propagated as x-request-id
    assert '"caller": "agent"' in served[-1]


async def test_stream_plan(gateway: RunningGateway, agent_signer: TokenSigner) -> None:
    client = GatewayClient(gateway.target, agent_signer, timeout_seconds=5)
    try:
        whole = await client.get_plan(PROMPT)
        chunks = [chunk async for chunk in client.stream_plan(PROMPT)]
    finally:
        await client.close()
    assert all(isinstance(c, PlanChunk) for c in chunks)
    assert [c.step for c in chunks[:-1]] == whole.steps
    assert chunks[-1] == PlanChunk(index=len(whole.steps), step="", done=True)


async def test_client_can_be_used_again_after_close(
    gateway: RunningGateway, agent_signer: TokenSigner
) -> None:
    client = GatewayClient(gateway.target, agent_signer, timeout_seconds=5)
    await client.get_plan(PROMPT)
    await client.close()
    assert (await client.get_plan(PROMPT)).steps
    await client.close()
    await client.close()  # closing twice is harmless


async def expect(call: object, code: str) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code == code, caught.value.message
    return caught.value


async def test_gateway_down_is_unavailable(agent_signer: TokenSigner) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = GatewayClient(f"127.0.0.1:{port}", agent_signer, timeout_seconds=2)
    try:
        error = await expect(client.get_plan(PROMPT), "unavailable")
        assert error.http_status == 502

        async def consume() -> None:
            [_ async for _ in client.stream_plan(PROMPT)]

        await expect(consume(), "unavailable")
    finally:
        await client.close()


async def test_slow_gateway_is_deadline_exceeded(keys_dir: Path, agent_signer) -> None:
    backend = BlockingBackend()
    async with serve_gateway(keys_dir, backend=backend) as gateway:
        client = GatewayClient(gateway.target, agent_signer, timeout_seconds=0.3)
        loop = asyncio.get_running_loop()
        started = loop.time()
        error = await expect(client.get_plan(PROMPT), "deadline_exceeded")
        assert loop.time() - started < 3
        assert error.http_status == 504
        backend.release.set()
        await client.close()


async def test_untrusted_signature_is_unauthenticated(gateway: RunningGateway) -> None:
    client = GatewayClient(gateway.target, untrusted_signer(), timeout_seconds=2)
    try:
        error = await expect(client.get_plan(PROMPT), "unauthenticated")
        assert "bad signature" in error.message
    finally:
        await client.close()


async def test_caller_not_allowed_is_permission_denied(
    gateway: RunningGateway, keys_dir: Path
) -> None:
    client = GatewayClient(gateway.target, TokenSigner.from_keys_dir(keys_dir, "bff"), 2)
    try:
        await expect(client.get_plan(PROMPT), "permission_denied")
    finally:
        await client.close()


async def test_invalid_prompt_is_invalid_argument(
    gateway: RunningGateway, agent_signer: TokenSigner
) -> None:
    client = GatewayClient(gateway.target, agent_signer, timeout_seconds=2)
    try:
        error = await expect(client.get_plan("   "), "invalid_argument")
        assert error.message == "prompt must not be empty"
        assert error.http_status == 400

        async def consume() -> None:
            [_ async for _ in client.stream_plan("")]

        await expect(consume(), "invalid_argument")
    finally:
        await client.close()


async def test_busy_gateway_is_resource_exhausted(keys_dir: Path, agent_signer) -> None:
    backend = BlockingBackend()
    async with serve_gateway(
        keys_dir,
        backend=backend,
        pagi_gateway_max_concurrent_calls=1,
        pagi_gateway_queue_timeout_seconds=0.05,
    ) as gateway:
        client = GatewayClient(gateway.target, agent_signer, timeout_seconds=5)
        first = asyncio.ensure_future(client.get_plan(PROMPT))
        await asyncio.wait_for(backend.entered.wait(), 5)
        error = await expect(client.get_plan(PROMPT), "resource_exhausted")
        assert error.http_status == 503
        backend.release.set()
        assert (await first).steps
        await client.close()


def test_one_client_serves_successive_event_loops(keys_dir: Path, agent_signer) -> None:
    """An app restarted in a new event loop keeps working with the same client."""
    port = free_port()
    client = GatewayClient(f"127.0.0.1:{port}", agent_signer, timeout_seconds=5)

    async def one_round() -> list[str]:
        async with serve_gateway(keys_dir, port=port):
            return (await client.get_plan(PROMPT)).steps

    first = asyncio.run(one_round())
    second = asyncio.run(one_round())
    assert first == second and first


class CountingSigner(TokenSigner):
    """Counts the tokens it signs."""

    signed = 0

    def sign(self, audience: str, ttl: int = 60) -> str:
        self.signed += 1
        return super().sign(audience, ttl)


async def test_calls_reuse_one_token(gateway: RunningGateway, keys_dir: Path) -> None:
    """Not a token per call: signing and the gateway's full check are paid once."""
    signer = CountingSigner("agent", (keys_dir / "agent.key").read_bytes())
    client = GatewayClient(gateway.target, signer, timeout_seconds=5)
    try:
        for _ in range(3):
            assert (await client.get_plan(PROMPT)).steps
        assert [chunk async for chunk in client.stream_plan(PROMPT)]
    finally:
        await client.close()
    assert signer.signed == 1
