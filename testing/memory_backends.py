"""The memory's two backends, as the tests drive them: same tests, real databases.

:data:`BACKENDS` names them; :func:`backend_fixture` gives a
:class:`Backend` per name: a fresh, empty database each time (a SQLite file
in the test's directory, or a new database on the session's throwaway
PostgreSQL server, testing/postgres_server.py), the settings that point the
memory service at it, and the few faults that are made differently on each
(another session holding a lock, a record that is not JSON, a read-only
database).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from memory.store import MemoryStore, PostgresStore, SQLiteStore
from testing.postgres_server import PostgresServer, shared_server

BACKENDS = ("sqlite", "postgresql")


@dataclass
class Backend:
    """One backend, with a fresh database of its own."""

    name: str
    directory: Path
    url: str | None = None
    """The PostgreSQL database's URL (None for SQLite)."""
    server: PostgresServer | None = None
    _stores: list[MemoryStore] = field(default_factory=list)

    @property
    def sqlite_path(self) -> Path:
        return self.directory / "state" / "memory.db"

    def env(self) -> dict[str, str]:
        """What the memory service's environment needs to use this database."""
        if self.url is not None:
            return {"MEMORY_DATABASE_URL": self.url}
        return {"PAGI_MEMORY_DB": str(self.sqlite_path)}

    def settings_fields(self) -> dict[str, Any]:
        """The same, as MemorySettings fields."""
        if self.url is not None:
            return {"memory_database_url": self.url}
        return {"pagi_memory_db": self.sqlite_path}

    def store(self, busy_timeout_seconds: float = 0.3, **options: Any) -> MemoryStore:
        """A store on this database (not opened); closed by :meth:`close_all`."""
        made: MemoryStore
        if self.url is not None:
            made = PostgresStore(self.url, busy_timeout_seconds, **options)
        else:
            made = SQLiteStore(self.sqlite_path, busy_timeout_seconds, **options)
        self._stores.append(made)
        return made

    async def close_all(self) -> None:
        for store in self._stores:
            await store.close()

    # ------------------------------------------------------------------ faults

    @contextmanager
    def locked(self, table: str = "records") -> Iterator[None]:
        """Another session holds ``table`` exclusively while the block runs (SQLite: all)."""
        if self.url is None:
            locker = sqlite3.connect(self.sqlite_path, isolation_level=None)
            locker.execute("BEGIN EXCLUSIVE")
            try:
                yield
            finally:
                locker.execute("ROLLBACK")
                locker.close()
            return
        with psycopg.connect(self.url) as locker:
            locker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            try:
                yield
            finally:
                locker.rollback()

    def execute(self, statement: str) -> None:
        """Run one statement on the database from outside the store."""
        if self.url is None:
            with sqlite3.connect(self.sqlite_path) as other:
                other.execute(statement)
            return
        with psycopg.connect(self.url, autocommit=True) as other:
            other.execute(statement)

    def make_read_only(self) -> None:
        """Every later write of the store is refused as on a read-only database.

        SQLite: what a read-only file system or file gives (SQLITE_READONLY).
        PostgreSQL: what a hot standby, or a database switched to read-only,
        gives; its sessions are ended so the store's new ones take it up.
        """
        if self.url is None:
            for store in self._stores:
                assert isinstance(store, SQLiteStore)
                if store._connection is not None:
                    store._connection.execute("PRAGMA query_only=ON")
            return
        database = psycopg.conninfo.conninfo_to_dict(self.url)["dbname"]
        with psycopg.connect(self.url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            )

    @asynccontextmanager
    async def writes_held(self, store: MemoryStore) -> AsyncIterator[None]:
        """While the block runs, the store's appends queue up (its writer is busy)."""
        if isinstance(store, SQLiteStore):
            # Occupy the store's one database thread: the next batch's job queues behind.
            hold = threading.Event()
            blocker = asyncio.get_running_loop().run_in_executor(store._executor, hold.wait)
            try:
                yield
            finally:
                hold.set()
                await blocker
            return
        assert isinstance(store, PostgresStore)
        async with store._write_turn:
            yield


def make_backend(name: str, directory: Path) -> Backend:
    """A backend on a fresh database."""
    if name == "sqlite":
        return Backend(name, directory)
    server = shared_server()
    return Backend(name, directory, url=server.create_database(), server=server)
