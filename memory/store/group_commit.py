"""Group commit: appends that arrive while the database is busy are committed together.

Each backend commits one batch at a time. While a batch waits for its turn,
new appends join it; once it starts, it is closed and later appends start
the next one. One transaction (one durable flush) then acknowledges every
write of the batch, so concurrent writers do not queue behind one flush
each.

A writer waits at most the operation timeout. One that gives up while its
batch has not started is marked abandoned and never stored later (its caller
got 503); one whose batch already started may still be committed (an
ambiguous outcome, as with any database whose answer is lost).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from memory.store.base import StoredRecord, StoreUnavailable

TIMED_OUT = "database did not answer in time"


@dataclass
class PendingWrite:
    """A write waiting for its batch; ``abandoned`` once its caller stopped waiting."""

    kind: str
    content_json: str
    abandoned: bool = False


@dataclass
class Batch:
    """Writes committed together; ``job`` resolves to one record (or None) per write."""

    writes: list[PendingWrite] = field(default_factory=list)
    job: asyncio.Future[list[StoredRecord | None]] | None = None


BatchStarter = Callable[[Batch], "asyncio.Future[list[StoredRecord | None]]"]


class GroupCommit:
    """Hands appends to batches; ``start(batch)`` schedules a batch's commit job.

    The job must call :meth:`take` first thing when its turn comes (from any
    thread), and commit the writes it returns, skipping abandoned ones.
    """

    def __init__(self, start: BatchStarter) -> None:
        self._start = start
        self._open: Batch | None = None
        self._lock = threading.Lock()  # the SQLite job takes batches on its own thread

    def take(self, batch: Batch) -> list[PendingWrite]:
        """Close ``batch`` to newcomers and return its writes."""
        with self._lock:
            if self._open is batch:
                self._open = None
            return list(batch.writes)

    async def append(self, write: PendingWrite, timeout: float) -> StoredRecord:
        """Join (or start) the open batch and wait for its commit, at most ``timeout``."""
        with self._lock:
            batch = self._open
            if batch is None:
                batch = self._open = Batch()
                batch.job = self._start(batch)
                # Retrieve the outcome even when every writer stopped waiting.
                batch.job.add_done_callback(lambda job: job.cancelled() or job.exception())
            index = len(batch.writes)
            batch.writes.append(write)
        assert batch.job is not None
        try:
            records = await asyncio.wait_for(asyncio.shield(batch.job), timeout)
        except TimeoutError:
            write.abandoned = True
            raise StoreUnavailable(TIMED_OUT) from None
        record = records[index]
        if record is None:  # abandoned just as the batch ran
            raise StoreUnavailable(TIMED_OUT)
        return record
