"""What the SQLite and PostgreSQL backends do alike; each brings its dialect and connections.

Both keep the same two tables (``records``; ``runs``, ordered by ``seq``)
and read them with the same statements, written once here in the
backend's placeholder style. :class:`SqlStore` holds the settings both
take, the group-committed appends and every read; a backend provides

- ``_read(query, params, consume)``: run one read and hand its rows to
  ``consume`` (SQLite on its database thread, PostgreSQL on a pooled
  connection), any database failure raised as :class:`StoreUnavailable`;
- ``_start_batch(batch)``: schedule the commit of one batch of appends;
- ``_put_run``, ``open``, ``close`` and ``location``.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, TypeVar

from memory.store.base import (
    LIST_MAX_BYTES,
    StoredRecord,
    StoredRun,
    StoreUnavailable,
    cut_page,
    record_from_row,
    run_from_row,
)
from memory.store.group_commit import Batch, GroupCommit, PendingWrite

T = TypeVar("T")
Row = tuple[Any, ...]

OPERATION_MARGIN_SECONDS = 2.0
"""Beyond the busy (lock) timeout: how long an operation may take in total before 503."""


class Statements:
    """The statements both backends run, in one placeholder style (``?`` or ``%s``)."""

    def __init__(self, placeholder: str) -> None:
        p = placeholder
        records = "SELECT id, kind, content, created_at FROM records"
        runs = "SELECT id, status, summary, created_at, updated_at FROM runs"
        self.latest_record = f"{records} ORDER BY id DESC LIMIT 1"
        self.records = f"{records} ORDER BY id DESC LIMIT {p}"
        self.records_of_kind = f"{records} WHERE kind = {p} ORDER BY id DESC LIMIT {p}"
        self.run = (
            f"SELECT id, status, summary, document, created_at, updated_at FROM runs WHERE id = {p}"
        )
        self.runs = f"{runs} ORDER BY seq DESC LIMIT {p}"
        self.runs_of_status = f"{runs} WHERE status = {p} ORDER BY seq DESC LIMIT {p}"
        self.stored_run = (
            f"SELECT status, summary, document, created_at, updated_at FROM runs WHERE id = {p}"
        )
        # Retention: the oldest rows go in the transaction that adds new ones.
        self.drop_old_records = f"DELETE FROM records WHERE id <= {p}"
        self.drop_old_runs = f"DELETE FROM runs WHERE seq <= {p}"


def _newest_record(rows: Iterable[Row]) -> StoredRecord | None:
    for row in rows:
        return record_from_row(*row)
    return None


def _one_run(rows: Iterable[Row]) -> StoredRun | None:
    for row in rows:
        return run_from_row(*row)
    return None


def _run_summaries(rows: Iterable[Row]) -> list[StoredRun]:
    return [run_from_row(r[0], r[1], r[2], None, r[3], r[4]) for r in rows]


class SqlStore(ABC):
    """The memory's collections in a SQL database; subclasses say which and how to reach it."""

    backend: ClassVar[str]
    sql: ClassVar[Statements]

    def __init__(
        self, busy_timeout_seconds: float, max_records: int | None, max_runs: int | None
    ) -> None:
        self.busy_timeout_seconds = busy_timeout_seconds
        self.max_records = max_records
        self.max_runs = max_runs
        self.operation_timeout_seconds = busy_timeout_seconds + OPERATION_MARGIN_SECONDS
        self.state = "not opened"
        self._group = GroupCommit(self._start_batch)

    # ------------------------------------------------------------------ what a backend brings

    @abstractmethod
    def _start_batch(self, batch: Batch) -> asyncio.Future[list[StoredRecord | None]]:
        """Schedule one batch's commit; the job calls ``self._group.take(batch)`` first."""

    @abstractmethod
    async def _read(self, query: str, params: Row, consume: Callable[[Iterable[Row]], T]) -> T:
        """Run one read statement; ``consume`` turns its rows into the answer."""

    @abstractmethod
    async def _put_run(
        self, run_id: str, status: str, summary_json: str, document_json: str
    ) -> tuple[StoredRun, bool]:
        """:meth:`put_run` in one transaction."""

    # ------------------------------------------------------------------ records

    async def append(self, kind: str, content_json: str) -> StoredRecord:
        """Store a record; returns only after the commit is durable.

        Writes that arrive while the previous batch commits are committed
        together (group commit): one transaction acknowledges all of them.
        """
        try:
            return await self._group.append(
                PendingWrite(kind, content_json), self.operation_timeout_seconds
            )
        except StoreUnavailable as exc:
            self.state = exc.reason
            raise

    async def latest(self) -> StoredRecord | None:
        """The newest record, or None when there is none."""
        return await self._read(self.sql.latest_record, (), _newest_record)

    async def list(
        self, limit: int, kind: str | None = None, max_bytes: int = LIST_MAX_BYTES
    ) -> tuple[list[StoredRecord], bool]:
        """Up to ``limit`` records, newest first, optionally of one kind.

        Also says whether the page was cut short at ``max_bytes`` of content.
        """
        if kind is None:
            query, params = self.sql.records, (limit,)
        else:
            query, params = self.sql.records_of_kind, (kind, limit)
        return await self._read(query, params, lambda rows: cut_page(rows, max_bytes))

    # ------------------------------------------------------------------ runs

    async def put_run(
        self, run_id: str, status: str, summary_json: str, document_json: str
    ) -> tuple[StoredRun, bool]:
        """Create or replace a run; answers after the commit is durable.

        Also says whether the run was created. A run whose stored status is
        not ``running`` is final: writing it again with other content raises
        :class:`RunFinished`. The answer carries the summary, not the document.
        """
        return await self._put_run(run_id, status, summary_json, document_json)

    async def get_run(self, run_id: str) -> StoredRun | None:
        """The run with this id, document included, or None."""
        return await self._read(self.sql.run, (run_id,), _one_run)

    async def list_runs(self, limit: int, status: str | None = None) -> list[StoredRun]:
        """Up to ``limit`` runs, newest first (by creation), summaries only."""
        if status is None:
            query, params = self.sql.runs, (limit,)
        else:
            query, params = self.sql.runs_of_status, (status, limit)
        return await self._read(query, params, _run_summaries)
