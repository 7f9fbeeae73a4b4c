"""The shared outgoing client, against a real loopback HTTP server."""

from __future__ import annotations

import asyncio
import importlib.abc
import sys
from collections.abc import AsyncIterator, Sequence
from types import ModuleType

import pytest

from pagi.http import create_service_client

_ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


class _ImportLookups(importlib.abc.MetaPathFinder):
    """Counts the module names the import system had to search for (not in sys.modules)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> None:
        self.names.append(fullname)
        return None


async def _answer_every_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(_ANSWER)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # the client closed its connection
    finally:
        writer.close()


@pytest.fixture
async def loopback_url() -> AsyncIterator[str]:
    server = await asyncio.start_server(_answer_every_request, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}"


async def test_calls_do_not_search_the_import_path(loopback_url: str) -> None:
    """A call costs no import lookup: httpcore asks for ``sniffio`` on every request.

    Without it installed, each of those asks searches every sys.path entry
    (tens of µs, several times per call, in every service that calls another).
    """
    client = create_service_client(loopback_url, "demo", None, 2.0)
    lookups = _ImportLookups()
    try:
        assert (await client.get("/first")).status_code == 200  # lazy imports happen here
        sys.meta_path.insert(0, lookups)
        for _ in range(5):
            assert (await client.get("/again")).json() == {}
    finally:
        sys.meta_path.remove(lookups)
        await client.aclose()
    assert lookups.names == []
