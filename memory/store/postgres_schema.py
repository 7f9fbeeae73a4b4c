"""The memory's schema in PostgreSQL: versioned migrations, applied once by whichever replica.

Each version is applied in one transaction under a transaction-scoped
advisory lock, so replicas starting together take turns, and is recorded in
:data:`SCHEMA_TABLE`. A database that has a version this code does not know
is newer than it: :class:`SchemaTooNew`, and the replica refuses to serve.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from pagi.logging import log_event

logger = logging.getLogger(__name__)

Connection = psycopg.AsyncConnection[Any]

LOCK_CLASS = 0x50414749
"""Advisory lock keys are two int4s: "PAGI", and what the lock guards."""
MIGRATION_LOCK = 1
APPEND_LOCK = 2

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

MIGRATION_TIMEOUT_SECONDS = 30.0
"""Migrations may wait for another replica's migrations."""


class SchemaTooNew(Exception):
    """The database's schema is newer than this version of PAGI knows."""


async def migrate(connection: Connection) -> None:
    """Apply the versions this database lacks; replicas starting together take turns.

    Leaves the connection's lock and statement timeouts at the migration's
    (longer) ones: the caller sets its own back.
    """
    await connection.execute(f"SET lock_timeout = {int(MIGRATION_TIMEOUT_SECONDS * 1000)}")
    await connection.execute(f"SET statement_timeout = {int(MIGRATION_TIMEOUT_SECONDS * 1000)}")
    async with connection.transaction():
        await connection.execute(
            "SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, MIGRATION_LOCK)
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
