"""Records and agent runs in SQLite: WAL, ``synchronous=FULL``, one connection on one thread.

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
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from pagi.logging import log_event

logger = logging.getLogger(__name__)

T = TypeVar("T")

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

# Beyond SQLite's own busy timeout: how long an operation may take in total
# (a stuck file system) before the caller gets 503 instead of waiting forever.
_OPERATION_MARGIN_SECONDS = 2.0


class StoreUnavailable(Exception):
    """The database cannot serve this operation right now; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


LIST_MAX_BYTES = 4 * 1024 * 1024
"""Most record content one list answer carries."""


@dataclass(frozen=True)
class StoredRecord:
    """One memory record as stored."""

    id: int
    kind: str
    content: Any
    created_at: str


RUNNING = "running"
"""The one status of a run that is not finished; any other status is final."""


@dataclass(frozen=True)
class StoredRun:
    """One agent run as stored: its summary, and its whole document when read by id."""

    id: str
    status: str
    summary: Any
    document: Any | None
    """None in lists (they carry summaries only)."""
    created_at: str
    updated_at: str


class RunFinished(Exception):
    """A finished run was written again with different content; it never changes."""


@dataclass
class _PendingWrite:
    """A write waiting for its batch; ``abandoned`` once its caller stopped waiting."""

    kind: str
    content_json: str
    abandoned: bool = False


@dataclass
class _Batch:
    """Writes committed together: one transaction, one WAL sync for all of them."""

    writes: list[_PendingWrite] = field(default_factory=list)
    job: asyncio.Future[list[StoredRecord | None]] | None = None


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


def _row_to_record(row: tuple[int, str, str, str]) -> StoredRecord:
    record_id, kind, content, created_at = row
    return StoredRecord(id=record_id, kind=kind, content=json.loads(content), created_at=created_at)


