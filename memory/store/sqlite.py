"""The memory in SQLite: WAL journal, ``synchronous=FULL``, one connection on one thread.

The default backend (one service, one file): records and agent runs.

A write is answered only after its transaction has committed and the WAL has
been synced, so an acknowledged record survives ``kill -9`` and power loss.
Every SQLite call runs on a single dedicated thread (the event loop never
blocks on disk, and one connection is never shared between threads). Any
database failure — missing or unwritable directory, read-only file system,
a lock held too long, a corrupt file — becomes :class:`StoreUnavailable`,
which the API answers with 503.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from memory.store.base import (
    RunFinished,
    StoredRecord,
    StoredRun,
    StoreUnavailable,
    finished_as_written,
    record_from_row,
    run_from_row,
)
from memory.store.group_commit import TIMED_OUT, Batch, PendingWrite
from memory.store.sql_store import Row, SqlStore, Statements, T
from pagi.logging import log_event

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    content TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_kind ON records (kind, id);
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    summary TEXT NOT NULL,
    document TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, seq);
"""


def _on_read_only_file_system(path: Path) -> bool:
    try:
        return bool(os.statvfs(path.parent).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _describe(exc: BaseException, path: Path) -> str:
    text = str(exc).lower()
    if _on_read_only_file_system(path):
        # SQLite reports this in several ways (cannot open the -shm file,
        # readonly database, disk I/O error); the cause is what the operator needs.
        return "database is read-only"
    if "locked" in text or "busy" in text:
        return "database is locked"
    if "readonly" in text or "read-only" in text:
        return "database is read-only"
    if "unable to open" in text or isinstance(exc, OSError):
        return "database file cannot be opened"
    if isinstance(exc, ValueError):
        return "database holds a record that is not JSON"
    if "malformed" in text or "not a database" in text:
        return "database file is corrupt"
    if "disk i/o" in text or "full" in text:
        return "database disk error"
    return "database error"


class SQLiteStore(SqlStore):
    """The memory's collections in one SQLite file."""

    backend = "sqlite"
    sql = Statements("?")

    def __init__(
        self,
        path: Path,
        busy_timeout_seconds: float = 1.0,
        max_records: int | None = None,
        max_runs: int | None = None,
    ) -> None:
        # The operation timeout, beyond SQLite's own busy timeout, bounds a stuck
        # file system: the caller gets 503 instead of waiting forever.
        super().__init__(busy_timeout_seconds, max_records, max_runs)
        self.path = path
        self._closed = False
        self._connection: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memory-db")

    def _start_batch(self, batch: Batch) -> asyncio.Future[list[StoredRecord | None]]:
        # The job queues on the database thread; until it runs, new writes join the batch.
        return asyncio.get_running_loop().run_in_executor(self._executor, self._run_batch, batch)

    # ------------------------------------------------------------------ thread side

    def _connect(self) -> sqlite3.Connection:
        if self._connection is not None:
            return self._connection
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout_seconds,
            isolation_level=None,  # explicit BEGIN/COMMIT below
            check_same_thread=False,  # only ever used from the store's one thread
        )
        try:
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot enable WAL (journal mode {mode})")
            connection.execute("PRAGMA synchronous=FULL")
            connection.executescript(_SCHEMA)
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        return connection

    def _run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        try:
            result = operation(self._connect())
        except (sqlite3.Error, OSError, ValueError) as exc:
            reason = _describe(exc, self.path)
            if reason != "database is locked":
                self._drop_connection()  # reopen next time: the file system may recover
            self.state = reason
            log_event(
                logger, "database_unavailable", logging.WARNING, reason=reason, error=str(exc)
            )
            raise StoreUnavailable(reason) from None
        self.state = "ok"
        return result

    def _drop_connection(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except sqlite3.Error:
                pass
            self._connection = None

    def _run_batch(self, batch: Batch) -> list[StoredRecord | None]:
        # Close the batch first, whatever happens next: later writes start the next one.
        writes = self._group.take(batch)
        return self._run(lambda connection: self._append_batch(connection, writes))

    def _append_batch(
        self, connection: sqlite3.Connection, writes: list[PendingWrite]
    ) -> list[StoredRecord | None]:
        records: list[StoredRecord | None] = []
        connection.execute("BEGIN IMMEDIATE")
        try:
            # Taken under the write lock: times grow in commit order, as ids do,
            # whichever process (replica) writes.
            created_at = datetime.now(UTC).isoformat(timespec="microseconds")
            for write in writes:
                if write.abandoned:  # its caller got 503 already: never store it later
                    records.append(None)
                    continue
                cursor = connection.execute(
                    "INSERT INTO records (kind, content, created_at) VALUES (?, ?, ?)",
                    (write.kind, write.content_json, created_at),
                )
                record_id = int(cursor.lastrowid or 0)
                records.append(
                    record_from_row(record_id, write.kind, write.content_json, created_at)
                )
            newest = max((r.id for r in records if r is not None), default=None)
            if self.max_records is not None and newest is not None:
                # Retention: drop the oldest records in the same transaction.
                connection.execute(self.sql.drop_old_records, (newest - self.max_records,))
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        return records

    def _write_run(
        self,
        connection: sqlite3.Connection,
        run_id: str,
        status: str,
        summary_json: str,
        document_json: str,
    ) -> tuple[StoredRun, bool]:
        connection.execute("BEGIN IMMEDIATE")
        try:
            # Taken under the write lock, as a record's time is.
            now = datetime.now(UTC).isoformat(timespec="microseconds")
            row = connection.execute(self.sql.stored_run, (run_id,)).fetchone()
            if row is None:
                cursor = connection.execute(
                    "INSERT INTO runs (id, status, summary, document, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (run_id, status, summary_json, document_json, now, now),
                )
                created_at, updated_at = now, now
                if self.max_runs is not None:
                    connection.execute(
                        self.sql.drop_old_runs, (int(cursor.lastrowid or 0) - self.max_runs,)
                    )
            elif finished_as_written(run_id, (status, summary_json, document_json), row[:3]):
                connection.execute("COMMIT")
                return run_from_row(run_id, status, row[1], None, row[3], row[4]), False
            else:
                created_at, updated_at = row[3], now
                connection.execute(
                    "UPDATE runs SET status = ?, summary = ?, document = ?, updated_at = ?"
                    " WHERE id = ?",
                    (status, summary_json, document_json, now, run_id),
                )
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        stored = run_from_row(run_id, status, summary_json, None, created_at, updated_at)
        return stored, row is None

    # ------------------------------------------------------------------ async side

    @property
    def location(self) -> str:
        """The database file."""
        return str(self.path)

    async def _submit(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._run, operation)
        try:
            return await asyncio.wait_for(future, self.operation_timeout_seconds)
        except TimeoutError:
            self.state = TIMED_OUT
            raise StoreUnavailable(self.state) from None

    async def _read(self, query: str, params: Row, consume: Callable[[Iterable[Row]], T]) -> T:
        # The rows stream from the cursor: a page cut at its size never loads the rest.
        return await self._submit(lambda connection: consume(connection.execute(query, params)))

    async def open(self) -> None:
        """Open (and create) the database now; raise :class:`StoreUnavailable` if it can't."""
        await self._submit(lambda connection: None)

    async def _put_run(
        self, run_id: str, status: str, summary_json: str, document_json: str
    ) -> tuple[StoredRun, bool]:
        # Not through _run: a refused write is the caller's mistake, not a database failure.
        outcome: list[tuple[StoredRun, bool] | RunFinished] = []

        def put(connection: sqlite3.Connection) -> None:
            try:
                outcome.append(
                    self._write_run(connection, run_id, status, summary_json, document_json)
                )
            except RunFinished as exc:
                outcome.append(exc)

        await self._submit(put)
        if isinstance(outcome[0], RunFinished):
            raise outcome[0]
        return outcome[0]

    async def close(self) -> None:
        """Close the connection and stop the database thread (again: nothing to do)."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(self._executor, self._drop_connection), 5)
        except TimeoutError:
            pass
        self._executor.shutdown(wait=False, cancel_futures=True)
