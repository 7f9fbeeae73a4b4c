"""A real HTTP server on loopback that speaks the OpenAI chat-completions wire format.

Written on raw asyncio streams so that it can misbehave the way real servers
do: answer slowly, rate limit, fail, send garbage, or drop the connection in
the middle of a reply. The scenario is the first path segment of the URL
(``http://127.0.0.1:PORT/<scenario>/v1``); ``dynamic`` follows
:attr:`FakeOpenAI.mode`. Anything after a ``-`` in the segment only makes the
per-scenario request counter distinct (``flaky429-a``, ``flaky429-b``).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

PLAN_TEXT = (
    "1. Inventory the log files\n"
    "2. Count the errors per hour\n"
    "3. Plot the hourly counts\n"
    "4. Share the chart with the team\n"
)
PLAN_STEPS = [
    "Inventory the log files",
    "Count the errors per hour",
    "Plot the hourly counts",
    "Share the chart with the team",
]
CHATTY_TEXT = "Sure! Here is a plan:\n\n" + PLAN_TEXT.replace("2. ", "2) **") + "\nGood luck!"


@dataclass
class RecordedRequest:
    """One request the fake received."""

    scenario: str
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeOpenAI:
    """The server; ``start()`` it, point a backend at ``url(scenario)``, ``stop()`` it."""

    mode: str = "ok"
    requests: list[RecordedRequest] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> FakeOpenAI:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except BaseException:  # noqa: BLE001 - cancelled handlers
                pass

    def url(self, scenario: str) -> str:
        return f"http://127.0.0.1:{self.port}/{scenario}/v1"

    def of(self, scenario: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.scenario == scenario]

    # ------------------------------------------------------------------ plumbing

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await reader.readline()).decode("latin-1").strip()
            if not request_line:
                return
            method, path, _ = request_line.split(" ", 2)
            headers: dict[str, str] = {}
            while True:
                line = (await reader.readline()).decode("latin-1").rstrip("\r\n")
                if not line:
                    break
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            raw = await reader.readexactly(int(headers.get("content-length", "0")))
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw
            segment = path.strip("/").split("/")[0]
            scenario = self.mode if segment == "dynamic" else segment
            self.requests.append(RecordedRequest(scenario, method, path, headers, body))
            self.counters[segment] = self.counters.get(segment, 0) + 1
            name = scenario.split("-")[0]
            stream = isinstance(body, dict) and bool(body.get("stream"))
            await getattr(self, f"_scenario_{name}")(
                writer, stream, self.counters[segment], headers
            )
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        extra: dict[str, str] | None = None,
    ) -> None:
        reason = {200: "OK", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}.get(
            status, "Status"
        )
        head = [
            f"HTTP/1.1 {status} {reason}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            "Connection: close",
            *(f"{k}: {v}" for k, v in (extra or {}).items()),
        ]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()

    async def _reply(self, writer: asyncio.StreamWriter, stream: bool, content: str) -> None:
        if stream:
            await self._sse(writer, _chunks(content))
            return
        reply = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": "fake-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
        }
        await self._send(writer, 200, json.dumps(reply).encode())

    async def _sse_head(self, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()

    async def _sse_event(self, writer: asyncio.StreamWriter, payload: str) -> None:
        data = f"data: {payload}\n\n".encode()
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()

    async def _sse(self, writer: asyncio.StreamWriter, events: list[str], end: bool = True) -> None:
        await self._sse_head(writer)
        for payload in events:
            await self._sse_event(writer, payload)
        if end:
            await self._sse_event(writer, "[DONE]")
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async def _error(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        message: str,
        extra: dict[str, str] | None = None,
    ) -> None:
        body = json.dumps({"error": {"message": message, "type": "fake_error"}}).encode()
        await self._send(writer, status, body, extra=extra)

    # ------------------------------------------------------------------ scenarios

    async def _scenario_ok(
        self, writer: asyncio.StreamWriter, stream: bool, n: int, h: dict
    ) -> None:
        await self._reply(writer, stream, PLAN_TEXT)

    async def _scenario_nostream(
        self, writer: asyncio.StreamWriter, stream: bool, n: int, h: dict
    ) -> None:
        await self._reply(writer, False, PLAN_TEXT)  # ignores "stream": true

    async def _scenario_chatty(
        self, writer: asyncio.StreamWriter, stream: bool, n: int, h: dict
    ) -> None:
        await self._reply(writer, stream, CHATTY_TEXT)

    async def _scenario_slow(
        self, writer: asyncio.StreamWriter, stream: bool, n: int, h: dict
    ) -> None:
        await asyncio.sleep(30)
        await self._reply(writer, stream, PLAN_TEXT)

    async def _scenario_slowstream(
        self, writer: asyncio.StreamWriter, stream: bool, n: int, h: dict
    ) -> None:
        await self._sse_head(writer)
        for payload in _chunks(PLAN_TEXT.split("\n")[0] + "\n", finish=False):
            await self._sse_event(writer, payload)
        await asyncio.sleep(30)

    async def _scenario_flaky429(
        self, writer: asyncio.StreamWriter, stream: bool, n: int, h: dict
    ) -> None:
        if n == 1:
            await self._error(writer, 429, "slow down", {"Retry-After": "0.3"})
        else:
            await self._reply(writer, stream, PLAN_TEXT)

    async def _scenario_flaky503(
        self, writer: asyncio.StreamWriter, stream: bool, n: int, h: dict
    ) -> None:
        if n <= 2:
            await self._error(writer, 503, "overloaded")
        else:
            await self._reply(writer, stream, PLAN_TEXT)

    async def _scenario_down(
        self, writer: asyncio.StreamWriter, stream: bool, n: int, h: dict
    ) -> None:
        await self._error(writer, 503, "the model is loading")

    async def _scenario_ratelimited(
        self, writer: asyncio.StreamWriter, stream: bool, n: int, h: dict
    ) -> None:
        await self._error(writer, 429, "quota exceeded", {"Retry-After": "60"})

    async def _scenario_garbage(
        self, writer: asyncio.StreamWriter, stream: bool, n: int, h: dict
    ) -> None:
        await self._send(writer, 200, b"<html>\x00\xff definitely not json {", "text/html")

    async def _scenario_nochoices(
        self, writer: asyncio.StreamWriter, stream: bool, n: int, h: dict
    ) -> None:
        if stream:
            await self._sse(writer, ['{"id": "x", "object": "chat.completion.chunk"}'])
        else:
            await self._send(writer, 200, b'{"id": "x", "object": "chat.completion"}')

    async def _scenario_empty(
        self, writer: asyncio.StreamWriter, stream: bool, n: int, h: dict
    ) -> None:
        await self._reply(writer, stream, "   \n\n")

    async def _scenario_garbagestream(
        self, writer: asyncio.StreamWriter, stream: bool, n: int, h: dict
    ) -> None:
        await self._sse(writer, [_chunks(PLAN_TEXT)[1], "{not json"])

    async def _scenario_cutoff(
        self, writer: asyncio.StreamWriter, stream: bool, n: int, h: dict
    ) -> None:
        if stream:
            # Two whole steps, then the connection drops without the final chunk.
            events = _chunks(
                "1. Inventory the log files\n2. Count the errors per hour\n3. Plo", finish=False
            )
            await self._sse(writer, events, end=False)
            return
        reply = json.dumps({"choices": [{"message": {"content": PLAN_TEXT}}]}).encode()
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(reply)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + reply[: len(reply) // 2])
        await writer.drain()

    async def _scenario_unauthorized(
        self, writer: asyncio.StreamWriter, stream: bool, n: int, h: dict
    ) -> None:
        # Like some servers, echo the key that was sent back in the message.
        sent = h.get("authorization", "").removeprefix("Bearer ")
        await self._error(writer, 401, f"Incorrect API key provided: {sent}")

    async def _scenario_forbidden(
        self, writer: asyncio.StreamWriter, stream: bool, n: int, h: dict
    ) -> None:
        await self._error(writer, 403, "this key has no access to the model")

    async def _scenario_notfound(
        self, writer: asyncio.StreamWriter, stream: bool, n: int, h: dict
    ) -> None:
        await self._error(writer, 404, "The model `nope` does not exist")


def _chunks(content: str, size: int = 7, finish: bool = True) -> list[str]:
    """Streamed chat-completion chunks carrying ``content`` a few characters at a time."""
    events = [json.dumps({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})]
    for start in range(0, len(content), size):
        piece = content[start : start + size]
        events.append(json.dumps({"choices": [{"index": 0, "delta": {"content": piece}}]}))
    if finish:
        events.append(json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    return events
