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
  not have yet (``pagi_memory_schema`` records them; see
  :mod:`memory.store.postgres_schema`). A replica that finds a newer schema
  than it knows refuses to serve (503) rather than guess.
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
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from memory.store.base import (
    StoredRecord,
    StoredRun,
    StoreUnavailable,
    finished_as_written,
    iso_time,
    record_from_row,
    run_from_row,
)
from memory.store.group_commit import TIMED_OUT, Batch, PendingWrite
from memory.store.postgres_errors import describe_failure, describe_location
from memory.store.postgres_schema import APPEND_LOCK, LOCK_CLASS, SchemaTooNew, migrate
from memory.store.sql_store import OPERATION_MARGIN_SECONDS, Row, SqlStore, Statements, T
from pagi.logging import log_event

logger = logging.getLogger(__name__)

Connection = psycopg.AsyncConnection[Any]

# A connection attempt that keeps failing is given up after this long; the
# next request starts a fresh one (so recovery never waits out a long backoff).
_RECONNECT_GIVE_UP_SECONDS = 5.0


class PostgresStore(SqlStore):
    """The memory's collections in one PostgreSQL database, shared by every replica."""

    backend = "postgresql"
    sql = Statements("%s")

    def __init__(
        self,
        url: str,
        busy_timeout_seconds: float = 1.0,
        max_records: int | None = None,
        max_runs: int | None = None,
        pool_size: int = 10,
    ) -> None:
        super().__init__(busy_timeout_seconds, max_records, max_runs)
        self.url = url
        self._schema_ready = False
        self._schema_lock = asyncio.Lock()
        self._pool_started = False
        # One batch of appends in flight per replica; the next one gathers meanwhile.
        self._write_turn = asyncio.Lock()
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
            timeout=busy_timeout_seconds + OPERATION_MARGIN_SECONDS / 2,
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
        reason = str(exc) if isinstance(exc, SchemaTooNew) else describe_failure(exc)
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

    async def _read(self, query: str, params: Row, consume: Callable[[Iterable[Row]], T]) -> T:
        async def read(connection: Connection) -> T:
            cursor = await connection.execute(query, params)
            return consume(await cursor.fetchall())

        return await self._run(read)

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
                    try:
                        await migrate(connection)
                    finally:
                        await self._configure(connection)
            except (psycopg.Error, PoolTimeout, SchemaTooNew) as exc:
                raise self._fail(exc) from None
            self._schema_ready = True

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

    # ------------------------------------------------------------------ writes

    def _start_batch(self, batch: Batch) -> asyncio.Future[list[StoredRecord | None]]:
        return asyncio.ensure_future(self._run_batch(batch))

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
                "SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, APPEND_LOCK)
            )
            cursor = await connection.execute("SELECT clock_timestamp()")
            row = await cursor.fetchone()
            assert row is not None
            created_at = iso_time(row[0])
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
                await connection.execute(self.sql.drop_old_records, (max(ids) - self.max_records,))
        return records

    async def _put_run(
        self, run_id: str, status: str, summary_json: str, document_json: str
    ) -> tuple[StoredRun, bool]:
        return await self._run(
            lambda connection: self._write_run(
                connection, run_id, status, summary_json, document_json
            )
        )

    async def _write_run(
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
                        await connection.execute(self.sql.drop_old_runs, (seq - self.max_runs,))
                    return run_from_row(
                        run_id, status, summary_json, None, created_at, created_at
                    ), True
                cursor = await connection.execute(f"{self.sql.stored_run} FOR UPDATE", (run_id,))
                row = await cursor.fetchone()
                if row is not None:
                    break
            else:
                raise psycopg.errors.SerializationFailure(f"run {run_id!r} kept disappearing")
            _, stored_summary, _, created_at, updated_at = row
            if finished_as_written(run_id, (status, summary_json, document_json), row[:3]):
                stored = run_from_row(run_id, status, stored_summary, None, created_at, updated_at)
                return stored, False
            cursor = await connection.execute(
                "UPDATE runs SET status = %s, summary = %s, document = %s,"
                " updated_at = clock_timestamp() WHERE id = %s RETURNING updated_at",
                (status, summary_json, document_json, run_id),
            )
            updated = await cursor.fetchone()
            assert updated is not None
            stored = run_from_row(run_id, status, summary_json, None, created_at, updated[0])
            return stored, False
