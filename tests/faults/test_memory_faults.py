"""The memory service's database under crashes, locks and read-only storage.

- kill -9 in the middle of a write burst: every write that was answered
  201 is there after the restart (and is counted);
- a database locked by another process: 503 with Retry-After within the
  busy timeout, never 500; writes succeed again once the lock is gone;
- a read-only database or one that cannot be created: 503, never 500, and
  the service keeps answering ``/health``;
- PostgreSQL restarted (cleanly, or killed) under a write load through two
  memory replicas: only 201s and clear 503s, no request hangs, the replicas
  recover by themselves, every acknowledged write is there exactly once;
  a database down when the service starts is used as soon as it is up.

The kill -9 and lock tests run on both backends (SQLite, PostgreSQL).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from pagi.stack import Stack
from testing.live import recent_logs, service_pid, start_live_stack
from testing.memory_backends import BACKENDS, Backend, make_backend
from testing.postgres_server import PostgresServer

WRITERS = 8
MAX_WRITES = 900
"""Below the list endpoint's limit (1000), so one listing reads them all back."""
KILL_AFTER_SECONDS = 0.8
BUSY_TIMEOUT = 1.0


def memory_stack(state: Path, keys_dir: Path, **env: str) -> Stack:
    return start_live_stack(
        state,
        keys_dir,
        services=["memory"],
        PAGI_MEMORY_BUSY_TIMEOUT_SECONDS=str(BUSY_TIMEOUT),
        **env,
    )


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return make_backend(request.param, tmp_path)


@pytest.fixture
def memory(tmp_path: Path, keys_dir: Path, backend: Backend) -> Iterator[Stack]:
    stack = memory_stack(tmp_path / "state", keys_dir, **backend.env())
    yield stack
    stack.stop()


def _auth(token_for) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for('memory')}"}


async def _write_burst(base_url: str, headers: dict[str, str], kind: str) -> tuple[set[int], int]:
    """Write until the service dies (or MAX_WRITES); return the acknowledged numbers."""
    acknowledged: set[int] = set()
    attempted = 0
    numbers = iter(range(MAX_WRITES))

    async def writer(client: httpx.AsyncClient) -> None:
        nonlocal attempted
        for number in numbers:
            attempted += 1
            try:
                response = await client.post(
                    "/api/v1/memory", json={"kind": kind, "content": {"n": number}}
                )
            except httpx.HTTPError:
                return  # the service is gone
            if response.status_code == 201:
                acknowledged.add(number)
            else:
                raise AssertionError(f"write answered {response.status_code}: {response.text}")

    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=10, trust_env=False
    ) as client:
        await asyncio.gather(*(writer(client) for _ in range(WRITERS)))
    return acknowledged, attempted


def test_acknowledged_writes_survive_kill_9(memory: Stack, token_for):
    base_url = memory.settings.url_of("memory")
    headers = _auth(token_for)

    async def burst_then_kill() -> tuple[set[int], int]:
        burst = asyncio.create_task(_write_burst(base_url, headers, "burst"))
        await asyncio.sleep(KILL_AFTER_SECONDS)
        os.killpg(service_pid(memory, "memory"), signal.SIGKILL)
        return await burst

    acknowledged, attempted = asyncio.run(burst_then_kill())
    memory.stop_service("memory", sig=signal.SIGKILL)
    memory.start_service("memory")
    memory.wait_healthy("memory")
    response = httpx.get(
        f"{base_url}/api/v1/memory",
        params={"kind": "burst", "limit": 1000},
        headers=headers,
        timeout=10,
        trust_env=False,
    )
    assert response.status_code == 200, response.text
    stored = {record["content"]["n"] for record in response.json()["records"]}
    print(
        f"kill -9 during writes: attempted {attempted}, acknowledged {len(acknowledged)}, "
        f"stored after restart {len(stored)}, unacknowledged but stored "
        f"{len(stored - acknowledged)}"
    )
    assert len(acknowledged) > 0, "the burst was killed before any write was answered"
    assert len(acknowledged) < MAX_WRITES, "the kill came after the burst ended; nothing tested"
    lost = acknowledged - stored
    assert not lost, f"{len(lost)} acknowledged writes lost: {sorted(lost)[:20]}"


