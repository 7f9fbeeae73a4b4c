"""A minimal keep-alive HTTP/1.1 client for the benchmarks.

A load generator should cost the machine as little as possible, or it
measures itself: on these 2-core machines an ``httpx.AsyncClient`` request
costs about 0.8 ms of the client's own CPU, more than PAGI's server spends
on a request. This client sends one prepared request at a time over one
connection and reads the whole answer (``Content-Length`` or chunked), as
``wrk`` or ``h2load`` would. A connection the server closed while it sat
idle (PAGI closes one that sends no request for 10 s) is opened again
before the next request, as any pooling client does.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit


class KeepAliveConnection:
    """One HTTP/1.1 connection to `base_url`, reused for every request."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.headers = {"host": f"{self.host}:{self.port}", **(headers or {})}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> KeepAliveConnection:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def _reopen_if_closed(self) -> None:
        assert self._reader is not None and self._writer is not None, "use `async with`"
        if self._reader.at_eof():
            self._writer.close()
            await self.__aenter__()

    async def __aexit__(self, *_: object) -> None:
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """Send one request, return (status, body)."""
        await self._reopen_if_closed()
        assert self._reader is not None and self._writer is not None
        head = [f"{method} {path} HTTP/1.1"]
        head += [f"{name}: {value}" for name, value in self.headers.items()]
        if body or method in ("POST", "PUT"):
            head += ["content-type: application/json", f"content-length: {len(body)}"]
        self._writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        status_line, _, header_block = (
            (await self._reader.readuntil(b"\r\n\r\n")).decode("latin-1").partition("\r\n")
        )
        status = int(status_line.split(" ", 2)[1])
        fields = {}
        for line in header_block.split("\r\n"):
            name, _, value = line.partition(":")
            if name:
                fields[name.strip().lower()] = value.strip()
        if fields.get("transfer-encoding", "").lower() == "chunked":
            return status, await self._read_chunked()
        return status, await self._reader.readexactly(int(fields.get("content-length", "0")))

    async def _read_chunked(self) -> bytes:
        assert self._reader is not None
        chunks = []
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self._reader.readuntil(b"\r\n")
                return b"".join(chunks)
            chunks.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)

    async def json(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A request with a JSON body (or none), answered in JSON."""
        payload = b"" if body is None else json.dumps(body).encode()
        status, answer = await self.request(method, path, payload)
        return status, json.loads(answer)
