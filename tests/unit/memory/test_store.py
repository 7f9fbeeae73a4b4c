"""The SQLite store: durable appends, newest first, and 503-able failures."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import pytest

from memory.store import MemoryStore, StoreUnavailable


@pytest.fixture
async def store(tmp_path: Path):
    opened = MemoryStore(tmp_path / "state" / "memory.db", busy_timeout_seconds=0.3)
    await opened.open()
    yield opened
    await opened.close()


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


async def test_records_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    first = MemoryStore(path)
    written = await first.append("note", '"kept"')
    await first.close()
    second = MemoryStore(path)
    try:
        assert await second.latest() == written
    finally:
        await second.close()


async def test_database_is_in_wal_mode_with_full_sync(store: MemoryStore) -> None:
    await store.append("note", "1")
    with sqlite3.connect(store.path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # FULL (2): the WAL is synced at every commit, so an acknowledged write
    # survives power loss, not only a crash of the process.
    assert await store._submit(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) == 2


async def test_locked_database_is_unavailable_not_hanging(store: MemoryStore) -> None:
    locker = sqlite3.connect(store.path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnavailable) as refused:
            await asyncio.wait_for(store.append("note", "1"), timeout=5)
        assert refused.value.reason == "database is locked"
        assert store.state == "database is locked"
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    # Once the lock is gone, writes go through again.
    assert (await store.append("note", "2")).content == 2
    assert store.state == "ok"


async def test_unopenable_path_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data dir should be")
    broken = MemoryStore(blocker / "memory.db")
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


async def test_corrupt_file_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    path.write_bytes(b"this is not an sqlite database" * 100)
    corrupt = MemoryStore(path)
    try:
        with pytest.raises(StoreUnavailable) as refused:
            await corrupt.append("note", "1")
        assert refused.value.reason == "database file is corrupt"
    finally:
        await corrupt.close()


async def test_read_only_connection_refuses_writes(store: MemoryStore) -> None:
    await store.append("note", "1")
    # What SQLite reports on a read-only file system or file: SQLITE_READONLY.
    store._connection.execute("PRAGMA query_only=ON")
    with pytest.raises(StoreUnavailable) as refused:
        await store.append("note", "2")
    assert refused.value.reason == "database is read-only"


async def test_retention_keeps_only_the_newest_records(tmp_path: Path) -> None:
    capped = MemoryStore(tmp_path / "memory.db", max_records=3)
    try:
        written = [await capped.append("note", str(n)) for n in range(5)]
        assert [r.content for r in (await capped.list(10))[0]] == [4, 3, 2]
        assert (await capped.latest()) == written[-1]
    finally:
        await capped.close()


async def test_a_record_that_is_not_json_is_unavailable_not_a_crash(store: MemoryStore) -> None:
    await store.append("note", "1")
    with sqlite3.connect(store.path) as other:
        other.execute("UPDATE records SET content = 'not json {'")
    with pytest.raises(StoreUnavailable) as refused:
        await store.latest()
    assert refused.value.reason == "database holds a record that is not JSON"


async def test_a_stuck_database_thread_is_unavailable_not_a_hang(store: MemoryStore) -> None:
    store.operation_timeout_seconds = 0.2
    stuck = asyncio.ensure_future(store._submit(lambda c: time.sleep(0.5)))
    await asyncio.sleep(0)  # the stuck call takes the database thread first
    with pytest.raises(StoreUnavailable) as refused:
        await store.append("note", "1")  # queued behind the stuck call
    assert refused.value.reason == "database did not answer in time"
    with pytest.raises(StoreUnavailable):
        await stuck
    await asyncio.sleep(0.4)
    # The queued write timed out before it ran: it must not appear later.
    assert await store.latest() is None


async def test_writes_arriving_together_share_one_commit(store: MemoryStore) -> None:
    busy = asyncio.ensure_future(store._submit(lambda c: time.sleep(0.2)))
    await asyncio.sleep(0)  # the database thread is busy: the writes below queue up
    records = await asyncio.gather(*(store.append("burst", str(n)) for n in range(20)))
    await busy
    assert [r.content for r in records] == list(range(20))
    assert len({r.id for r in records}) == 20
    assert len({r.created_at for r in records}) == 1, "one transaction for the whole group"
    stored, _ = await store.list(100, kind="burst")
    assert sorted(r.id for r in stored) == sorted(r.id for r in records)


async def test_a_failed_group_does_not_block_later_writes(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data dir should be")
    broken = MemoryStore(blocker / "memory.db")
    try:
        results = await asyncio.gather(
            *(broken.append("note", "1") for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, StoreUnavailable) for r in results)
        blocker.unlink()
        assert (await broken.append("note", "2")).content == 2
    finally:
        await broken.close()


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
