"""hypothesis against execute_tool: whatever the body, a clear status and a JSON answer.

The runner is the stand-in of ``test_app.py``; what is fuzzed here is the
service's own handling of bodies: parsing, authorization, code rules and
the audit record each request leaves.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio.from_thread
import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox.app import create_app
from sandbox.settings import SandboxSettings
from tests.unit.sandbox.test_app import DEFAULT_POLICY, FakeRunner

EXPECTED = {200, 400, 403, 404, 413, 422}
SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class BlockingClient:
    """The app over httpx's ASGI transport, called from hypothesis' synchronous tests.

    An event loop in a thread of its own (anyio's blocking portal) runs the
    app's lifespan and every request, as starlette's TestClient would.
    """

    def __init__(self, portal: anyio.from_thread.BlockingPortal, app: FastAPI) -> None:
        self.portal = portal
        self.app = app
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://sandbox"
        )

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.portal.call(lambda: self._client.post(path, **kwargs))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, keys_dir: Path) -> Iterator[BlockingClient]:
    root = tmp_path_factory.mktemp("sandbox-fuzz")
    policy = root / "sandbox.toml"
    shutil.copy(DEFAULT_POLICY, policy)
    settings_ = SandboxSettings(
        _env_file=None, pagi_sandbox_policy=policy, pagi_state_dir=root, pagi_keys_dir=keys_dir
    )
    app = create_app(settings_, runner=FakeRunner())
    with anyio.from_thread.start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(app.router.lifespan_context(app)):
            yield BlockingClient(portal, app)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"tool_name": st.one_of(st.sampled_from(["demo", "python", "nope", ""]), st.text())},
        optional={
            "code": st.one_of(
                st.none(),
                st.text(max_size=200),
                st.integers(),
                st.builds(lambda n: "#" * n, st.integers(min_value=60_000, max_value=70_000)),
            ),
            "extra": json_values,
        },
    ),
)
subjects = st.sampled_from(["operator", "agent", "bff", "memory"])


@SETTINGS
@given(body=bodies, subject=subjects)
def test_any_body_gets_a_clear_status_and_an_audit_record(client, token_for, body, subject):
    audit = Path(client.app.state.sandbox.audit.path)  # type: ignore[attr-defined]
    before = len(audit.read_text().splitlines()) if audit.exists() else 0
    response = client.post(
        "/api/v1/execute_tool",
        content=json.dumps(body),
        headers={"Authorization": f"Bearer {token_for('sandbox', sub=subject)}"},
    )
    assert response.status_code in EXPECTED, response.text
    answer: Any = response.json()
    if response.status_code == 200:
        assert set(answer) == {"tool_status", "result"}
    else:
        assert answer["error"] and answer["request_id"]
    records = audit.read_text().splitlines()
    assert len(records) == before + 1
    assert json.loads(records[-1])["status"] == response.status_code


@SETTINGS
@given(raw=st.binary(max_size=300))
def test_any_bytes_get_a_clear_status(client, token_for, raw):
    response = client.post(
        "/api/v1/execute_tool",
        content=raw,
        headers={"Authorization": f"Bearer {token_for('sandbox')}"},
    )
    assert response.status_code in EXPECTED
    assert "error" in response.json() or response.status_code == 200