def test_locked_database_gives_503_then_recovers(memory: Stack, token_for, backend: Backend):
    base_url = memory.settings.url_of("memory")
    headers = _auth(token_for)
    first = httpx.post(
        f"{base_url}/api/v1/memory", json={"kind": "lock", "content": 1}, headers=headers
    )
    assert first.status_code == 201, first.text

    with backend.locked():
        started = time.monotonic()
        write = httpx.post(
            f"{base_url}/api/v1/memory",
            json={"kind": "lock", "content": 2},
            headers=headers,
            timeout=30,
        )
        elapsed = time.monotonic() - started
        read = httpx.get(f"{base_url}/memory/latest", headers=headers, timeout=30)
    print(f"locked database: write answered {write.status_code} after {elapsed:.2f}s")
    assert write.status_code == 503, write.text
    assert write.json()["error"] and "lock" in write.text.lower(), write.text
    assert write.headers.get("retry-after", "").isdigit(), write.headers
    assert elapsed < BUSY_TIMEOUT + 3.0, f"503 after {elapsed:.2f}s"
    assert read.status_code in (200, 503), read.text

    again = httpx.post(
        f"{base_url}/api/v1/memory", json={"kind": "lock", "content": 3}, headers=headers
    )
    assert again.status_code == 201, again.text


def test_database_that_cannot_be_created_gives_503(tmp_path: Path, keys_dir: Path, token_for):
    stack = memory_stack(tmp_path / "state", keys_dir, PAGI_MEMORY_DB="/proc/pagi/memory.db")
    try:
        base_url = stack.settings.url_of("memory")
        headers = _auth(token_for)
        for method, path, body in (
            ("GET", "/memory/latest", None),
            ("POST", "/api/v1/memory", {"kind": "x", "content": 1}),
            ("GET", "/api/v1/memory", None),
        ):
            response = httpx.request(method, f"{base_url}{path}", json=body, headers=headers)
            assert response.status_code == 503, (path, response.text)
            assert response.json()["error"], response.text
        health = httpx.get(f"{base_url}/health")
        assert health.status_code == 200, health.text
    finally:
        stack.stop()


class ReadOnlyDir:
    """A directory that turns read-only on :meth:`seal` (a read-only bind mount over itself)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mounted = False

    def seal(self) -> None:
        """Make the directory read-only for every process, root included."""
        for argv in (
            ["mount", "--bind", str(self.path), str(self.path)],
            ["mount", "-o", "remount,ro,bind", str(self.path)],
        ):
            result = subprocess.run(argv, capture_output=True, text=True)
            if result.returncode != 0:
                pytest.skip(f"cannot make a read-only bind mount here: {result.stderr.strip()}")
            self.mounted = True

    def release(self) -> None:
        """Undo :meth:`seal`."""
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False)
            self.mounted = False


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[ReadOnlyDir]:
    path = tmp_path / "ro"
    path.mkdir()
    directory = ReadOnlyDir(path)
    yield directory
    directory.release()


def test_read_only_database_gives_503(
    read_only_dir: ReadOnlyDir, tmp_path: Path, keys_dir, token_for
):
    db = read_only_dir.path / "memory.db"
    headers = _auth(token_for)
    stack = memory_stack(tmp_path / "state", keys_dir, PAGI_MEMORY_DB=str(db))
    try:
        stored = httpx.post(
            f"{stack.settings.url_of('memory')}/api/v1/memory",
            json={"kind": "ro", "content": 1},
            headers=headers,
        )
        assert stored.status_code == 201, stored.text
    finally:
        stack.stop()

    read_only_dir.seal()
    stack = memory_stack(tmp_path / "state2", keys_dir, PAGI_MEMORY_DB=str(db))
    base_url = stack.settings.url_of("memory")
    try:
        write = httpx.post(
            f"{base_url}/api/v1/memory",
            json={"kind": "ro", "content": 2},
            headers=headers,
            timeout=30,
        )
        read = httpx.get(f"{base_url}/memory/latest", headers=headers, timeout=30)
        health = httpx.get(f"{base_url}/health", timeout=5)
        print(f"read-only database: write {write.status_code} {write.text[:200]}")
        print(f"read-only database: read {read.status_code} {read.text[:200]}")
        assert write.status_code == 503, f"{write.text}\n{recent_logs(stack, 'memory')}"
        assert "read-only" in write.text.lower() or "readonly" in write.text.lower(), write.text
        assert read.status_code in (200, 503), read.text
        assert health.status_code == 200, health.text
    finally:
        stack.stop()


# ------------------------------------------------------- PostgreSQL restarted


RESTART_WRITERS_PER_REPLICA = 4
RESTART_LOAD_SECONDS = 6.0
RESTART_DOWN_SECONDS = 1.5
RECOVERY_DEADLINE_SECONDS = 20.0
REQUEST_DEADLINE_SECONDS = BUSY_TIMEOUT + 4.0
"""No answer may take longer: the operation timeout (busy timeout + 2 s) and some slack."""


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own: it is stopped and started mid-test."""
    server = PostgresServer()
    server.init()
    server.start()
    yield server
    server.destroy()


