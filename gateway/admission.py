"""Bounding the number of upstream calls in flight: excess calls wait briefly, then fail."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class GatewayBusy(Exception):
    """No slot came free within the waiting time."""


class Admission:
    """At most ``limit`` calls at once; a call waits up to ``wait_seconds`` for a slot."""

    def __init__(self, limit: int, wait_seconds: float) -> None:
        self.limit = limit
        self.wait_seconds = wait_seconds
        self._slots = asyncio.Semaphore(limit)
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Calls holding a slot now."""
        return self._in_flight

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for the duration of the block; :class:`GatewayBusy` when none frees up."""
        try:
            # Semaphore.acquire gives the slot back itself when cancelled after
            # being woken, so a timeout here cannot leak a slot.
            async with asyncio.timeout(self.wait_seconds):
                await self._slots.acquire()
        except TimeoutError:
            raise GatewayBusy(
                f"model gateway busy: {self.limit} upstream calls in flight; retry shortly"
            ) from None
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            self._slots.release()
