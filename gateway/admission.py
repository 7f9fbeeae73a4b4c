"""Bounding the number of upstream calls in flight: excess calls wait briefly, then fail.

A refused call learns when to retry: ``GatewayBusy.retry_after_seconds``,
estimated from how long recent calls held their slot and how many wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

MIN_RETRY_AFTER_SECONDS = 0.05
MAX_RETRY_AFTER_SECONDS = 30.0


class GatewayBusy(Exception):
    """No slot came free within the waiting time; ``retry_after_seconds`` is a hint."""

    def __init__(self, message: str, retry_after_seconds: float) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class Admission:
    """At most ``limit`` calls at once; a call waits up to ``wait_seconds`` for a slot."""

    def __init__(self, limit: int, wait_seconds: float) -> None:
        self.limit = limit
        self.wait_seconds = wait_seconds
        self._slots = asyncio.Semaphore(limit)
        self._in_flight = 0
        self._waiting = 0
        self._mean_hold_seconds = 0.1

    @property
    def in_flight(self) -> int:
        """Calls holding a slot now."""
        return self._in_flight

    def retry_after_seconds(self) -> float:
        """When a slot is likely free for one more call: the waiters' turns, then its own."""
        estimate = self._mean_hold_seconds * (self._waiting + 1) / self.limit
        return min(max(estimate, MIN_RETRY_AFTER_SECONDS), MAX_RETRY_AFTER_SECONDS)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for the duration of the block; :class:`GatewayBusy` when none frees up."""
        self._waiting += 1
        try:
            # Semaphore.acquire gives the slot back itself when cancelled after
            # being woken, so a timeout here cannot leak a slot.
            async with asyncio.timeout(self.wait_seconds):
                await self._slots.acquire()
        except TimeoutError:
            raise GatewayBusy(
                f"model gateway busy: {self.limit} upstream calls in flight; retry shortly",
                self.retry_after_seconds(),
            ) from None
        finally:
            self._waiting -= 1
        self._in_flight += 1
        started = time.monotonic()
        try:
            yield
        finally:
            held = time.monotonic() - started
            self._mean_hold_seconds = 0.8 * self._mean_hold_seconds + 0.2 * held
            self._in_flight -= 1
            self._slots.release()