@dataclass
class LoadResult:
    """What the writers saw during the load."""

    acknowledged: dict[str, int]
    """Content -> record id, for every write answered 201."""
    refusals: list[str]
    """The detail of every 503."""
    slowest: float
    recovered_after: float | None
    """Seconds from the database's return to the first 201 after it."""


async def _replicated_load(
    urls: list[str], headers: dict[str, str], server: PostgresServer, crash: bool
) -> LoadResult:
    acknowledged: dict[str, int] = {}
    refusals: list[str] = []
    slowest = 0.0
    back_at: float | None = None
    recovered_at: float | None = None
    stop = asyncio.Event()

    async def writer(url: str, name: str) -> None:
        nonlocal slowest, recovered_at
        async with httpx.AsyncClient(
            base_url=url, headers=headers, timeout=30, trust_env=False
        ) as client:
            sequence = 0
            while not stop.is_set():
                content = f"{name}-{sequence}"
                sequence += 1
                started = time.monotonic()
                response = await client.post(
                    "/api/v1/memory", json={"kind": "restart", "content": content}
                )
                slowest = max(slowest, time.monotonic() - started)
                if response.status_code == 201:
                    acknowledged[content] = int(response.json()["id"])
                    if back_at is not None and recovered_at is None:
                        recovered_at = time.monotonic()
                elif response.status_code == 503:
                    assert response.headers.get("retry-after") == "1", response.headers
                    refusals.append(response.json()["detail"])
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError(f"{response.status_code}: {response.text}")

    tasks = [
        asyncio.create_task(writer(url, f"replica{r}-writer{w}"))
        for r, url in enumerate(urls)
        for w in range(RESTART_WRITERS_PER_REPLICA)
    ]
    await asyncio.sleep(RESTART_LOAD_SECONDS / 3)
    # On this thread (the server dies with the thread that started it); the
    # writers pause meanwhile, the replicas' requests in flight do not.
    server.stop("immediate" if crash else "fast")
    await asyncio.sleep(RESTART_DOWN_SECONDS)
    server.start()
    back_at = time.monotonic()
    deadline = back_at + RECOVERY_DEADLINE_SECONDS
    while recovered_at is None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(RESTART_LOAD_SECONDS / 3)
    stop.set()
    await asyncio.gather(*tasks)
    return LoadResult(
        acknowledged,
        refusals,
        slowest,
        None if recovered_at is None else recovered_at - back_at,
    )


