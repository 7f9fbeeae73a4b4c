"""The memory fuzzed through its API, on both backends, against a model of what it must do.

hypothesis draws sequences of operations (appends of any JSON content, of
arbitrary and hostile kinds; latest; lists with any limit and kind filter,
valid or not; runs written, finished, rewritten, read and listed) and runs
each sequence against a fresh database of each backend. After every step the
answer must be what a plain model predicts (a list of the appended records,
a table of runs): the same records newest first, content exactly as
written, a finished run never changing, 4xx (never 5xx) for what the API
refuses. SQLite and PostgreSQL thus behave the same on every input
hypothesis finds.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memory.app import create_app
from memory.settings import MemorySettings
from testing.memory_backends import BACKENDS, make_backend

MAX_CONTENT = 4096

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
good_kinds = st.from_regex(r"[a-z0-9_.\-]{1,12}", fullmatch=True)
any_kinds = good_kinds | st.text(max_size=70)

appends = st.tuples(st.just("append"), any_kinds, json_values)
latests = st.tuples(st.just("latest"), st.none(), st.none())
lists = st.tuples(
    st.just("list"),
    st.none() | good_kinds | st.text(max_size=70),
    st.integers(min_value=-5, max_value=1100) | st.text(max_size=5),
)
run_ids = st.sampled_from(["run-a", "run-b", "run-c"])
run_bodies = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["running", "running", "completed", "failed"]),
        "summary": st.dictionaries(st.text(max_size=4), json_values, max_size=2),
        "document": st.dictionaries(st.text(max_size=4), json_values, max_size=3),
    }
)
run_puts = st.tuples(st.just("put_run"), run_ids, run_bodies)
# Ids as they can appear in a URL path: valid ones, and ones the API refuses
# (a leading '_', more than 64 characters); never '.' or '..', which a client
# resolves away before sending.
any_run_ids = st.from_regex(r"[A-Za-z0-9_:\-][A-Za-z0-9_.:\-]{0,69}", fullmatch=True)
run_gets = st.tuples(st.just("get_run"), run_ids | any_run_ids, st.none())
run_lists = st.tuples(
    st.just("list_runs"), st.none() | st.sampled_from(["running", "completed"]), st.integers(1, 5)
)
operations = st.lists(
    appends | latests | lists | run_puts | run_gets | run_lists, min_size=1, max_size=12
)


class RunModel:
    """The runs the service acknowledged: id -> last body, in creation order."""

    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}
        self.created: list[str] = []

    async def check(self, client: httpx.AsyncClient, headers: dict[str, str], step: tuple) -> None:
        action, run_id, value = step
        if action == "put_run":
            response = await client.put(f"/memory/runs/{run_id}", json=value, headers=headers)
            assert response.status_code < 500, response.text
            if response.status_code in (413, 422):
                return  # content the API refuses (checked for records); nothing stored
            stored = self.runs.get(run_id)
            if stored is None:
                assert response.status_code == 201, response.text
                self.created.append(run_id)
            elif stored["status"] != "running" and stored != value:
                assert response.status_code == 409, response.text
                assert response.json()["error"] == "run_finished"
                return
            else:
                assert response.status_code == 200, response.text
            self.runs[run_id] = value
        elif action == "get_run":
            response = await client.get(f"/memory/runs/{run_id}", headers=headers)
            assert response.status_code < 500, response.text
            if run_id not in self.runs:
                assert response.status_code in (404, 422), response.text
                return
            run = response.json()["run"]
            expected = self.runs[run_id]
            assert {k: run[k] for k in ("status", "summary", "document")} == expected
        else:
            params: dict[str, Any] = {"limit": value}
            if run_id is not None:
                params["status"] = run_id
            response = await client.get("/memory/runs", params=params, headers=headers)
            assert response.status_code == 200, response.text
            expected_ids = [
                rid
                for rid in reversed(self.created)
                if run_id is None or self.runs[rid]["status"] == run_id
            ][:value]
            assert [run["id"] for run in response.json()["runs"]] == expected_ids


def _valid_kind(kind: str) -> bool:
    return 1 <= len(kind) <= 64 and all(
        c in "abcdefghijklmnopqrstuvwxyz0123456789_.-" for c in kind
    )


async def _check_sequence(
    client: httpx.AsyncClient, headers: dict[str, str], steps: list[tuple[str, Any, Any]]
) -> None:
    model: list[dict[str, Any]] = []  # the records the service acknowledged, oldest first
    runs = RunModel()
    for action, kind, value in steps:
        if action in ("put_run", "get_run", "list_runs"):
            await runs.check(client, headers, (action, kind, value))
        elif action == "append":
            response = await client.post(
                "/api/v1/memory", json={"kind": kind, "content": value}, headers=headers
            )
            assert response.status_code < 500, response.text
            if not _valid_kind(kind):
                assert response.status_code == 422, response.text
                continue
            if response.status_code in (413, 422):
                assert response.json()["error"] in ("content_too_large", "invalid_content")
                continue
            assert response.status_code == 201, response.text
            stored = response.json()
            assert stored["content"] == value and stored["kind"] == kind
            if model:
                assert int(stored["id"]) > int(model[-1]["id"])
                assert stored["created_at"] >= model[-1]["created_at"]
            model.append({k: stored[k] for k in ("id", "kind", "content", "created_at")})
        elif action == "latest":
            response = await client.get("/memory/latest", headers=headers)
            assert response.status_code == 200, response.text
            assert response.json()["record"] == (model[-1] if model else None)
        else:
            params: dict[str, Any] = {"limit": value}
            if kind is not None:
                params["kind"] = kind
            response = await client.get("/api/v1/memory", params=params, headers=headers)
            assert response.status_code < 500, response.text
            valid_limit = isinstance(value, int) and 1 <= value <= 1000
            if not valid_limit or (kind is not None and not _valid_kind(kind)):
                assert response.status_code == 422, response.text
                continue
            assert response.status_code == 200, response.text
            expected = [r for r in reversed(model) if kind is None or r["kind"] == kind][:value]
            assert response.json()["records"] == expected


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_the_api_answers_as_the_model_predicts(
    backend_name: str, tmp_path: Path, keys_dir: Path, token_for: Callable[..., str]
) -> None:
    headers = {"Authorization": f"Bearer {token_for('memory')}"}

    @settings(
        max_examples=40,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(steps=operations)
    def check(steps: list[tuple[str, Any, Any]]) -> None:
        backend = make_backend(backend_name, tmp_path / uuid.uuid4().hex)
        app = create_app(
            MemorySettings(
                _env_file=None,
                pagi_state_dir=tmp_path,
                pagi_keys_dir=keys_dir,
                pagi_memory_max_content_bytes=MAX_CONTENT,
                # Generous: on a busy machine an answer must not turn into a 503 here.
                pagi_memory_busy_timeout_seconds=5,
                **backend.settings_fields(),
            )
        )

        async def run() -> None:
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://m") as client:
                    await _check_sequence(client, headers, steps)

        asyncio.run(run())

    check()