class MemoryStore:
    """Append-only records, and agent runs by id, over one SQLite file."""

    def __init__(
        self,
        path: Path,
        busy_timeout_seconds: float = 1.0,
        max_records: int | None = None,
        max_runs: int | None = None,
    ) -> None:
        self.path = path
        self.busy_timeout_seconds = busy_timeout_seconds
        self.max_records = max_records
        self.max_runs = max_runs
        self.operation_timeout_seconds = busy_timeout_seconds + _OPERATION_MARGIN_SECONDS
        self.state = "not opened"
        self._connection: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memory-db")
        # The batch new writes join; the database thread closes it when it starts on it.
        self._open_batch: _Batch | None = None
        self._batch_lock = threading.Lock()

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

    def _run_batch(self, batch: _Batch) -> list[StoredRecord | None]:
        # Close the batch first, whatever happens next: later writes start the next one.
        with self._batch_lock:
            if self._open_batch is batch:
                self._open_batch = None
            writes = list(batch.writes)
        return self._run(lambda connection: self._append_batch(connection, writes))

    def _append_batch(
        self, connection: sqlite3.Connection, writes: list[_PendingWrite]
    ) -> list[StoredRecord | None]:
        created_at = datetime.now(UTC).isoformat(timespec="microseconds")
        records: list[StoredRecord | None] = []
        connection.execute("BEGIN IMMEDIATE")
        try:
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
                    StoredRecord(record_id, write.kind, json.loads(write.content_json), created_at)
                )
            newest = max((r.id for r in records if r is not None), default=None)
            if self.max_records is not None and newest is not None:
                # Retention: drop the oldest records in the same transaction.
                connection.execute(
                    "DELETE FROM records WHERE id <= ?", (newest - self.max_records,)
                )
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        return records

    @staticmethod
    def _latest(connection: sqlite3.Connection) -> StoredRecord | None:
        row = connection.execute(
            "SELECT id, kind, content, created_at FROM records ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return _row_to_record(row) if row else None

    @staticmethod
    def _list(
        connection: sqlite3.Connection, limit: int, kind: str | None, max_bytes: int
    ) -> tuple[list[StoredRecord], bool]:
        if kind is None:
            cursor = connection.execute(
                "SELECT id, kind, content, created_at FROM records ORDER BY id DESC LIMIT ?",
                (limit,),
            )
        else:
            cursor = connection.execute(
                "SELECT id, kind, content, created_at FROM records WHERE kind = ?"
                " ORDER BY id DESC LIMIT ?",
                (kind, limit),
            )
        # A page is cut at max_bytes of content (always at least one record), so
        # one caller cannot make the service build an answer of limit x record size.
        records: list[StoredRecord] = []
        size = 0
        for row in cursor:
            size += len(row[2])
            if records and size > max_bytes:
                return records, True
            records.append(_row_to_record(row))
        return records, False

    @staticmethod
    def _put_run(
        connection: sqlite3.Connection,
        run_id: str,
        status: str,
        summary_json: str,
        document_json: str,
        max_runs: int | None,
    ) -> tuple[StoredRun, bool]:
        now = datetime.now(UTC).isoformat(timespec="microseconds")
        connection.execute("BEGIN IMMEDIATE")
        try:
            row = connection.execute(
                "SELECT status, summary, document, created_at, updated_at FROM runs WHERE id = ?",
                (run_id,),
            ).fetchone()
            if row is None:
                cursor = connection.execute(
                    "INSERT INTO runs (id, status, summary, document, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (run_id, status, summary_json, document_json, now, now),
                )
                created_at, updated_at = now, now
                if max_runs is not None:
                    # Retention: drop the oldest runs in the same transaction.
                    connection.execute(
                        "DELETE FROM runs WHERE seq <= ?", (int(cursor.lastrowid or 0) - max_runs,)
                    )
            elif row[0] != RUNNING:
                # A finished run is final: the same write again (a retry) is
                # answered as stored, any other is refused.
                if (status, summary_json, document_json) != tuple(row[:3]):
                    raise RunFinished(f"run {run_id!r} is finished ({row[0]}) and never changes")
                connection.execute("COMMIT")
                return StoredRun(run_id, status, json.loads(row[1]), None, row[3], row[4]), False
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
        stored = StoredRun(run_id, status, json.loads(summary_json), None, created_at, updated_at)
        return stored, row is None

    @staticmethod
    def _get_run(connection: sqlite3.Connection, run_id: str) -> StoredRun | None:
        row = connection.execute(
            "SELECT id, status, summary, document, created_at, updated_at FROM runs WHERE id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            return None
        return StoredRun(row[0], row[1], json.loads(row[2]), json.loads(row[3]), row[4], row[5])

    @staticmethod
    def _list_runs(
        connection: sqlite3.Connection, limit: int, status: str | None
    ) -> list[StoredRun]:
        query = "SELECT id, status, summary, created_at, updated_at FROM runs"
        if status is None:
            rows = connection.execute(f"{query} ORDER BY seq DESC LIMIT ?", (limit,))
        else:
            rows = connection.execute(
                f"{query} WHERE status = ? ORDER BY seq DESC LIMIT ?", (status, limit)
            )
        return [StoredRun(r[0], r[1], json.loads(r[2]), None, r[3], r[4]) for r in rows]

    # ------------------------------------------------------------------ async side

    async def _submit(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._run, operation)
        try:
            return await asyncio.wait_for(future, self.operation_timeout_seconds)
        except TimeoutError:
            self.state = "database did not answer in time"
            raise StoreUnavailable(self.state) from None

    async def open(self) -> None:
        """Open (and create) the database now; raise :class:`StoreUnavailable` if it can't."""
        await self._submit(lambda connection: None)

    async def append(self, kind: str, content_json: str) -> StoredRecord:
        """Store a record; returns only after the commit is durable.

        Writes that arrive while the database thread is busy are committed
        together (group commit): one WAL sync acknowledges all of them.
        """
        write = _PendingWrite(kind, content_json)
        with self._batch_lock:
            batch = self._open_batch
            if batch is None:
                batch = self._open_batch = _Batch()
                loop = asyncio.get_running_loop()
                batch.job = loop.run_in_executor(self._executor, self._run_batch, batch)
                # Retrieve the outcome even when every writer stopped waiting.
                batch.job.add_done_callback(lambda job: job.cancelled() or job.exception())
            index = len(batch.writes)
            batch.writes.append(write)
        assert batch.job is not None
        try:
            records = await asyncio.wait_for(
                asyncio.shield(batch.job), self.operation_timeout_seconds
            )
        except TimeoutError:
            write.abandoned = True
            self.state = "database did not answer in time"
            raise StoreUnavailable(self.state) from None
        record = records[index]
        if record is None:  # abandoned just as the batch ran
            raise StoreUnavailable("database did not answer in time")
        return record

    async def latest(self) -> StoredRecord | None:
        """The newest record, or None when there is none."""
        return await self._submit(self._latest)

    async def list(
        self, limit: int, kind: str | None = None, max_bytes: int = LIST_MAX_BYTES
    ) -> tuple[list[StoredRecord], bool]:
        """Up to ``limit`` records, newest first, optionally of one kind.

        Also says whether the page was cut short at ``max_bytes`` of content.
        """
        return await self._submit(lambda c: self._list(c, limit, kind, max_bytes))

    async def put_run(
        self, run_id: str, status: str, summary_json: str, document_json: str
    ) -> tuple[StoredRun, bool]:
        """Create or replace a run; answers after the commit is durable.

        Also says whether the run was created. A run whose stored status is
        not ``running`` is final: writing it again with other content raises
        :class:`RunFinished`. The answer carries the summary, not the document.
        """
        # Not through _run: a refused write is the caller's mistake, not a database failure.
        outcome: list[tuple[StoredRun, bool] | RunFinished] = []

        def put(connection: sqlite3.Connection) -> None:
            try:
                outcome.append(
                    self._put_run(
                        connection, run_id, status, summary_json, document_json, self.max_runs
                    )
                )
            except RunFinished as exc:
                outcome.append(exc)

        await self._submit(put)
        if isinstance(outcome[0], RunFinished):
            raise outcome[0]
        return outcome[0]

    async def get_run(self, run_id: str) -> StoredRun | None:
        """The run with this id, document included, or None."""
        return await self._submit(lambda c: self._get_run(c, run_id))

    async def list_runs(self, limit: int, status: str | None = None) -> list[StoredRun]:
        """Up to ``limit`` runs, newest first (by creation), summaries only."""
        return await self._submit(lambda c: self._list_runs(c, limit, status))

    async def close(self) -> None:
        """Close the connection and stop the database thread."""
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(self._executor, self._drop_connection), 5)
        except TimeoutError:
            pass
        self._executor.shutdown(wait=False, cancel_futures=True)