@pytest.mark.parametrize("crash", [False, True], ids=["clean-restart", "killed"])
def test_postgres_restart_under_load_gives_503s_and_recovers(
    own_postgres: PostgresServer, tmp_path: Path, keys_dir: Path, token_for, crash: bool
) -> None:
    url = own_postgres.create_database()
    replicas = [
        memory_stack(tmp_path / f"state{n}", keys_dir, MEMORY_DATABASE_URL=url) for n in range(2)
    ]
    try:
        headers = _auth(token_for)
        result = asyncio.run(
            _replicated_load(
                [stack.settings.url_of("memory") for stack in replicas],
                headers,
                own_postgres,
                crash,
            )
        )
        print(
            f"postgres {'killed' if crash else 'restarted'} under load through 2 replicas:"
            f" {len(result.acknowledged)} writes acknowledged, {len(result.refusals)} answered"
            f" 503 ({', '.join(sorted(set(result.refusals)))}), slowest answer"
            f" {result.slowest:.2f} s, first 201 {result.recovered_after} s after the"
            " database was back"
        )
        assert result.refusals, "the database went away and no request noticed"
        assert set(result.refusals) <= {
            "database is unreachable",
            "database is restarting",
            "database did not answer in time",
        }, result.refusals
        assert result.slowest < REQUEST_DEADLINE_SECONDS, f"an answer took {result.slowest} s"
        assert result.recovered_after is not None, "no write succeeded after the restart"
        assert result.recovered_after < RECOVERY_DEADLINE_SECONDS
        for stack in replicas:
            health = httpx.get(f"{stack.settings.url_of('memory')}/health", timeout=10).json()
            assert health["database"] == "ok", health

        # Every record, read from the database itself (more than one API page).
        with psycopg.connect(url) as connection:
            stored = connection.execute(
                "SELECT content, id, created_at FROM records WHERE kind = 'restart' ORDER BY id"
            ).fetchall()
        contents = [json.loads(content) for content, _, _ in stored]
        assert len(contents) == len(set(contents)), "a write was stored twice"
        by_content = {json.loads(content): record_id for content, record_id, _ in stored}
        lost = {c: i for c, i in result.acknowledged.items() if by_content.get(c) != i}
        assert not lost, f"{len(lost)} acknowledged writes lost: {list(lost)[:10]}"
        times = [created for _, _, created in stored]
        assert times == sorted(times), "ids and times disagree on the order of commits"
        latest = httpx.get(
            f"{replicas[1].settings.url_of('memory')}/memory/latest", headers=headers, timeout=10
        ).json()["record"]
        assert int(latest["id"]) == stored[-1][1]
    finally:
        for stack in replicas:
            stack.stop()


def test_postgres_down_at_start_is_used_once_it_is_up(
    tmp_path: Path, keys_dir: Path, token_for
) -> None:
    server = PostgresServer()
    try:
        server.init()
        stack = memory_stack(
            tmp_path / "state",
            keys_dir,
            MEMORY_DATABASE_URL=server.url("postgres"),
        )
        try:
            base_url = stack.settings.url_of("memory")
            headers = _auth(token_for)
            down = httpx.post(
                f"{base_url}/api/v1/memory", json={"kind": "x", "content": 1}, headers=headers
            )
            assert down.status_code == 503, down.text
            assert down.json()["detail"] == "database is unreachable"
            assert httpx.get(f"{base_url}/health").json()["database"] == "database is unreachable"
            server.start()
            deadline = time.monotonic() + RECOVERY_DEADLINE_SECONDS
            while True:
                up = httpx.post(
                    f"{base_url}/api/v1/memory",
                    json={"kind": "x", "content": 2},
                    headers=headers,
                    timeout=30,
                )
                if up.status_code == 201:
                    break
                assert up.status_code == 503, up.text
                assert time.monotonic() < deadline, "the memory never used the database"
                time.sleep(0.2)
            latest = httpx.get(f"{base_url}/memory/latest", headers=headers).json()
            assert latest["record"]["content"] == 2
        finally:
            stack.stop()
    finally:
        server.destroy()
