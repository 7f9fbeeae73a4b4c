"""Forged tokens sent to the running services: 401 over HTTP, UNAUTHENTICATED over gRPC.

The verifier is attacked at volume in ``test_token_verifier_fuzz.py``; here
the same forgeries go through each service's real front door, so a route
that forgot the auth dependency, or a service that built its own check,
is caught too.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from pagi.stack import Stack
from proto import model_gateway_pb2, model_gateway_pb2_grpc
from testing.forged_tokens import (
    AttackerKeys,
    Forgery,
    byte_mutations,
    character_mutations,
    forged_tokens,
)

pytestmark = pytest.mark.slow

# One authenticated operation per HTTP service: (method, path, JSON body).
PROTECTED: dict[str, tuple[str, str, dict | None]] = {
    "agent": ("POST", "/api/v1/plan", {"prompt": "list the files"}),
    "sandbox": ("POST", "/api/v1/execute_tool", {"tool_name": "demo"}),
    "memory": ("GET", "/memory/latest", None),
    "bff": ("POST", "/api/v1/echo", {"ping": "x"}),
}
OTHER_AUDIENCE = {"agent": "memory", "sandbox": "agent", "memory": "sandbox", "bff": "agent"}
CHARACTER_MUTATION_SAMPLE = 300
# Above this size a header or metadata value is refused by the transport
# itself (h11: 400, grpc: RESOURCE_EXHAUSTED) before any token check runs.
TRANSPORT_HEADER_LIMIT = 16 * 1024
GRPC_SOFT_METADATA_LIMIT = 8 * 1024 - 1024
"""Above gRPC's soft limit (8 KiB over all of a call's metadata, ~600 bytes of
which are not the token) the transport may refuse a call at random."""


@pytest.fixture(scope="module")
def attacker() -> AttackerKeys:
    return AttackerKeys()


def hostile_tokens(
    keys_dir: Path, audience: str, token_for: Callable[..., str], attacker: AttackerKeys
) -> Iterator[Forgery]:
    """Forgeries, every decoded-byte flip and a sample of character swaps."""
    yield from forged_tokens(keys_dir, audience, OTHER_AUDIENCE.get(audience, "agent"), attacker)
    yield from byte_mutations(token_for(audience))
    swaps = list(character_mutations(token_for(audience)))
    yield from random.Random(5).sample(swaps, CHARACTER_MUTATION_SAMPLE)


@pytest.mark.parametrize("service", sorted(PROTECTED))
def test_forged_tokens_get_401(live_stack: Stack, keys_dir, token_for, attacker, service: str):
    method, path, body = PROTECTED[service]
    with httpx.Client(
        base_url=live_stack.settings.url_of(service), timeout=15, trust_env=False
    ) as client:
        genuine = client.request(
            method, path, json=body, headers={"Authorization": f"Bearer {token_for(service)}"}
        )
        # Guards the test: the operation is reachable with a real token.
        assert genuine.status_code not in (401, 404, 405), genuine.text

        failures = []
        for what, token in hostile_tokens(keys_dir, service, token_for, attacker):
            value = f"Bearer {token}".encode("latin-1", "replace").replace(b"\x00", b"0")
            try:
                response = client.request(method, path, json=body, headers={"Authorization": value})
            except httpx.LocalProtocolError:
                continue  # a header no HTTP client can send
            if len(value) > TRANSPORT_HEADER_LIMIT and 400 <= response.status_code < 500:
                continue
            ok = (
                response.status_code == 401
                and response.headers.get("content-type", "").startswith("application/json")
                and "error" in response.json()
            )
            if not ok:
                failures.append(f"{what}: {response.status_code} {response.text[:200]}")
    assert not failures, f"{len(failures)} hostile tokens not refused:\n" + "\n".join(failures[:30])


def test_no_token_and_wrong_scheme_get_401(live_stack: Stack, token_for):
    for service, (method, path, body) in PROTECTED.items():
        url = live_stack.settings.url_of(service) + path
        for headers in (
            {},
            {"Authorization": ""},
            {"Authorization": "Bearer"},
            {"Authorization": f"Basic {token_for(service)}"},
            {"Authorization": f"Token {token_for(service)}"},
            {"Cookie": f"token={token_for(service)}"},
        ):
            response = httpx.request(method, url, json=body, headers=headers, trust_env=False)
            assert response.status_code == 401, (service, headers, response.text)
            assert response.json()["error"], response.text


# --------------------------------------------------------------------------- gRPC


def test_forged_tokens_get_unauthenticated_over_grpc(
    live_stack: Stack, keys_dir, token_for, attacker
):
    target = live_stack.settings.gateway_target
    request = model_gateway_pb2.PlanRequest(prompt="list the files")
    with grpc.insecure_channel(target) as channel:
        stub = model_gateway_pb2_grpc.ModelGatewayStub(channel)
        genuine = stub.GetPlan(
            request, metadata=[("authorization", f"Bearer {token_for('gateway')}")], timeout=10
        )
        assert genuine.steps, "the gateway must answer a genuine token"

        failures = []
        tokens = list(hostile_tokens(keys_dir, "gateway", token_for, attacker))
        tokens.append(("no metadata", ""))
        for what, token in tokens:
            metadata = [("authorization", f"Bearer {token}")] if token else []
            if any(ord(c) < 0x20 or ord(c) > 0x7E for c in token):
                metadata = [("authorization-bin", f"Bearer {token}".encode())]
            try:
                reply = stub.GetPlan(request, metadata=metadata, timeout=10)
                failures.append(f"{what}: ACCEPTED, {len(reply.steps)} steps")
            except grpc.RpcError as exc:
                expected = {grpc.StatusCode.UNAUTHENTICATED}
                if len(token) > GRPC_SOFT_METADATA_LIMIT:
                    expected.add(grpc.StatusCode.RESOURCE_EXHAUSTED)
                if exc.code() not in expected:
                    failures.append(f"{what}: {exc.code().name} {exc.details()}")
    assert not failures, f"{len(failures)} hostile tokens not refused:\n" + "\n".join(failures[:30])


def test_grpc_token_for_another_service_is_unauthenticated(live_stack: Stack, token_for):
    with grpc.insecure_channel(live_stack.settings.gateway_target) as channel:
        stub = model_gateway_pb2_grpc.ModelGatewayStub(channel)
        for audience in ("agent", "sandbox", "bff", "memory"):
            with pytest.raises(grpc.RpcError) as refused:
                stub.GetPlan(
                    model_gateway_pb2.PlanRequest(prompt="x"),
                    metadata=[("authorization", f"Bearer {token_for(audience)}")],
                    timeout=10,
                )
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, audience


def test_dashboard_requiring_a_token_refuses_forgeries(start_stack, keys_dir, token_for, attacker):
    """With PAGI_BFF_DASHBOARD_REQUIRE_TOKEN the frontend edge is a protected door too."""
    stack = start_stack(services=["bff"], PAGI_BFF_DASHBOARD_REQUIRE_TOKEN="true")
    url = f"{stack.settings.url_of('bff')}/api/v1/agi/dashboard-data"
    genuine = httpx.get(url, headers={"Authorization": f"Bearer {token_for('bff')}"}, timeout=15)
    assert genuine.status_code == 200, genuine.text
    failures = []
    with httpx.Client(timeout=15, trust_env=False) as client:
        for what, token in [("no token", ""), *forged_tokens(keys_dir, "bff", "agent", attacker)]:
            value = f"Bearer {token}".encode("latin-1", "replace").replace(b"\x00", b"0")
            headers = {"Authorization": value} if token else {}
            try:
                response = client.get(url, headers=headers)
            except httpx.LocalProtocolError:
                continue
            if len(token) > TRANSPORT_HEADER_LIMIT and 400 <= response.status_code < 500:
                continue
            if response.status_code != 401:
                failures.append(f"{what}: {response.status_code} {response.text[:200]}")
    assert not failures, "\n".join(failures)
