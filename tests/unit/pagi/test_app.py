"""The service app factory: health, JSON errors, request ids, body limits, auth."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from fastapi import Request
from pydantic import BaseModel

from pagi.app import Caller, create_app
from pagi.auth import TokenVerifier, TrustStore
from pagi.errors import ApiError
from pagi.http import create_service_client
from pagi.request_id import HEADER, MAX_LENGTH, accept_request_id


class Item(BaseModel):
    name: str


def build_app(trust: TrustStore):  # noqa: ANN201 - test helper
    app = create_app("demo", max_body_bytes=1024)
    app.state.verifier = TokenVerifier("demo", trust)

    @app.post("/items")
    async def create(item: Item, caller: Caller) -> dict:
        return {"name": item.name, "caller": caller.subject}

    @app.get("/boom")
    async def boom() -> dict:
        raise RuntimeError("secret internal detail")

    @app.get("/teapot")
    async def teapot() -> dict:
        raise ApiError(409, "conflict", "already there", hint="retry later")

    @app.get("/echo-id")
    async def echo_id(request: Request) -> dict:
        return {"id": request.headers.get(HEADER)}

    return app


@pytest.fixture
def client(trust: TrustStore) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=build_app(trust), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://demo")


async def test_health_is_open_and_follows_contract(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["service"] == "demo" and body["status"] == "ok" and body["version"]


async def test_request_id_generated_and_echoed(client: httpx.AsyncClient) -> None:
    generated = (await client.get("/health")).headers[HEADER]
    assert len(generated) >= 16
    kept = await client.get("/health", headers={HEADER: "abc-123"})
    assert kept.headers[HEADER] == "abc-123"


@pytest.mark.parametrize("bad", ["x" * (MAX_LENGTH + 1), "a b", "a\tb", "ümlaut", "<script>"])
def test_malformed_request_ids_replaced(bad: str) -> None:
    assert accept_request_id(bad) != bad
    assert accept_request_id(bad.encode("utf-8")) != bad


async def test_missing_token_is_401_json(client: httpx.AsyncClient) -> None:
    response = await client.post("/items", json={"name": "a"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    assert body["error"] == "unauthorized" and body["request_id"]


async def test_valid_token_accepted(
    client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    response = await client.post(
        "/items",
        json={"name": "a"},
        headers={"Authorization": f"Bearer {token_for('demo', sub='agent')}"},
    )
    assert response.status_code == 200
    assert response.json() == {"name": "a", "caller": "agent"}


async def test_validation_error_is_422_json(
    client: httpx.AsyncClient, token_for: Callable[..., str]
) -> None:
    auth = {"Authorization": f"Bearer {token_for('demo')}"}
    for body in (b"not json", b"[]", b'{"name": 5}', b"\xff\xfe"):
        response = await client.post("/items", content=body, headers=auth)
        assert response.status_code == 422, body
        assert response.json()["error"] == "invalid_request"


async def test_oversized_body_is_413_before_the_route(client: httpx.AsyncClient) -> None:
    response = await client.post("/items", content=b"x" * 2048)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


async def test_crash_is_json_500_without_details(client: httpx.AsyncClient) -> None:
    response = await client.get("/boom")
    assert response.status_code == 500
    assert "secret" not in response.text
    assert response.json()["error"] == "internal_error"


async def test_api_error_carries_extra_fields(client: httpx.AsyncClient) -> None:
    response = await client.get("/teapot")
    assert response.status_code == 409
    assert response.json()["hint"] == "retry later"


async def test_unknown_route_and_method_are_json(client: httpx.AsyncClient) -> None:
    assert (await client.get("/nope")).json()["error"] == "not_found"
    assert (await client.get("/items")).json()["error"] == "method_not_allowed"


async def test_service_client_injects_token_and_request_id(
    trust: TrustStore, keys_dir, token_for
) -> None:
    from pagi.auth import TokenSigner
    from pagi.request_id import request_id_var

    app = build_app(trust)
    signer = TokenSigner.from_keys_dir(keys_dir, "bff")
    client = create_service_client("http://demo", "demo", signer, 2.0)
    client._transport = httpx.ASGITransport(app=app)  # route the real client into the app
    token = request_id_var.set("rid-42")
    try:
        response = await client.post("/items", json={"name": "z"})
        echoed = await client.get("/echo-id")
    finally:
        request_id_var.reset(token)
        await client.aclose()
    assert response.json()["caller"] == "bff"
    assert echoed.json()["id"] == "rid-42"
