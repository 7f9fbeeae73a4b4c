"""Agent runs in the memory service: written while they go on, final once finished.

On both backends (SQLite, and a real PostgreSQL server).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from memory.app import create_app
from memory.settings import MemorySettings
from memory.store import RunFinished
from testing.memory_backends import BACKENDS, Backend, make_backend

MAX_RUN = 8192


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    made = make_backend(request.param, tmp_path)
    yield made
    await made.close_all()


@pytest.fixture
async def client(
    tmp_path: Path, keys_dir: Path, backend: Backend
) -> AsyncIterator[httpx.AsyncClient]:
    settings = MemorySettings(
        _env_file=None,
        pagi_state_dir=tmp_path,
        pagi_keys_dir=keys_dir,
        pagi_memory_max_run_bytes=MAX_RUN,
        pagi_memory_max_runs=5,
        pagi_memory_busy_timeout_seconds=0.3,
        **backend.settings_fields(),
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://memory") as http:
            yield http


@pytest.fixture
def auth(token_for: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for('memory', sub='agent')}"}


def run_body(status: str = "running", steps: int = 0, goal: str = "add 2 and 2") -> dict:
    return {
        "status": status,
        "summary": {"goal": goal, "steps": steps},
        "document": {"goal": goal, "steps": [{"n": n} for n in range(steps)]},
    }


async def test_a_run_is_created_updated_and_read_back(client: httpx.AsyncClient, auth) -> None:
    created = await client.put("/memory/runs/run-1", json=run_body(), headers=auth)
    assert created.status_code == 201, created.text
    first = created.json()
    assert first["created"] is True and first["status"] == "running"
    assert "document" not in first

    updated = await client.put("/memory/runs/run-1", json=run_body("completed", 2), headers=auth)
    assert updated.status_code == 200
    second = updated.json()
    assert second["created"] is False
    assert second["created_at"] == first["created_at"]
    assert second["updated_at"] >= first["updated_at"]

    read = await client.get("/memory/runs/run-1", headers=auth)
    assert read.status_code == 200
    run = read.json()["run"]
    assert run["status"] == "completed"
    assert run["summary"] == {"goal": "add 2 and 2", "steps": 2}
    assert run["document"]["steps"] == [{"n": 0}, {"n": 1}]


async def test_a_finished_run_never_changes(client: httpx.AsyncClient, auth) -> None:
    final = run_body("completed", 1)
    await client.put("/memory/runs/r", json=final, headers=auth)
    again = await client.put("/memory/runs/r", json=final, headers=auth)
    assert again.status_code == 200  # a retried final write is answered as stored
    for other in (run_body("running"), run_body("completed", 3), run_body("cancelled", 1)):
        refused = await client.put("/memory/runs/r", json=other, headers=auth)
        assert refused.status_code == 409
        assert refused.json()["error"] == "run_finished"
    stored = (await client.get("/memory/runs/r", headers=auth)).json()["run"]
    assert stored["document"] == final["document"]


async def test_list_is_newest_first_with_limit_status_and_retention(
    client: httpx.AsyncClient, auth
) -> None:
    for n in range(7):
        status = "completed" if n % 2 else "running"
        await client.put(f"/memory/runs/run-{n}", json=run_body(status, n), headers=auth)
    # Updating an old run does not move it: the list is in order of creation.
    await client.put("/memory/runs/run-4", json=run_body("stopped", 4), headers=auth)
    listed = (await client.get("/memory/runs", params={"limit": 3}, headers=auth)).json()
    assert listed["count"] == 3
    assert [r["id"] for r in listed["runs"]] == ["run-6", "run-5", "run-4"]
    assert all("document" not in r for r in listed["runs"])
    everything = (await client.get("/memory/runs", params={"limit": 100}, headers=auth)).json()
    # Retention keeps the five newest runs.
    assert [r["id"] for r in everything["runs"]] == [f"run-{n}" for n in (6, 5, 4, 3, 2)]
    finished = await client.get("/memory/runs", params={"status": "completed"}, headers=auth)
    assert [r["id"] for r in finished.json()["runs"]] == ["run-5", "run-3"]


async def test_unknown_run_is_404(client: httpx.AsyncClient, auth) -> None:
    response = await client.get("/memory/runs/nope", headers=auth)
    assert response.status_code == 404
    assert response.json()["error"] == "run_not_found"


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/memory/runs/bad%20id", run_body(), 422),
        ("/memory/runs/" + "x" * 65, run_body(), 422),
        ("/memory/runs/ok", {**run_body(), "status": "Running!"}, 422),
        ("/memory/runs/ok", {**run_body(), "extra": 1}, 422),
        ("/memory/runs/ok", {**run_body(), "summary": [1]}, 422),
        ("/memory/runs/ok", {**run_body(), "document": "text"}, 422),
        ("/memory/runs/ok", {"status": "running", "summary": {}}, 422),
        ("/memory/runs/ok", {**run_body(), "summary": {"t": "x" * 5000}}, 413),
        ("/memory/runs/ok", {**run_body(), "document": {"t": "x" * MAX_RUN}}, 413),
    ],
)
async def test_bad_writes_are_clear_4xx(
    client: httpx.AsyncClient, auth, path: str, body: dict, status: int
) -> None:
    response = await client.put(path, json=body, headers=auth)
    assert response.status_code == status, response.text
    assert "error" in response.json()
    assert (await client.get("/memory/runs", headers=auth)).json()["count"] == 0


async def test_non_json_values_are_refused(client: httpx.AsyncClient, auth) -> None:
    raw = '{"status": "running", "summary": {}, "document": {"x": NaN}}'
    response = await client.put(
        "/memory/runs/ok", content=raw, headers={**auth, "Content-Type": "application/json"}
    )
    assert response.status_code == 422


async def test_runs_need_a_token(client: httpx.AsyncClient) -> None:
    for method, path in (
        ("PUT", "/memory/runs/a"),
        ("GET", "/memory/runs/a"),
        ("GET", "/memory/runs"),
    ):
        response = await client.request(method, path, json=run_body())
        assert response.status_code == 401, (method, path)


async def test_locked_database_is_503(client: httpx.AsyncClient, auth, backend: Backend) -> None:
    with backend.locked("runs"):
        response = await client.put("/memory/runs/a", json=run_body(), headers=auth)
        assert response.status_code == 503
        assert response.json()["detail"] == "database is locked"
        assert response.headers["retry-after"] == "1"
    assert (await client.put("/memory/runs/a", json=run_body(), headers=auth)).status_code == 201


async def test_runs_survive_reopening_and_live_beside_records(backend: Backend) -> None:
    first = backend.store()
    await first.append("note", '"kept"')
    stored, created = await first.put_run("r1", "completed", '{"a":1}', '{"b":[2]}')
    assert created and stored.document is None
    await first.close()
    second = backend.store()
    try:
        run = await second.get_run("r1")
        assert run is not None
        assert (run.status, run.summary, run.document) == ("completed", {"a": 1}, {"b": [2]})
        assert (await second.latest()).content == "kept"
        with pytest.raises(RunFinished):
            await second.put_run("r1", "completed", '{"a":2}', '{"b":[2]}')
        assert [r.id for r in await second.list_runs(10)] == ["r1"]
        assert json.loads(json.dumps((await second.list_runs(1))[0].summary)) == {"a": 1}
    finally:
        await second.close()


async def test_replicas_writing_one_run_at_once_create_it_once(backend: Backend) -> None:
    replicas = [backend.store(busy_timeout_seconds=5) for _ in range(3)]
    for replica in replicas:
        await replica.open()
    summary, document = json.dumps({"step": 0}), json.dumps({"steps": []})
    outcomes = await asyncio.gather(
        *(
            replica.put_run(f"shared-{n}", "running", summary, document)
            for n in range(10)
            for replica in replicas
        )
    )
    created = [stored.id for stored, was_created in outcomes if was_created]
    assert sorted(created) == sorted(f"shared-{n}" for n in range(10)), "created once each"
    listed = await replicas[0].list_runs(100)
    assert sorted(run.id for run in listed) == sorted(set(created))
    # One replica finishes a run; from then on every replica refuses to change it.
    await replicas[1].put_run("shared-0", "completed", summary, document)
    for replica in replicas:
        with pytest.raises(RunFinished):
            await replica.put_run("shared-0", "running", summary, document)
        run = await replica.get_run("shared-0")
        assert run is not None and run.status == "completed"


async def test_other_methods_name_both_served_ones(client: httpx.AsyncClient, auth) -> None:
    for method in ("POST", "DELETE", "PATCH", "OPTIONS"):
        response = await client.request(method, "/memory/runs/a", headers=auth)
        assert response.status_code == 405
        assert response.headers["allow"] == "GET, PUT"
