"""The memory in PostgreSQL (``MEMORY_DATABASE_URL=postgresql://...``): replicas share it.

psycopg 3 with its async connection pool. What the SQLite backend gives one
process, this one gives several replicas on one database:

- **Order.** Appends take a transaction-scoped advisory lock before they
  draw ids and their timestamp, and hold it to their commit. So appends
  from every replica commit one batch at a time, ids and ``created_at``
  grow in commit order, and "latest" (the highest id) is the newest
  committed record: it never goes back, and a record never appears later
  behind one already visible. Each replica batches its own concurrent
  appends into one transaction (group commit), so the lock is taken once
  per batch, not per record.
- **Nothing lost or doubled.** A write is answered 201 only after its
  transaction committed; a failed transaction stores nothing; the service
  never retries a write by itself.
- **Migrations at start**, safe from several replicas at once: each takes
  a session-wide advisory lock, then applies the versions the database does
  not have yet (``pagi_memory_schema`` records them). A replica that finds a
  newer schema than it knows refuses to serve (503) rather than guess.
- **Failures are 503s.** A database that is down, restarting, read-only,
  slow or refusing the credentials makes the operation fail with
  :class:`StoreUnavailable` within the operation timeout (connecting,
  waiting for a pooled connection, locks and statements are all bounded);
  the pool checks each connection before use and replaces broken ones, so
  the service recovers by itself when the database is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from memory.store.base import (
    LIST_MAX_BYTES,
    RUNNING,
    RunFinished,
    StoredRecord,
    StoredRun,
    StoreUnavailable,
    cut_page,
    record_from_row,
    run_from_row,
)
from memory.store.group_commit import TIMED_OUT, Batch, GroupCommit, PendingWrite
from pagi.logging import log_event

logger = logging.getLogger(__name__)

T = TypeVar("T")
Connection = psycopg.AsyncConnection[Any]

# Advisory lock keys (two int4s): "PAGI" and what the lock guards.
_LOCK_CLASS = 0x50414749
_MIGRATION_LOCK = 1
_APPEND_LOCK = 2

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE records (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            kind TEXT NOT NULL,
            content TEXT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL
        );
        CREATE INDEX records_by_kind ON records (kind, id);
        """,
    ),
    (
        2,
        """
        CREATE TABLE runs (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            status TEXT NOT NULL,
            summary TEXT NOT NULL,
            document TEXT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL
        );
        CREATE INDEX runs_by_status ON runs (status, seq);
        """,
    ),
)
"""Schema versions in order. A new collection adds a version; a version never changes."""

SCHEMA_TABLE = "pagi_memory_schema"

# Beyond the lock timeout: how long an operation may take in total before 503.
_OPERATION_MARGIN_SECONDS = 2.0
# Migrations may wait for another replica's migrations.
_MIGRATION_TIMEOUT_SECONDS = 30.0
# A connection attempt that keeps failing is given up after this long; the
# next request starts a fresh one (so recovery never waits out a long backoff).
_RECONNECT_GIVE_UP_SECONDS = 5.0


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def describe_location(url: str) -> str:
    """``postgresql://user@host:port/dbname`` from a connection URL, without its password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unparsable URL)"
    user = parts.get("user")
    host = parts.get("host") or "localhost"
    port = parts.get("port") or "5432"
    database = parts.get("dbname") or user or ""
    return f"postgresql://{user + '@' if user else ''}{host}:{port}/{database}"


def _describe(exc: BaseException) -> str:
    """What the operator needs to know, from a database error."""
    if isinstance(exc, PoolTimeout):
        # No connection in time, none failing to connect: all busy, or being replaced.
        return TIMED_OUT
    if isinstance(exc, pg_errors.LockNotAvailable):
        return "database is locked"
    if isinstance(exc, pg_errors.QueryCanceled):
        return TIMED_OUT
    if isinstance(exc, pg_errors.ReadOnlySqlTransaction):
        return "database is read-only"
    if isinstance(exc, pg_errors.DiskFull):
        return "database disk error"
    if isinstance(exc, pg_errors.UndefinedTable):
        return "database schema is missing"
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return "database refused access"
    if isinstance(exc, pg_errors.InvalidAuthorizationSpecification | pg_errors.InvalidPassword):
        return "database refused the credentials"
    if isinstance(exc, pg_errors.InvalidCatalogName):
        return "database does not exist"
    if isinstance(exc, ValueError):
        return "database holds a record that is not JSON"
    if isinstance(exc, psycopg.OperationalError):
        return _describe_connection_failure(str(exc))
    return "database error"


def _describe_connection_failure(message: str) -> str:
    # libpq reports a refused connection as text only (no SQLSTATE).
    if "password authentication failed" in message or "no pg_hba.conf entry" in message:
        return "database refused the credentials"
    if "role" in message and "does not exist" in message:
        return "database refused the credentials"
    if "database" in message and "does not exist" in message:
        return "database does not exist"
    if "starting up" in message or "shutting down" in message or "recovery" in message:
        return "database is restarting"
    return "database is unreachable"


class SchemaTooNew(Exception):
    """The database's schema is newer than this version of PAGI knows."""


