"""The memory HTTP API: tokens, validation, records, and 503 when the database fails.

Every test runs on both backends (SQLite and a real PostgreSQL server) unless
it is about one of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from memory.app import create_app
from memory.settings import MemorySettings
from pagi.settings import describe_invalid_settings
from testing.memory_backends import BACKENDS, Backend, make_backend
from testing.postgres_server import shared_server
from testing.stack import free_port

MAX_CONTENT = 2048


def make_settings(state_dir: Path, keys_dir: Path, **fields: object) -> MemorySettings:
    return MemorySettings(
        _env_file=None,
        pagi_state_dir=state_dir,
        pagi_keys_dir=keys_dir,
        pagi_memory_max_content_bytes=MAX_CONTENT,
        pagi_memory_busy_timeout_seconds=0.3,
        **fields,
    )


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return make_backend(request.param, tmp_path)


@pytest.fixture
async def client(
    tmp_path: Path, keys_dir: Path, backend: Backend
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(tmp_path, keys_dir, **backend.settings_fields()))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://memory") as http:
            yield http


@pytest.fixture
def auth(token_for: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for('memory', sub='bff')}"}


async def test_latest_is_explicitly_empty_at_first(client: httpx.AsyncClient, auth) -> None:
    response = await client.get("/memory/latest", headers=auth)
    assert response.status_code == 200
    assert response.json() == {"service": "memory", "record": None}


async def test_write_is_answered_with_the_stored_record(client: httpx.AsyncClient, auth) -> None:
    content = {"steps": ["look", "act"], "score": 0.5, "ok": True, "none": None}
    written = await client.post(
        "/api/v1/memory", json={"kind": "plan", "content": content}, headers=auth
    )
    assert written.status_code == 201
    record = written.json()
    assert record["service"] == "memory"
    assert record["kind"] == "plan"
    assert record["content"] == content
    assert record["id"] and record["created_at"].endswith("+00:00")
    latest = (await client.get("/memory/latest", headers=auth)).json()
    assert latest["record"] == {k: record[k] for k in ("id", "kind", "content", "created_at")}


@pytest.mark.parametrize("content", [None, 0, "text", [1, [2, [3]]], {"é": "ü ✓"}])
async def test_content_may_be_any_json_value(client: httpx.AsyncClient, auth, content) -> None:
    written = await client.post(
        "/api/v1/memory", json={"kind": "x", "content": content}, headers=auth
    )
    assert written.status_code == 201, written.text
    latest = (await client.get("/memory/latest", headers=auth)).json()
    assert latest["record"]["content"] == content


async def test_list_is_newest_first_with_limit_and_kind(client: httpx.AsyncClient, auth) -> None:
    for n in range(5):
        kind = "even" if n % 2 == 0 else "odd"
        await client.post("/api/v1/memory", json={"kind": kind, "content": n}, headers=auth)
    listed = (await client.get("/api/v1/memory", params={"limit": 3}, headers=auth)).json()
    assert listed["count"] == 3
    assert [r["content"] for r in listed["records"]] == [4, 3, 2]
    odd = (await client.get("/api/v1/memory", params={"kind": "odd"}, headers=auth)).json()
    assert [r["content"] for r in odd["records"]] == [3, 1]


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "abc", "1.5", ""])
async def test_bad_limit_is_422(client: httpx.AsyncClient, auth, limit: str) -> None:
    response = await client.get("/api/v1/memory", params={"limit": limit}, headers=auth)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    "body",
    [
        {"content": 1},
        {"kind": "plan"},
        {"kind": "", "content": 1},
        {"kind": "Upper", "content": 1},
        {"kind": "x" * 65, "content": 1},
        {"kind": "with space", "content": 1},
        {"kind": 7, "content": 1},
        {"kind": "plan", "content": 1, "extra": True},
        [],
        "plan",
    ],
)
async def test_invalid_records_are_422(client: httpx.AsyncClient, auth, body) -> None:
    response = await client.post("/api/v1/memory", json=body, headers=auth)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"kind": "x", "content": NaN}',
        b'{"kind": "x", "content": [Infinity]}',
        b'{"kind": "x", "content": "\\ud800"}',
        b'{"kind": "x", "content": ' + b"[" * 100 + b"]" * 100 + b"}",
    ],
)
async def test_content_that_is_not_plain_json_is_422(client: httpx.AsyncClient, auth, raw) -> None:
    headers = {**auth, "Content-Type": "application/json"}
    response = await client.post("/api/v1/memory", content=raw, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_content"


async def test_oversized_content_is_413(client: httpx.AsyncClient, auth) -> None:
    response = await client.post(
        "/api/v1/memory", json={"kind": "x", "content": "a" * (MAX_CONTENT + 1)}, headers=auth
    )
    assert response.status_code == 413
    assert response.json()["error"] == "content_too_large"
    huge = await client.post(
        "/api/v1/memory", json={"kind": "x", "content": "a" * (10 * MAX_CONTENT)}, headers=auth
    )
    assert huge.status_code == 413


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/memory/latest", None),
        ("GET", "/api/v1/memory", None),
        ("POST", "/api/v1/memory", {"kind": "x", "content": 1}),
    ],
)
async def test_every_endpoint_but_health_needs_a_memory_token(
    client: httpx.AsyncClient, token_for, method: str, path: str, body
) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer nonsense"},
        {"Authorization": f"Bearer {token_for('bff')}"},
        {"Authorization": f"Bearer {token_for('memory')[:-3]}AAA"},
    ):
        response = await client.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.json()["error"] == "unauthorized"
    good = {"Authorization": f"Bearer {token_for('memory')}"}
    listed = await client.get("/api/v1/memory", headers=good)
    assert listed.json()["count"] == 0, "a refused write must not be stored"


async def test_health_is_open_and_reports_the_database(
    client: httpx.AsyncClient, backend: Backend
) -> None:
    body = (await client.get("/health")).json()
    assert body["service"] == "memory" and body["status"] == "ok"
    assert body["database"] == "ok"
    assert body["database_backend"] == backend.name


async def test_locked_database_is_503_json(
    tmp_path: Path, keys_dir: Path, auth, backend: Backend
) -> None:
    app = create_app(make_settings(tmp_path, keys_dir, **backend.settings_fields()))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://memory") as http:
            with backend.locked():
                response = await http.post(
                    "/api/v1/memory", json={"kind": "x", "content": 1}, headers=auth
                )
            assert response.status_code == 503
            assert response.json()["error"] == "database_unavailable"
            assert response.json()["detail"] == "database is locked"
            assert response.headers["retry-after"] == "1"
            assert (await http.get("/health")).json()["database"] == "database is locked"
            retried = await http.post(
                "/api/v1/memory", json={"kind": "x", "content": 1}, headers=auth
            )
            assert retried.status_code == 201


async def _all_routes_503(http: httpx.AsyncClient, auth: dict[str, str], detail: str) -> None:
    for method, path, body in (
        ("GET", "/memory/latest", None),
        ("GET", "/api/v1/memory", None),
        ("POST", "/api/v1/memory", {"kind": "x", "content": 1}),
    ):
        response = await http.request(method, path, json=body, headers=auth)
        assert response.status_code == 503, response.text
        assert response.json()["detail"] == detail
        assert response.headers["retry-after"] == "1"
    health = await http.get("/health")
    assert health.status_code == 200
    assert health.json()["database"] == detail


async def test_unusable_data_dir_is_503_and_the_service_keeps_serving(
    tmp_path: Path, keys_dir: Path, auth
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    app = create_app(make_settings(tmp_path, keys_dir, pagi_memory_db=blocker / "memory.db"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://memory") as http:
            await _all_routes_503(http, auth, "database file cannot be opened")


async def test_unreachable_postgresql_is_503_and_the_service_keeps_serving(
    tmp_path: Path, keys_dir: Path, auth
) -> None:
    url = f"postgresql://pagi:secret-password@127.0.0.1:{free_port()}/memory"
    app = create_app(make_settings(tmp_path, keys_dir, memory_database_url=url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://memory") as http:
            await _all_routes_503(http, auth, "database is unreachable")
            assert (await http.get("/health")).json()["database_backend"] == "postgresql"


async def test_postgresql_is_used_only_when_the_url_names_it(tmp_path: Path) -> None:
    server = shared_server()
    assert make_settings(tmp_path, tmp_path).memory_database_url is None
    for scheme in ("postgresql", "postgres"):
        url = server.url("memory").replace("postgresql://", f"{scheme}://")
        settings = make_settings(tmp_path, tmp_path, memory_database_url=url)
        assert settings.memory_database_url is not None
        assert settings.memory_database_url.get_secret_value() == url
        assert server.password not in repr(settings)
    # Empty means unset: SQLite.
    assert make_settings(tmp_path, tmp_path, memory_database_url="").memory_database_url is None


@pytest.mark.parametrize(
    "url",
    [
        "mysql://user:hunter2-secret@db/memory",
        "sqlite:///var/lib/memory.db",
        "/var/lib/memory.db",
        "postgresql://user:hunter2-secret@db:notaport/memory?sslmode=nonsense x",
    ],
)
def test_a_database_url_that_is_not_postgresql_is_refused_without_echoing_it(
    tmp_path: Path, url: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        make_settings(tmp_path, tmp_path, memory_database_url=url)
    message = describe_invalid_settings(refused.value)
    assert "MEMORY_DATABASE_URL" in message
    assert "hunter2" not in message and url not in message


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
async def test_other_methods_are_405_naming_both_allowed(
    client: httpx.AsyncClient, auth, method: str
) -> None:
    response = await client.request(method, "/api/v1/memory", headers=auth)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    assert response.json()["error"] == "method_not_allowed"
