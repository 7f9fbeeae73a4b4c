"""The memory service as a real process: durability across kill -9, restarts and faults.

On both backends (SQLite, and a real PostgreSQL server), but the read-only
file system, which only SQLite has.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from pagi.health import check_service
from pagi.settings import CommonSettings
from pagi.stack import Stack
from testing.memory_backends import BACKENDS, Backend, make_backend
from testing.stack import REPO, in_private_mount_namespace, launch_stack, stack_env

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Backend:
    return make_backend(request.param, tmp_path_factory.mktemp("memory-db"))


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, keys_dir: Path, backend: Backend
) -> Iterator[Stack]:
    env = stack_env(tmp_path_factory.mktemp("memory-e2e"), keys_dir, **backend.env())
    running = launch_stack(env, ["memory"])
    yield running
    running.stop()


@pytest.fixture(scope="module")
def url(stack: Stack) -> str:
    return stack.settings.url_of("memory")


@pytest.fixture
def auth(token_for: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for('memory')}"}


def restart(stack: Stack, sig: int = signal.SIGTERM) -> None:
    stack.stop_service("memory", sig=sig)
    stack.start_service("memory")
    stack.wait_healthy("memory", timeout=30)


def test_records_survive_a_restart(stack: Stack, url: str, auth) -> None:
    written = httpx.post(
        f"{url}/api/v1/memory", json={"kind": "note", "content": {"keep": [1, 2]}}, headers=auth
    )
    assert written.status_code == 201
    restart(stack)
    latest = httpx.get(f"{url}/memory/latest", headers=auth).json()["record"]
    assert latest["id"] == written.json()["id"]
    assert latest["content"] == {"keep": [1, 2]}


def test_acknowledged_writes_survive_kill_9_during_a_burst(stack: Stack, url: str, auth) -> None:
    acknowledged: dict[str, dict] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(number: int) -> None:
        with httpx.Client(base_url=url, headers=auth, timeout=5) as client:
            sequence = 0
            while not stop.is_set():
                content = {"writer": number, "sequence": sequence}
                try:
                    response = client.post(
                        "/api/v1/memory", json={"kind": "burst", "content": content}
                    )
                except httpx.HTTPError:
                    return  # the service is gone: nothing more is acknowledged
                if response.status_code == 201:
                    with lock:
                        acknowledged[response.json()["id"]] = content
                sequence += 1

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in writers:
        thread.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 150 and time.monotonic() < deadline:
        time.sleep(0.01)
    stack.stop_service("memory", sig=signal.SIGKILL)  # mid-burst, writes in flight
    stop.set()
    for thread in writers:
        thread.join(timeout=10)
    assert len(acknowledged) >= 150

    stack.start_service("memory")
    stack.wait_healthy("memory", timeout=30)
    listed = httpx.get(
        f"{url}/api/v1/memory", params={"limit": 1000, "kind": "burst"}, headers=auth
    ).json()
    stored = {record["id"]: record["content"] for record in listed["records"]}
    lost = {rid: content for rid, content in acknowledged.items() if stored.get(rid) != content}
    assert not lost, f"{len(lost)} acknowledged writes lost after kill -9"


def test_locked_database_is_a_clear_503(stack: Stack, url: str, auth, backend: Backend) -> None:
    with backend.locked():
        started = time.monotonic()
        response = httpx.post(
            f"{url}/api/v1/memory", json={"kind": "note", "content": 1}, headers=auth, timeout=10
        )
        elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.json() | {"request_id": None} == {
        "error": "database_unavailable",
        "detail": "database is locked",
        "request_id": None,
    }
    assert elapsed < 5
    after = httpx.post(f"{url}/api/v1/memory", json={"kind": "note", "content": 2}, headers=auth)
    assert after.status_code == 201


def _start_on_read_only_dir(env: dict[str, str], state_dir: Path) -> subprocess.Popen[bytes]:
    """The memory service in its own mount namespace where ``state_dir`` is read-only."""
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    return subprocess.Popen(
        in_private_mount_namespace(script, str(state_dir), sys.executable, "-m", "memory"),
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a private read-only bind mount")
def test_read_only_file_system_is_a_clear_503(
    tmp_path: Path, keys_dir: Path, token_for: Callable[..., str]
) -> None:
    env = stack_env(tmp_path / "state", keys_dir)
    settings = CommonSettings(
        _env_file=None, memory_url=env["MEMORY_URL"], memory_mock_port=env["MEMORY_MOCK_PORT"]
    )
    auth = {"Authorization": f"Bearer {token_for('memory')}"}
    url = env["MEMORY_URL"]
    writable = Stack(env=env, services=["memory"], cwd=REPO)
    writable.start(timeout=60)
    try:
        assert (
            httpx.post(
                f"{url}/api/v1/memory", json={"kind": "note", "content": "before"}, headers=auth
            ).status_code
            == 201
        )
    finally:
        writable.stop()

    process = _start_on_read_only_dir(env, tmp_path / "state")
    try:
        deadline = time.monotonic() + 30
        while not check_service("memory", settings)["ok"]:
            assert process.poll() is None, "memory died on a read-only file system"
            assert time.monotonic() < deadline, "memory did not start on a read-only file system"
            time.sleep(0.1)
        write = httpx.post(
            f"{url}/api/v1/memory", json={"kind": "note", "content": "after"}, headers=auth
        )
        assert write.status_code == 503, write.text
        assert write.json()["detail"] == "database is read-only"
        read = httpx.get(f"{url}/memory/latest", headers=auth)
        assert read.status_code in (200, 503), read.text
        assert read.headers["content-type"] == "application/json"
        health = httpx.get(f"{url}/health").json()
        assert health["status"] == "ok" and health["database"] == "database is read-only"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