class PostgresStore:
    """The memory's collections in one PostgreSQL database, shared by every replica."""

    backend = "postgresql"

    def __init__(
        self,
        url: str,
        busy_timeout_seconds: float = 1.0,
        max_records: int | None = None,
        max_runs: int | None = None,
        pool_size: int = 10,
    ) -> None:
        self.url = url
        self.busy_timeout_seconds = busy_timeout_seconds
        self.max_records = max_records
        self.max_runs = max_runs
        self.operation_timeout_seconds = busy_timeout_seconds + _OPERATION_MARGIN_SECONDS
        self.state = "not opened"
        self._schema_ready = False
        self._schema_lock = asyncio.Lock()
        self._pool_started = False
        # One batch of appends in flight per replica; the next one gathers meanwhile.
        self._write_turn = asyncio.Lock()
        self._group = GroupCommit(lambda batch: asyncio.ensure_future(self._run_batch(batch)))
        # Why the pool's last connection attempt failed (None once one succeeds): a
        # request that finds no connection says "unreachable", not just "busy".
        self.last_connect_error: psycopg.Error | None = None
        store = self

        class _Connection(psycopg.AsyncConnection[Any]):
            @classmethod
            async def connect(cls, *args: Any, **kwargs: Any) -> _Connection:  # type: ignore[override]
                try:
                    connection = await super().connect(*args, **kwargs)
                except psycopg.Error as exc:
                    store.last_connect_error = exc
                    raise
                store.last_connect_error = None
                return connection

        self._pool = AsyncConnectionPool(
            url,
            connection_class=_Connection,
            min_size=1,
            max_size=pool_size,
            open=False,
            name="memory",
            # Shorter than the operation: a request that finds no connection learns
            # why (the last attempt's error) before its own deadline.
            timeout=busy_timeout_seconds + _OPERATION_MARGIN_SECONDS / 2,
            reconnect_timeout=_RECONNECT_GIVE_UP_SECONDS,
            check=AsyncConnectionPool.check_connection,
            configure=self._configure,
            kwargs={
                "autocommit": True,
                "application_name": "pagi-memory",
                # libpq's own connect timeout is in whole seconds, 2 at least.
                "connect_timeout": max(2, round(self.operation_timeout_seconds)),
            },
        )

    @property
    def location(self) -> str:
        """The database, without the password."""
        return describe_location(self.url)

    async def _configure(self, connection: Connection) -> None:
        # Every wait inside the database is bounded: a lock held elsewhere gives
        # "database is locked", a stuck statement gives "did not answer in time".
        lock_ms = max(1, int(self.busy_timeout_seconds * 1000))
        statement_ms = max(1, int(self.operation_timeout_seconds * 1000))
        await connection.execute(f"SET lock_timeout = {lock_ms}")
        await connection.execute(f"SET statement_timeout = {statement_ms}")
        await connection.execute("SET TIME ZONE 'UTC'")

    # ------------------------------------------------------------------ plumbing

    def _fail(self, exc: BaseException) -> StoreUnavailable:
        if isinstance(exc, PoolTimeout) and self.last_connect_error is not None:
            exc = self.last_connect_error  # no connection because none can be made
        reason = str(exc) if isinstance(exc, SchemaTooNew) else _describe(exc)
        if reason == "database schema is missing":
            self._schema_ready = False  # created again at the next operation
        self.state = reason
        log_event(
            logger,
            "database_unavailable",
            logging.WARNING,
            reason=reason,
            error=f"{type(exc).__name__}: {exc}",
            database=self.location,
        )
        return StoreUnavailable(reason)

    async def _run(self, operation: Callable[[Connection], Awaitable[T]]) -> T:
        """Run ``operation`` on a pooled connection, within the operation timeout."""

        await self._ensure_schema()

        async def attempt() -> T:
            async with self._pool.connection() as connection:
                return await operation(connection)

        try:
            result = await asyncio.wait_for(attempt(), self.operation_timeout_seconds)
        except TimeoutError:
            self.state = TIMED_OUT
            raise StoreUnavailable(TIMED_OUT) from None
        except (psycopg.Error, PoolTimeout, ValueError, SchemaTooNew) as exc:
            raise self._fail(exc) from None
        self.state = "ok"
        return result

    async def _ensure_schema(self) -> None:
        """Migrate once (at open, or at the first operation the database answers).

        Getting a connection is bounded by the operation timeout (a database
        that is down gives 503 at once); the migration itself may wait for
        another replica's, up to its own, longer, lock and statement timeouts.
        """
        if self._schema_ready:
            return
        async with self._schema_lock:
            if self._schema_ready:
                return
            if not self._pool_started:
                # The pool connects in the background; a database that is down now
                # is retried there, and each operation meanwhile gets 503.
                self._pool_started = True
                await self._pool.open(wait=False)
            try:
                async with self._pool.connection() as connection:
                    await self._migrate(connection)
            except (psycopg.Error, PoolTimeout, SchemaTooNew) as exc:
                raise self._fail(exc) from None
            self._schema_ready = True

    async def _migrate(self, connection: Connection) -> None:
        """Apply the versions this database lacks; replicas starting together take turns."""
        await connection.execute(f"SET lock_timeout = {int(_MIGRATION_TIMEOUT_SECONDS * 1000)}")
        await connection.execute(
            f"SET statement_timeout = {int(_MIGRATION_TIMEOUT_SECONDS * 1000)}"
        )
        try:
            async with connection.transaction():
                await connection.execute(
                    "SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_CLASS, _MIGRATION_LOCK)
                )
                await connection.execute(
                    f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} ("
                    " version INTEGER PRIMARY KEY,"
                    " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                )
                cursor = await connection.execute(f"SELECT version FROM {SCHEMA_TABLE}")
                applied = {row[0] for row in await cursor.fetchall()}
                known = {version for version, _ in MIGRATIONS}
                if applied - known:
                    raise SchemaTooNew(
                        f"database schema version {max(applied)} is newer than this"
                        f" memory service knows ({max(known)})"
                    )
                for version, statements in MIGRATIONS:
                    if version in applied:
                        continue
                    await connection.execute(statements)
                    await connection.execute(
                        f"INSERT INTO {SCHEMA_TABLE} (version) VALUES (%s)", (version,)
                    )
                    log_event(logger, "database_migrated", version=version)
        finally:
            await self._configure(connection)

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Start the pool and migrate; StoreUnavailable (the pool keeps trying) when it can't."""
        await self._run(self._nothing)

    @staticmethod
    async def _nothing(connection: Connection) -> None:
        await connection.execute("SELECT 1")

    async def close(self) -> None:
        """Close every connection."""
        await self._pool.close(timeout=5)

    # ------------------------------------------------------------------ records

    async def _run_batch(self, batch: Batch) -> list[StoredRecord | None]:
        async with self._write_turn:
            # Close the batch first, whatever happens next: later writes start the next one.
            writes = self._group.take(batch)
            return await self._run(lambda connection: self._append_batch(connection, writes))

    async def _append_batch(
        self, connection: Connection, writes: list[PendingWrite]
    ) -> list[StoredRecord | None]:
        records: list[StoredRecord | None] = [None] * len(writes)
        kept = [index for index, write in enumerate(writes) if not write.abandoned]
        if not kept:  # every caller got 503 already: store nothing
            return records
        async with connection.transaction():
            # Held to the commit: appends from every replica commit one batch at a
            # time, so ids and timestamps grow in commit order.
            await connection.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_CLASS, _APPEND_LOCK)
            )
            cursor = await connection.execute("SELECT clock_timestamp()")
            row = await cursor.fetchone()
            assert row is not None
            created_at = _timestamp(row[0])
            async with connection.cursor() as insert:
                await insert.executemany(
                    "INSERT INTO records (kind, content, created_at) VALUES (%s, %s, %s)"
                    " RETURNING id",
                    [(writes[i].kind, writes[i].content_json, row[0]) for i in kept],
                    returning=True,
                )
                ids: list[int] = []
                while True:
                    returned = await insert.fetchone()
                    assert returned is not None
                    ids.append(returned[0])
                    if not insert.nextset():
                        break
            for index, record_id in zip(kept, ids, strict=True):
                write = writes[index]
                records[index] = record_from_row(
                    record_id, write.kind, write.content_json, created_at
                )
            if self.max_records is not None:
                # Retention: drop the oldest records in the same transaction.
                await connection.execute(
                    "DELETE FROM records WHERE id <= %s", (max(ids) - self.max_records,)
                )
        return records

    async def append(self, kind: str, content_json: str) -> StoredRecord:
        """Store a record; returns only after the commit.

        Appends that arrive while this replica's previous batch commits are
        committed together, in one transaction.
        """
        try:
            return await self._group.append(
                PendingWrite(kind, content_json), self.operation_timeout_seconds
            )
        except StoreUnavailable as exc:
            self.state = exc.reason
            raise

    @staticmethod
    async def _latest(connection: Connection) -> StoredRecord | None:
        cursor = await connection.execute(
            "SELECT id, kind, content, created_at FROM records ORDER BY id DESC LIMIT 1"
        )
        row = await cursor.fetchone()
        if row is None:
            return None
        record_id, kind, content, created_at = row
        return record_from_row(record_id, kind, content, _timestamp(created_at))

    async def latest(self) -> StoredRecord | None:
        """The newest record, or None when there is none."""
        return await self._run(self._latest)

    async def list(
        self, limit: int, kind: str | None = None, max_bytes: int = LIST_MAX_BYTES
    ) -> tuple[list[StoredRecord], bool]:
        """Up to ``limit`` records, newest first, optionally of one kind.

        Also says whether the page was cut short at ``max_bytes`` of content.
        """

        async def page(connection: Connection) -> tuple[list[StoredRecord], bool]:
            if kind is None:
                cursor = await connection.execute(
                    "SELECT id, kind, content, created_at FROM records ORDER BY id DESC LIMIT %s",
                    (limit,),
                )
            else:
                cursor = await connection.execute(
                    "SELECT id, kind, content, created_at FROM records WHERE kind = %s"
                    " ORDER BY id DESC LIMIT %s",
                    (kind, limit),
                )
            rows = await cursor.fetchall()
            return cut_page(
                ((rid, k, content, _timestamp(at)) for rid, k, content, at in rows), max_bytes
            )

        return await self._run(page)

    # ------------------------------------------------------------------ runs

    async def _put_run(
        self,
        connection: Connection,
        run_id: str,
        status: str,
        summary_json: str,
        document_json: str,
    ) -> tuple[StoredRun, bool]:
        async with connection.transaction():
            # Insert, or lock the existing row: two replicas writing one new id at
            # once create it once, and the other's write then updates it. (Twice:
            # another replica's retention may remove an old run between the two.)
            for _ in range(2):
                cursor = await connection.execute(
                    "INSERT INTO runs (id, status, summary, document, created_at, updated_at)"
                    " VALUES (%s, %s, %s, %s, clock_timestamp(), clock_timestamp())"
                    " ON CONFLICT (id) DO NOTHING RETURNING seq, created_at",
                    (run_id, status, summary_json, document_json),
                )
                inserted = await cursor.fetchone()
                if inserted is not None:
                    seq, created_at = inserted
                    if self.max_runs is not None:
                        # Retention: drop the oldest runs in the same transaction.
                        await connection.execute(
                            "DELETE FROM runs WHERE seq <= %s", (seq - self.max_runs,)
                        )
                    at = _timestamp(created_at)
                    return run_from_row(run_id, status, summary_json, None, at, at), True
                cursor = await connection.execute(
                    "SELECT status, summary, document, created_at, updated_at FROM runs"
                    " WHERE id = %s FOR UPDATE",
                    (run_id,),
                )
                row = await cursor.fetchone()
                if row is not None:
                    break
            else:
                raise psycopg.errors.SerializationFailure(f"run {run_id!r} kept disappearing")
            stored_status, stored_summary, stored_document, created_at, updated_at = row
            if stored_status != RUNNING:
                # A finished run is final: the same write again (a retry) is
                # answered as stored, any other is refused.
                if (status, summary_json, document_json) != (
                    stored_status,
                    stored_summary,
                    stored_document,
                ):
                    raise RunFinished(
                        f"run {run_id!r} is finished ({stored_status}) and never changes"
                    )
                stored = run_from_row(
                    run_id,
                    status,
                    stored_summary,
                    None,
                    _timestamp(created_at),
                    _timestamp(updated_at),
                )
                return stored, False
            cursor = await connection.execute(
                "UPDATE runs SET status = %s, summary = %s, document = %s,"
                " updated_at = clock_timestamp() WHERE id = %s RETURNING updated_at",
                (status, summary_json, document_json, run_id),
            )
            updated = await cursor.fetchone()
            assert updated is not None
            stored = run_from_row(
                run_id, status, summary_json, None, _timestamp(created_at), _timestamp(updated[0])
            )
            return stored, False

    async def put_run(
        self, run_id: str, status: str, summary_json: str, document_json: str
    ) -> tuple[StoredRun, bool]:
        """Create or replace a run; answers after the commit.

        Also says whether the run was created. A run whose stored status is
        not ``running`` is final: writing it again with other content raises
        :class:`RunFinished`. The answer carries the summary, not the document.
        """
        return await self._run(
            lambda connection: self._put_run(
                connection, run_id, status, summary_json, document_json
            )
        )

    async def get_run(self, run_id: str) -> StoredRun | None:
        """The run with this id, document included, or None."""

        async def read(connection: Connection) -> StoredRun | None:
            cursor = await connection.execute(
                "SELECT id, status, summary, document, created_at, updated_at FROM runs"
                " WHERE id = %s",
                (run_id,),
            )
            row = await cursor.fetchone()
            if row is None:
                return None
            found, status, summary, document, created_at, updated_at = row
            return run_from_row(
                found, status, summary, document, _timestamp(created_at), _timestamp(updated_at)
            )

        return await self._run(read)

    async def list_runs(self, limit: int, status: str | None = None) -> list[StoredRun]:
        """Up to ``limit`` runs, newest first (by creation), summaries only."""

        async def page(connection: Connection) -> list[StoredRun]:
            query = "SELECT id, status, summary, created_at, updated_at FROM runs"
            if status is None:
                cursor = await connection.execute(f"{query} ORDER BY seq DESC LIMIT %s", (limit,))
            else:
                cursor = await connection.execute(
                    f"{query} WHERE status = %s ORDER BY seq DESC LIMIT %s", (status, limit)
                )
            return [
                run_from_row(r[0], r[1], r[2], None, _timestamp(r[3]), _timestamp(r[4]))
                for r in await cursor.fetchall()
            ]

        return await self._run(page)
