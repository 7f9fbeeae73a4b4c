"""A backend for any OpenAI-compatible chat-completions server, over httpx.

vLLM, llama.cpp's server, Ollama's OpenAI endpoint and hosted APIs all speak
``POST {base}/chat/completions``. The backend asks for a numbered plan and
parses the reply into steps, or offers an agent's tools and reads the tool
calls or the answer of the reply (:mod:`gateway.backends.chat_wire`). Every
call keeps within the caller's deadline, retries 429 and 5xx answers with
capped exponential backoff and jitter while the deadline allows (honouring
``Retry-After``), and maps failures to :class:`ErrorCode` values with
messages that never contain the API key.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx

from gateway.backends.base import BackendError, Deadline, ErrorCode, PlanBackend
from gateway.backends.chat_wire import parse_decision, request_body
from gateway.backends.openai_replies import (
    error_detail,
    message_content,
    retry_after_seconds,
    stream_delta,
)
from gateway.backends.parsing import StepParser, parse_steps
from gateway.conversation import Conversation, Decision
from pagi.logging import log_event
from pagi.request_id import HEADER as REQUEST_ID_HEADER
from pagi.request_id import current_request_id

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You plan work for an AI agent that can run tools. Answer with a numbered plan "
    "only: one step per line, written as '1. <step>', at most {max_steps} steps, each "
    "step one short imperative sentence. No introduction, no closing remarks."
)
MAX_REPLY_BYTES = 1024 * 1024
MAX_LINE_CHARS = 64 * 1024
_RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504})
# Anything shaped like an API key ("sk-...", "Bearer ...") in an upstream message.
_KEY_LIKE = re.compile(r"(?:\bsk-[\w*.\-]{4,}|\bBearer\s+\S+)", re.IGNORECASE)


class OpenAIBackend(PlanBackend):
    """Plans from an OpenAI-compatible ``/chat/completions`` endpoint."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        max_retries: int = 3,
        retry_base_seconds: float = 0.2,
        retry_cap_seconds: float = 2.0,
        max_connections: int = 16,
        rng: random.Random | None = None,
    ) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.retry_base_seconds = retry_base_seconds
        self.retry_cap_seconds = retry_cap_seconds
        self._api_key = api_key or None
        self._rng = rng or random.Random()
        self._attempts = 0
        self._retries = 0
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=None,  # every request gets the caller's remaining time instead
            follow_redirects=False,
            limits=httpx.Limits(max_connections=max_connections),
        )

    @property
    def where(self) -> str:
        """The server's scheme://host:port, for messages (no path, no credentials)."""
        parts = urlsplit(self.base_url)
        host = parts.hostname or "?"
        return f"{parts.scheme}://{host}:{parts.port}" if parts.port else f"{parts.scheme}://{host}"

    def describe(self) -> dict[str, object]:
        """Backend, model, upstream address and whether a key is set (never the key)."""
        return {**super().describe(), "upstream": self.where, "api_key_set": bool(self._api_key)}

    def counters(self) -> dict[str, int]:
        """Requests sent to the model server, and how many of them were retries."""
        return {"upstream_attempts": self._attempts, "upstream_retries": self._retries}

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    # ------------------------------------------------------------------ public

    async def plan(self, prompt: str, max_steps: int, deadline: Deadline) -> list[str]:
        """The whole plan from one chat completion."""
        response = await self._send(self._body(prompt, max_steps, stream=False), deadline)
        try:
            raw = await self._read_body(response, deadline)
        finally:
            await response.aclose()
        content = message_content(raw)
        steps = parse_steps(content, max_steps)
        if not steps:
            raise BackendError(ErrorCode.INTERNAL, "the model's reply contains no plan steps")
        return steps

    async def stream(self, prompt: str, max_steps: int, deadline: Deadline) -> AsyncIterator[str]:
        """The plan's steps as the server streams the reply (SSE)."""
        response = await self._send(self._body(prompt, max_steps, stream=True), deadline)
        if response.headers.get("content-type", "").startswith("application/json"):
            # Some servers ignore "stream": true and answer with one JSON reply.
            try:
                raw = await self._read_body(response, deadline)
            finally:
                await response.aclose()
            steps = parse_steps(message_content(raw), max_steps)
            if not steps:
                raise BackendError(ErrorCode.INTERNAL, "the model's reply contains no plan steps")
            for step in steps:
                yield step
            return
        parser = StepParser(max_steps)
        produced = 0
        try:
            finished = False
            async for data in self._events(response, deadline):
                if data == "[DONE]":
                    finished = True
                    break
                delta, finish_reason = stream_delta(data)
                for step in parser.feed(delta):
                    produced += 1
                    yield step
                if parser.pending_chars > MAX_LINE_CHARS:
                    raise BackendError(ErrorCode.INTERNAL, "the model streamed an overlong line")
                if finish_reason is not None or parser.full:
                    finished = True
                    break
            if not finished:
                raise BackendError(
                    ErrorCode.UNAVAILABLE,
                    f"model server at {self.where} ended the stream before the reply was "
                    f"complete (after {produced} steps)",
                )
            for step in parser.finish():
                produced += 1
                yield step
            if produced == 0:
                raise BackendError(ErrorCode.INTERNAL, "the model's reply contains no plan steps")
        finally:
            await response.aclose()

    async def decide(self, conversation: Conversation, deadline: Deadline) -> Decision:
        """The next action from one chat completion with ``tools`` (function calling)."""
        body = request_body(conversation, self.model)
        response = await self._send(body, deadline)
        try:
            raw = await self._read_body(response, deadline)
        finally:
            await response.aclose()
        return parse_decision(raw, conversation)

    # ------------------------------------------------------------------ request

    def _body(self, prompt: str, max_steps: int, stream: bool) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT.format(max_steps=max_steps)},
                {"role": "user", "content": prompt},
            ],
            "temperature": 0,
            "stream": stream,
        }

    async def _send(self, body: dict[str, Any], deadline: Deadline) -> httpx.Response:
        """A response with a 2xx status (body not read yet), after retries."""
        headers = {"Accept": "text/event-stream"} if body["stream"] else {}
        request_id = current_request_id()
        if request_id:
            headers[REQUEST_ID_HEADER] = request_id
        attempt = 0
        while True:
            attempt += 1
            self._attempts += 1
            self._retries += attempt > 1
            started = time.perf_counter()
            failure, retry_after = await self._attempt(body, headers, deadline)
            if isinstance(failure, httpx.Response):
                return failure
            log_event(
                logger,
                "upstream_attempt_failed",
                logging.WARNING,
                backend=self.name,
                upstream=self.where,
                attempt=attempt,
                code=str(failure.code),
                reason=failure.message,
                elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
            )
            if failure.code not in (ErrorCode.UNAVAILABLE, ErrorCode.RESOURCE_EXHAUSTED):
                raise failure
            delay = self._backoff(attempt, retry_after)
            # Out of retries, or no time for another try: report what went wrong
            # (not a timeout).
            if attempt > self.max_retries or delay >= deadline.remaining():
                tries = "1 attempt" if attempt == 1 else f"{attempt} attempts"
                raise BackendError(failure.code, f"{failure.message} (gave up after {tries})")
            await asyncio.sleep(delay)

    async def _attempt(
        self, body: dict[str, Any], headers: dict[str, str], deadline: Deadline
    ) -> tuple[httpx.Response | BackendError, float | None]:
        """One try: the 2xx response, or the failure and any Retry-After delay."""
        remaining = deadline.remaining()
        if remaining <= 0:
            raise self._deadline_error()
        request = self._client.build_request(
            "POST", "/chat/completions", json=body, headers=headers, timeout=remaining
        )
        try:
            async with asyncio.timeout(remaining):
                response = await self._client.send(request, stream=True)
        except (TimeoutError, httpx.TimeoutException):
            raise self._deadline_error() from None
        except httpx.TransportError as exc:
            return self._unreachable(exc), None
        if response.is_success:
            return response, None
        try:
            async with asyncio.timeout(max(deadline.remaining(), 0.001)):
                detail = await error_detail(response)
        except (TimeoutError, httpx.HTTPError):
            detail = ""
        finally:
            await response.aclose()
        return self._status_error(response.status_code, detail), retry_after_seconds(response)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        ceiling = min(self.retry_cap_seconds, self.retry_base_seconds * 2 ** (attempt - 1))
        # "Equal jitter": at least half the exponential delay, so retries spread
        # out without collapsing to zero.
        delay = ceiling / 2 + self._rng.uniform(0, ceiling / 2)
        return max(delay, retry_after) if retry_after is not None else delay

    # ------------------------------------------------------------------ reading

    async def _read_body(self, response: httpx.Response, deadline: Deadline) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async with self._reading(deadline, "mid-reply"):
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_REPLY_BYTES:
                    raise BackendError(
                        ErrorCode.INTERNAL, f"the model's reply exceeds {MAX_REPLY_BYTES} bytes"
                    )
                chunks.append(chunk)
        return b"".join(chunks)

    async def _events(self, response: httpx.Response, deadline: Deadline) -> AsyncIterator[str]:
        """The ``data:`` payloads of a server-sent-event stream."""
        lines = response.aiter_lines().__aiter__()
        size = 0
        while True:
            # The timeout wraps each read only: an async generator must not
            # hold a timeout scope across its yields.
            async with self._reading(deadline, "mid-stream"):
                line = await anext(lines, None)
            if line is None:
                return
            size += len(line)
            if size > MAX_REPLY_BYTES or len(line) > MAX_LINE_CHARS:
                raise BackendError(
                    ErrorCode.INTERNAL, f"the model's stream exceeds {MAX_REPLY_BYTES} bytes"
                )
            if line.startswith("data:"):
                yield line[5:].strip()

    # ------------------------------------------------------------------ errors

    @asynccontextmanager
    async def _reading(self, deadline: Deadline, when: str) -> AsyncIterator[None]:
        """Reading a reply within the deadline: a timeout, or a connection dropped ``when``,
        becomes the backend's error."""
        try:
            async with asyncio.timeout(deadline.remaining()):
                yield
        except (TimeoutError, httpx.TimeoutException):
            raise self._deadline_error() from None
        except httpx.TransportError as exc:
            raise BackendError(
                ErrorCode.UNAVAILABLE,
                f"model server at {self.where} closed the connection {when} ({type(exc).__name__})",
            ) from None

    def _deadline_error(self) -> BackendError:
        return BackendError(
            ErrorCode.DEADLINE_EXCEEDED,
            f"model server at {self.where} did not answer within the deadline",
        )

    def _unreachable(self, exc: httpx.TransportError) -> BackendError:
        return BackendError(
            ErrorCode.UNAVAILABLE,
            f"model server at {self.where} unreachable ({type(exc).__name__})",
        )

    def _status_error(self, status: int, detail: str) -> BackendError:
        detail = self._redact(detail)
        suffix = f": {detail}" if detail else ""
        # Servers tend to quote (part of) the key in auth errors: never pass those on.
        if status == 401:
            return BackendError(
                ErrorCode.FAILED_PRECONDITION,
                f"model server at {self.where} rejected the API key (401); set MODEL_API_KEY "
                "or MODEL_API_KEY_FILE to a valid key",
            )
        if status == 403:
            return BackendError(
                ErrorCode.PERMISSION_DENIED,
                f"model server at {self.where} refused access to model {self.model!r} (403)",
            )
        if status == 404:
            return BackendError(
                ErrorCode.FAILED_PRECONDITION,
                f"model server at {self.where} has no such endpoint or model (404); check "
                f"MODEL_BASE_URL (up to /v1) and MODEL_NAME{suffix}",
            )
        if status == 429:
            return BackendError(
                ErrorCode.RESOURCE_EXHAUSTED,
                f"model server at {self.where} is rate limiting (429){suffix}",
            )
        if status in _RETRYABLE:
            return BackendError(
                ErrorCode.UNAVAILABLE, f"model server at {self.where} failed ({status}){suffix}"
            )
        if 400 <= status < 500:
            return BackendError(
                ErrorCode.INVALID_ARGUMENT,
                f"model server at {self.where} rejected the request ({status}){suffix}",
            )
        return BackendError(
            ErrorCode.INTERNAL, f"model server at {self.where} answered status {status}{suffix}"
        )

    def _redact(self, text: str) -> str:
        if self._api_key and self._api_key in text:
            text = text.replace(self._api_key, "[redacted]")
        return _KEY_LIKE.sub("[redacted]", text)
