"""Work the service does behind a run's answer (freeing its slot, stopping old zygotes)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class BackgroundWork:
    """Tasks started on the loop and kept until done, so that closing can wait for them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work` on the loop; nobody awaits its result."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for what is running now."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
