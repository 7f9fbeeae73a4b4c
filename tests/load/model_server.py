"""A model server that answers every chat completion after a fixed time, as its own process.

The gateway load test points the gateway at it. Run apart from the test's
own process, it does not compete with the flooding client for the GIL, so
the flood measures the gateway's slots, not the test's event loop:

    python -m tests.load.model_server SECONDS

prints the server's base URL (``http://127.0.0.1:PORT/timed/v1``) on its
first line of output, then serves until killed.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from testing.fake_openai import PLAN_TEXT, FakeOpenAI
from testing.stack import REPO


class TimedModelServer(FakeOpenAI):
    """An OpenAI-compatible server that answers every call after ``seconds``."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    async def _scenario_timed(
        self, writer: asyncio.StreamWriter, stream: bool, n: int, h: dict
    ) -> None:
        await asyncio.sleep(self.seconds)
        await self._reply(writer, stream, PLAN_TEXT)


async def _serve(seconds: float) -> None:
    server = await TimedModelServer(seconds).start()
    print(server.url("timed"), flush=True)
    await asyncio.Event().wait()


@contextmanager
def timed_model_server(seconds: float) -> Iterator[str]:
    """Run the server in a child process for the duration of the block; yield its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.load.model_server", str(seconds)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), f"the model server did not start: {url!r}"
        yield url
    finally:
        process.kill()
        process.wait()


if __name__ == "__main__":
    asyncio.run(_serve(float(sys.argv[1])))
