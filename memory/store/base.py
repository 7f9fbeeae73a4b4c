"""What every memory backend provides, and the types that cross the store's boundary.

A backend is one class implementing :class:`MemoryStore`: its lifecycle
(``open``, ``close``, ``state``) and one set of methods per collection the
memory holds: the records (:class:`RecordCollection`) and the agents' runs
(:class:`RunCollection`). A new collection is a new protocol here, added to
:class:`MemoryStore`'s bases, with its methods in :mod:`memory.store.sql_store`
(what both backends do alike) or in each backend, and, for PostgreSQL, a
migration in :mod:`memory.store.postgres_schema`. Both backends are run
through the same tests.

Every failure of the database becomes :class:`StoreUnavailable`, whose
``reason`` the API answers with 503: the service never crashes or hangs on
its database, and recovers by itself when the cause goes away.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

LIST_MAX_BYTES = 4 * 1024 * 1024
"""Most record content one list answer carries."""


class StoreUnavailable(Exception):
    """The database cannot serve this operation right now; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class StoredRecord:
    """One memory record as stored."""

    id: int
    kind: str
    content: Any
    created_at: str
    """UTC, ISO 8601 with microseconds (``2026-01-31T12:00:00.000000+00:00``)."""


StoredTime = str | datetime
"""A time as a backend reads it: ISO 8601 text (SQLite) or a timestamp (PostgreSQL)."""


def iso_time(value: StoredTime) -> str:
    """A stored time as the store gives it: UTC, ISO 8601 with microseconds."""
    if isinstance(value, str):
        return value
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def record_from_row(
    record_id: int, kind: str, content_json: str, created_at: StoredTime
) -> StoredRecord:
    """A record from its stored columns; ValueError when the content is not JSON."""
    return StoredRecord(
        id=record_id, kind=kind, content=json.loads(content_json), created_at=iso_time(created_at)
    )


def cut_page(
    rows: Iterable[tuple[int, str, str, StoredTime]], max_bytes: int
) -> tuple[list[StoredRecord], bool]:
    """Rows (newest first) as records, stopped once ``max_bytes`` of content is reached.

    A page always holds at least one record, so one caller cannot make the
    service build an answer of limit x record size, and never gets an empty
    page because one record is large. Also says whether the page was cut.
    """
    records: list[StoredRecord] = []
    size = 0
    for record_id, kind, content, created_at in rows:
        size += len(content)
        if records and size > max_bytes:
            return records, True
        records.append(record_from_row(record_id, kind, content, created_at))
    return records, False


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


def run_from_row(
    run_id: str,
    status: str,
    summary_json: str,
    document_json: str | None,
    created_at: StoredTime,
    updated_at: StoredTime,
) -> StoredRun:
    """A run from its stored columns (``document_json`` None: a summary only)."""
    document = None if document_json is None else json.loads(document_json)
    return StoredRun(
        run_id,
        status,
        json.loads(summary_json),
        document,
        iso_time(created_at),
        iso_time(updated_at),
    )


def finished_as_written(
    run_id: str, written: tuple[str, str, str], stored: tuple[str, str, str]
) -> bool:
    """Whether a run write (status, summary, document) meets a finished run stored just so.

    A finished run is final: the same write again (a retry) is answered as
    stored, any other raises :class:`RunFinished`. False while the stored
    run is still running (the write replaces it).
    """
    if stored[0] == RUNNING:
        return False
    if written != stored:
        raise RunFinished(f"run {run_id!r} is finished ({stored[0]}) and never changes")
    return True


class RecordCollection(Protocol):
    """The records: appended, read newest first."""

    async def append(self, kind: str, content_json: str) -> StoredRecord:
        """Store a record; return it only once its commit is durable."""
        ...

    async def latest(self) -> StoredRecord | None:
        """The newest record (the highest id), or None when there is none."""
        ...

    async def list(
        self, limit: int, kind: str | None = None, max_bytes: int = LIST_MAX_BYTES
    ) -> tuple[list[StoredRecord], bool]:
        """Up to ``limit`` records, newest first, optionally of one kind; and whether cut short."""
        ...


class RunCollection(Protocol):
    """The agents' runs, by id: replaced while running, final once finished."""

    async def put_run(
        self, run_id: str, status: str, summary_json: str, document_json: str
    ) -> tuple[StoredRun, bool]:
        """Create or replace a run once the commit is durable; also says whether it was created.

        A run whose stored status is not ``running`` is final: the same write
        again is answered as stored, any other raises :class:`RunFinished`.
        """
        ...

    async def get_run(self, run_id: str) -> StoredRun | None:
        """The run with this id, document included, or None."""
        ...

    async def list_runs(self, limit: int, status: str | None = None) -> list[StoredRun]:
        """Up to ``limit`` runs, newest first (by creation), summaries only."""
        ...


class MemoryStore(RecordCollection, RunCollection, Protocol):
    """A memory backend: where the collections live, and its lifecycle."""

    backend: str
    """``sqlite`` or ``postgresql``."""
    state: str
    """``ok``, ``not opened``, or why the last operation failed (shown at ``/health``)."""

    @property
    def location(self) -> str:
        """Where the data lives, for logs (never a password)."""
        ...

    async def open(self) -> None:
        """Connect and bring the schema up to date; StoreUnavailable when it cannot (yet)."""
        ...

    async def close(self) -> None:
        """Let go of every connection."""
        ...
