"""Admission control: a bounded number of runs at once, a bounded FIFO queue.

A request either gets a run slot at once, waits in the queue (first come,
first served) for at most ``queue_wait_seconds``, or is refused with
:class:`AdmissionRefused`, which the service answers with 429 and a
``Retry-After`` estimated from how long recent runs held their slot.
Capacity follows the policy: :meth:`Admission.configure` applies a new
version without disturbing runs in flight.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from pagi.metric_catalogue import ADMISSION_REFUSED, QUEUE_WAIT

MAX_RETRY_AFTER_SECONDS = 60


class AdmissionRefused(Exception):
    """No run slot now; ``retry_after`` is a hint in whole seconds."""

    def __init__(self, reason: str, retry_after: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class Admission:
    """Bounded concurrency (``max_running``) with a bounded queue (``queue_length``)."""

    def __init__(self, max_running: int, queue_length: int, queue_wait_seconds: float) -> None:
        self._max_running = max_running
        self._queue_length = queue_length
        self._queue_wait = queue_wait_seconds
        self._running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._mean_hold_seconds = 0.5

    @property
    def running(self) -> int:
        """Runs holding a slot now."""
        return self._running

    @property
    def queued(self) -> int:
        """Requests waiting for a slot now."""
        return sum(1 for waiter in self._waiters if not waiter.done())

    def stats(self) -> dict[str, int | float]:
        """Current load and capacity, for ``/health``."""
        return {
            "running": self.running,
            "queued": self.queued,
            "max_concurrent_runs": self._max_running,
            "queue_length": self._queue_length,
        }

    def configure(self, max_running: int, queue_length: int, queue_wait_seconds: float) -> None:
        """Apply new capacity; waiters get slots at once if there is more room."""
        self._max_running = max_running
        self._queue_length = queue_length
        self._queue_wait = queue_wait_seconds
        while self._running < self._max_running and self._hand_over():
            self._running += 1

    def retry_after(self) -> int:
        """Seconds until a slot is likely free, for ``Retry-After``."""
        waves = (self.queued + 1) / max(self._max_running, 1)
        estimate = math.ceil(self._mean_hold_seconds * waves)
        return min(max(estimate, 1), MAX_RETRY_AFTER_SECONDS)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a run slot for the duration of the block, or raise :class:`AdmissionRefused`."""
        asked = time.monotonic()
        try:
            await self._acquire()
        except AdmissionRefused:
            ADMISSION_REFUSED.labels().inc()
            raise
        started = time.monotonic()
        QUEUE_WAIT.labels().observe(started - asked)
        try:
            yield
        finally:
            held = time.monotonic() - started
            self._mean_hold_seconds = 0.8 * self._mean_hold_seconds + 0.2 * held
            self._release()

    async def _acquire(self) -> None:
        if self._running < self._max_running and not self.queued:
            self._running += 1
            return
        if self.queued >= self._queue_length:
            raise AdmissionRefused(
                f"the sandbox is busy: {self._running} runs in progress and the queue"
                f" of {self._queue_length} is full",
                self.retry_after(),
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self._queue_wait):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                if isinstance(exc, TimeoutError):
                    return  # the slot arrived just as the wait ended: keep it
                self._release()  # given a slot but cancelled: pass it on
            else:
                waiter.cancel()
                with suppress(ValueError):
                    self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise AdmissionRefused(
                    f"no run slot became free within {self._queue_wait:g} s",
                    self.retry_after(),
                ) from None
            raise

    def _hand_over(self) -> bool:
        """Give a slot to the first live waiter; False when nobody waits."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return True
        return False

    def _release(self) -> None:
        if self._running > self._max_running or not self._hand_over():
            self._running -= 1
