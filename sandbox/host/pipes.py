"""A run's stdin, stdout, stderr and config pipes, written and read on the event loop.

Never with a blocking call: the loop serves every other run meanwhile.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable


def write_now(fd: int, data: bytes) -> memoryview:
    """Write what a pipe takes without blocking; return the rest (empty: all written)."""
    os.set_blocking(fd, False)
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            break
        except OSError:
            return memoryview(b"")  # the reader is gone: nothing more to write
    return view


async def write_all(
    loop: asyncio.AbstractEventLoop, fd: int, data: bytes | memoryview, close: bool = True
) -> None:
    """Write `data` to a pipe without blocking the loop; close it at the end (EOF) if `close`."""
    os.set_blocking(fd, False)
    view = memoryview(data)
    try:
        while view:
            try:
                written = os.write(fd, view)
                view = view[written:]
                continue
            except BlockingIOError:
                pass
            except (BrokenPipeError, OSError):
                return
            ready = loop.create_future()
            loop.add_writer(fd, ready.set_result, None)
            try:
                await ready
            finally:
                loop.remove_writer(fd)
    finally:
        if close:
            os.close(fd)


def send(loop: asyncio.AbstractEventLoop, fd: int, data: bytes) -> asyncio.Task[None] | None:
    """Write `data` to a pipe and close it: at once when it fits, else on the loop (the task).

    Usually it fits: the reader need not wait for the loop's next turn.
    """
    rest = write_now(fd, data)
    if rest:
        return loop.create_task(write_all(loop, fd, rest))
    os.close(fd)
    return None


async def read_capped(
    loop: asyncio.AbstractEventLoop, fd: int, cap: int, on_overflow: Callable[[], None]
) -> tuple[bytes, bool]:
    """Read a pipe to EOF keeping at most `cap` bytes; call `on_overflow` once past it."""
    os.set_blocking(fd, False)
    buffer = bytearray()
    truncated = False
    finished = loop.create_future()

    def readable() -> None:
        nonlocal truncated
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            if not finished.done():
                finished.set_result(None)
            return
        room = cap - len(buffer)
        if len(chunk) > room:
            buffer.extend(chunk[: max(room, 0)])
            if not truncated:
                truncated = True
                on_overflow()
        else:
            buffer.extend(chunk)

    loop.add_reader(fd, readable)
    try:
        await finished
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return bytes(buffer), truncated


def output_of(task: asyncio.Task[tuple[bytes, bool]]) -> tuple[bytes, bool]:
    """What :func:`read_capped` gathered; nothing if it never finished."""
    if task.cancelled() or task.exception() is not None:
        return b"", False
    return task.result()
