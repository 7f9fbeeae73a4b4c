"""The memory's stores: durable appends, newest first, and 503-able failures.

Every test of the first part runs on both backends (SQLite and a real
PostgreSQL server), which must behave the same; the second part covers what
only one of them has (SQLite's file, PostgreSQL's connections and
migrations).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from memory.store import MemoryStore, PostgresStore, SQLiteStore, StoreUnavailable
from memory.store.postgres_schema import MIGRATIONS, SCHEMA_TABLE
from testing.memory_backends import BACKENDS, Backend, make_backend
from testing.postgres_server import shared_server


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    made = make_backend(request.param, tmp_path)
    yield made
    await made.close_all()


@pytest.fixture
async def store(backend: Backend) -> MemoryStore:
    opened = backend.store()
    await opened.open()
    return opened


# ----------------------------------------------------------------- both backends


async def test_append_then_latest_and_list_newest_first(store: MemoryStore) -> None:
    assert await store.latest() is None
    first = await store.append("note", json.dumps({"n": 1}))
    second = await store.append("plan", json.dumps(["a", "b"]))
    latest = await store.latest()
    assert latest == second
    assert latest.content == ["a", "b"]
    assert [r.id for r in (await store.list(10))[0]] == [second.id, first.id]
    assert [r.id for r in (await store.list(1))[0]] == [second.id]
    assert [r.id for r in (await store.list(10, kind="note"))[0]] == [first.id]
    assert second.id > first.id
    assert second.created_at >= first.created_at
    assert first.created_at.endswith("+00:00") and len(first.created_at) == 32
    assert store.state == "ok"


async def test_content_comes_back_as_written(store: MemoryStore) -> None:
    # Stored as text: key order, unicode and escapes exactly as the service encoded them.
    text = json.dumps(
        {"z": 1, "a": [True, None, 1.5], "é": "\u0000 ✓ \U0001f600"},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    written = await store.append("x", text)
    assert list(written.content) == ["z", "a", "é"]
    assert (await store.latest()).content == json.loads(text)
    assert list((await store.latest()).content) == ["z", "a", "é"]


async def test_records_survive_reopening(backend: Backend) -> None:
    first = backend.store()
    written = await first.append("note", '"kept"')
    await first.close()
    second = backend.store()
    assert await second.latest() == written


async def test_locked_database_is_unavailable_not_hanging(
    backend: Backend, store: MemoryStore
) -> None:
    await store.append("note", "1")
    with backend.locked():
        with pytest.raises(StoreUnavailable) as refused:
            await asyncio.wait_for(store.append("note", "2"), timeout=5)
        assert refused.value.reason == "database is locked"
        assert store.state == "database is locked"
    # Once the lock is gone, writes go through again.
    assert (await store.append("note", "3")).content == 3
    assert store.state == "ok"
    assert [r.content for r in (await store.list(10))[0]] == [3, 1], "the refused write is gone"


async def test_read_only_database_refuses_writes(backend: Backend, store: MemoryStore) -> None:
    await store.append("note", "1")
    backend.make_read_only()
    with pytest.raises(StoreUnavailable) as refused:
        await store.append("note", "2")
    assert refused.value.reason == "database is read-only"
    assert [r.content for r in (await store.list(10))[0]] == [1], "reads still work"


async def test_retention_keeps_only_the_newest_records(backend: Backend) -> None:
    capped = backend.store(max_records=3)
    written = [await capped.append("note", str(n)) for n in range(5)]
    assert [r.content for r in (await capped.list(10))[0]] == [4, 3, 2]
    assert (await capped.latest()) == written[-1]


async def test_a_record_that_is_not_json_is_unavailable_not_a_crash(
    backend: Backend, store: MemoryStore
) -> None:
    await store.append("note", "1")
    backend.execute("UPDATE records SET content = 'not json {'")
    with pytest.raises(StoreUnavailable) as refused:
        await store.latest()
    assert refused.value.reason == "database holds a record that is not JSON"


async def test_writes_arriving_together_share_one_commit(
    backend: Backend, store: MemoryStore
) -> None:
    async with backend.writes_held(store):
        burst = asyncio.gather(*(store.append("burst", str(n)) for n in range(20)))
        await asyncio.sleep(0.2)  # every write joins the batch that waits for its turn
    records = await burst
    assert [r.content for r in records] == list(range(20))
    assert len({r.id for r in records}) == 20
    assert len({r.created_at for r in records}) == 1, "one transaction for the whole group"
    stored, _ = await store.list(100, kind="burst")
    assert sorted(r.id for r in stored) == sorted(r.id for r in records)


async def test_a_write_abandoned_before_its_turn_is_never_stored(
    backend: Backend, store: MemoryStore
) -> None:
    store.operation_timeout_seconds = 0.2
    async with backend.writes_held(store):
        with pytest.raises(StoreUnavailable) as refused:
            await store.append("note", "1")  # waits behind the held writer, gives up
        assert refused.value.reason == "database did not answer in time"
    await asyncio.sleep(0.3)
    store.operation_timeout_seconds = 5
    assert await store.latest() is None, "the write its caller gave up on was stored later"
    assert (await store.append("note", "2")).content == 2


async def test_a_page_is_cut_at_the_answer_size_cap(store: MemoryStore) -> None:
    big = json.dumps("x" * 1000)
    for _ in range(10):
        await store.append("note", big)
    page, truncated = await store.list(10, max_bytes=3500)
    assert truncated and len(page) == 3
    whole, truncated = await store.list(10, max_bytes=100_000)
    assert not truncated and len(whole) == 10
    # One record larger than the cap still comes back alone, never an empty page.
    single, truncated = await store.list(10, max_bytes=10)
    assert len(single) == 1 and truncated


async def test_replicas_on_one_database_lose_and_double_nothing(backend: Backend) -> None:
    """Several stores (replicas) appending at once: every write once, ids in commit order."""
    replicas = [backend.store(busy_timeout_seconds=5) for _ in range(3)]
    for replica in replicas:
        await replica.open()
    writers_per_replica, writes_per_writer = 4, 15

    async def writer(replica: MemoryStore, name: str) -> list[tuple[int, str]]:
        done = []
        for n in range(writes_per_writer):
            record = await replica.append("load", json.dumps(f"{name}-{n}"))
            done.append((record.id, record.content))
            # What this writer wrote last is never behind "latest".
            assert (await replica.latest()).id >= record.id
        return done

    results = await asyncio.gather(
        *(
            writer(replica, f"r{r}w{w}")
            for r, replica in enumerate(replicas)
            for w in range(writers_per_replica)
        )
    )
    acknowledged = [item for result in results for item in result]
    expected = len(replicas) * writers_per_replica * writes_per_writer
    assert len(acknowledged) == expected
    stored, truncated = await replicas[0].list(1000, kind="load")
    assert not truncated
    assert sorted((r.id, r.content) for r in stored) == sorted(acknowledged)
    assert len({r.content for r in stored}) == expected, "a write stored twice"
    # Newest first, by id and by time alike, and every replica agrees on "latest".
    assert [r.id for r in stored] == sorted((r.id for r in stored), reverse=True)
    assert [r.created_at for r in stored] == sorted((r.created_at for r in stored), reverse=True)
    for replica in replicas:
        assert await replica.latest() == stored[0]


# ------------------------------------------------------------------ SQLite alone


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path / "state" / "memory.db", busy_timeout_seconds=0.3)
    await opened.open()
    yield opened
    await opened.close()


async def test_sqlite_is_in_wal_mode_with_full_sync(sqlite_store: SQLiteStore) -> None:
    await sqlite_store.append("note", "1")
    with sqlite3.connect(sqlite_store.path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # FULL (2): the WAL is synced at every commit, so an acknowledged write
    # survives power loss, not only a crash of the process.
    assert await sqlite_store._submit(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) == 2


async def test_sqlite_unopenable_path_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data dir should be")
    broken = SQLiteStore(blocker / "memory.db")
    try:
        with pytest.raises(StoreUnavailable) as refused:
            await broken.open()
        assert refused.value.reason == "database file cannot be opened"
        with pytest.raises(StoreUnavailable):
            await broken.latest()
        # The store recovers once the directory can be created.
        blocker.unlink()
        assert await broken.latest() is None
    finally:
        await broken.close()


async def test_sqlite_corrupt_file_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    path.write_bytes(b"this is not an sqlite database" * 100)
    corrupt = SQLiteStore(path)
    try:
        with pytest.raises(StoreUnavailable) as refused:
            await corrupt.append("note", "1")
        assert refused.value.reason == "database file is corrupt"
    finally:
        await corrupt.close()


async def test_sqlite_stuck_database_thread_is_unavailable_not_a_hang(
    sqlite_store: SQLiteStore,
) -> None:
    sqlite_store.operation_timeout_seconds = 0.2
    stuck = asyncio.ensure_future(sqlite_store._submit(lambda c: time.sleep(0.5)))
    await asyncio.sleep(0)  # the stuck call takes the database thread first
    with pytest.raises(StoreUnavailable) as refused:
        await sqlite_store.append("note", "1")  # queued behind the stuck call
    assert refused.value.reason == "database did not answer in time"
    with pytest.raises(StoreUnavailable):
        await stuck
    await asyncio.sleep(0.4)
    # The queued write timed out before it ran: it must not appear later.
    assert await sqlite_store.latest() is None


async def test_sqlite_failed_group_does_not_block_later_writes(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data dir should be")
    broken = SQLiteStore(blocker / "memory.db")
    try:
        results = await asyncio.gather(
            *(broken.append("note", "1") for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, StoreUnavailable) for r in results)
        blocker.unlink()
        assert (await broken.append("note", "2")).content == 2
    finally:
        await broken.close()


# -------------------------------------------------------------- PostgreSQL alone


@pytest.fixture
async def postgres_url() -> str:
    return shared_server().create_database()


async def test_postgres_replicas_starting_together_migrate_once(postgres_url: str) -> None:
    replicas = [PostgresStore(postgres_url) for _ in range(6)]
    try:
        await asyncio.gather(*(replica.open() for replica in replicas))
        assert all(replica.state == "ok" for replica in replicas)
        with psycopg.connect(postgres_url) as admin:
            versions = admin.execute(f"SELECT version FROM {SCHEMA_TABLE}").fetchall()
        assert sorted(v for (v,) in versions) == [version for version, _ in MIGRATIONS]
        written = await replicas[0].append("note", "1")
        assert await replicas[-1].latest() == written
    finally:
        for replica in replicas:
            await replica.close()


async def test_postgres_schema_newer_than_known_is_refused(postgres_url: str) -> None:
    first = PostgresStore(postgres_url)
    await first.open()
    await first.close()
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"INSERT INTO {SCHEMA_TABLE} (version) VALUES (999)")
    newer = PostgresStore(postgres_url)
    try:
        with pytest.raises(StoreUnavailable) as refused:
            await newer.open()
        assert "newer than this memory service knows" in refused.value.reason
        with pytest.raises(StoreUnavailable):
            await newer.append("note", "1")
    finally:
        await newer.close()


async def test_postgres_dropped_schema_is_made_again(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    try:
        await store.open()
        await store.append("note", "1")
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f"DROP TABLE records, runs, {SCHEMA_TABLE}")
        with pytest.raises(StoreUnavailable) as refused:
            await store.latest()
        assert refused.value.reason == "database schema is missing"
        assert await store.latest() is None  # migrated again, empty
        assert (await store.append("note", "2")).content == 2
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("port", "database is unreachable"),
        ("password", "database refused the credentials"),
        ("database", "database does not exist"),
    ],
)
async def test_postgres_unreachable_or_refusing_is_a_clear_reason_fast(
    change: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = shared_server()
    url = server.url("postgres")
    if change == "port":
        from testing.stack import free_port

        url = url.replace(f":{server.port}/", f":{free_port()}/")
    elif change == "password":
        url = url.replace(server.password, "wrong-password")
    else:
        url = url.rsplit("/", 1)[0] + "/no_such_database"
    store = PostgresStore(url, busy_timeout_seconds=0.3)
    caplog.set_level(logging.DEBUG)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as refused:
            await store.open()
        assert refused.value.reason == reason
        with pytest.raises(StoreUnavailable) as again:
            await store.append("note", "1")
        assert again.value.reason == reason
        assert time.monotonic() - started < 10, "503 must come within the operation timeout"
        assert store.state == reason
    finally:
        await store.close()
    assert server.password not in caplog.text, "the password reached the logs"
    assert server.password not in store.location


async def test_postgres_location_names_no_password() -> None:
    server = shared_server()
    store = PostgresStore(server.url("somedb"))
    assert store.location == f"postgresql://pagi_test@127.0.0.1:{server.port}/somedb"
