"""Reading what an OpenAI-compatible server answers: content, stream chunks, errors.

Each function turns one part of a reply into a value or a
:class:`BackendError` that says what was wrong, never another exception.
"""

from __future__ import annotations

import email.utils
import json
import time

import httpx

from gateway.backends.base import BackendError, ErrorCode

MAX_ERROR_DETAIL_CHARS = 200
"""How much of a server's error message is passed on."""


async def error_detail(response: httpx.Response) -> str:
    """A short, printable reason from an error body (OpenAI's ``error.message``)."""
    raw = b""
    async for chunk in response.aiter_bytes():
        raw += chunk
        if len(raw) > 16 * 1024:
            break
    try:
        data = json.loads(raw)
    except ValueError:
        return ""
    message = None
    if isinstance(data, dict):
        error = data.get("error")
        message = error.get("message") if isinstance(error, dict) else error
    if not isinstance(message, str):
        return ""
    message = "".join(ch if ch.isprintable() else " " for ch in message).strip()
    return message[:MAX_ERROR_DETAIL_CHARS]


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def unparseable(reason: str) -> BackendError:
    """The error for a reply that is not what the chat-completions API answers."""
    return BackendError(ErrorCode.INTERNAL, f"unparseable reply from the model server: {reason}")


def message_content(raw: bytes) -> str:
    """``choices[0].message.content`` of a chat-completions reply."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise unparseable("not JSON") from None
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise unparseable("no choices[0].message.content") from None
    if not isinstance(content, str):
        raise unparseable("choices[0].message.content is not text")
    return content


def stream_delta(data: str) -> tuple[str, str | None]:
    """The text and finish reason of one streamed chunk."""
    try:
        event = json.loads(data)
    except ValueError:
        raise unparseable("a stream event is not JSON") from None
    if not isinstance(event, dict):
        raise unparseable("a stream event is not an object")
    if "error" in event:
        raise BackendError(ErrorCode.UNAVAILABLE, "the model server reported an error mid-stream")
    choices = event.get("choices")
    if not isinstance(choices, list):
        raise unparseable("a stream event has no choices")
    if not choices:
        return "", None  # e.g. a final usage-only chunk
    choice = choices[0]
    if not isinstance(choice, dict):
        raise unparseable("a stream choice is not an object")
    delta = choice.get("delta") or {}
    content = delta.get("content") if isinstance(delta, dict) else None
    finish_reason = choice.get("finish_reason")
    return (content if isinstance(content, str) else ""), (
        finish_reason if isinstance(finish_reason, str) else None
    )
