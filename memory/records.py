"""Routes for reading and appending memory records."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import APIRouter, Query, Request

from memory.models import (
    KIND_PATTERN,
    MemoryRecord,
    NewRecord,
    RecordAnswer,
    RecordList,
    StoredAnswer,
)
from memory.store import MemoryStore, StoredRecord, StoreUnavailable
from pagi.app import Caller
from pagi.errors import ApiError, error_responses
from pagi.logging import log_event

logger = logging.getLogger(__name__)

MAX_CONTENT_DEPTH = 64
RETRY_AFTER_SECONDS = "1"

ERRORS = error_responses(
    {
        400: "The body is not JSON.",
        401: "Missing or invalid token.",
        422: "Invalid request.",
        503: "The database cannot serve the request.",
    }
)

router = APIRouter(tags=["memory"], responses=ERRORS)


def store_of(request: Request) -> MemoryStore:
    """The store of the app serving ``request``."""
    return request.app.state.store


def unavailable(exc: StoreUnavailable) -> ApiError:
    """The 503 a request gets when the database cannot serve it."""
    return ApiError(
        503, "database_unavailable", exc.reason, headers={"Retry-After": RETRY_AFTER_SECONDS}
    )


def _model(record: StoredRecord) -> MemoryRecord:
    return MemoryRecord(
        id=str(record.id), kind=record.kind, content=record.content, created_at=record.created_at
    )


def _depth(value: Any) -> int:
    """Nesting depth of a JSON value, without recursion."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_CONTENT_DEPTH:
            return deepest
        if isinstance(item, dict):
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            pending.extend((child, depth + 1) for child in item)
    return deepest


def encode_content(content: Any, max_bytes: int) -> str:
    """The content as compact JSON text, or an :class:`ApiError` saying why it is refused."""
    if _depth(content) > MAX_CONTENT_DEPTH:
        raise ApiError(422, "invalid_content", f"content nests deeper than {MAX_CONTENT_DEPTH}")
    try:
        text = json.dumps(content, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (ValueError, TypeError) as exc:
        raise ApiError(422, "invalid_content", f"content is not plain JSON: {exc}") from None
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise ApiError(413, "content_too_large", f"content is {size} bytes, limit {max_bytes}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(422, "invalid_content", "content holds unpaired surrogates") from None
    return text


@router.get(
    "/memory/latest",
    response_model=RecordAnswer,
    summary="The newest record (record: null when there is none)",
)
async def latest(request: Request, caller: Caller) -> RecordAnswer:
    """The newest record of any kind."""
    try:
        record = await store_of(request).latest()
    except StoreUnavailable as exc:
        raise unavailable(exc) from None
    return RecordAnswer(record=_model(record) if record else None)


@router.post(
    "/api/v1/memory",
    response_model=StoredAnswer,
    status_code=201,
    summary="Append a record; answered after the commit",
    responses=error_responses({413: "Content too large."}),
)
async def append(body: NewRecord, request: Request, caller: Caller) -> StoredAnswer:
    """Store a record durably and answer it with its id and timestamp."""
    text = encode_content(body.content, request.app.state.max_content_bytes)
    try:
        record = await store_of(request).append(body.kind, text)
    except StoreUnavailable as exc:
        raise unavailable(exc) from None
    log_event(logger, "record_stored", id=record.id, kind=record.kind, caller=caller.subject)
    return StoredAnswer(**_model(record).model_dump())


@router.api_route(
    "/api/v1/memory",
    methods=["PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"],
    include_in_schema=False,
)
async def other_methods() -> None:
    """Two routes share this path: name both in ``Allow`` (the router names only one)."""
    raise ApiError(405, "method_not_allowed", "use GET or POST", headers={"Allow": "GET, POST"})


@router.get("/api/v1/memory", response_model=RecordList, summary="Records, newest first")
async def list_records(
    request: Request,
    caller: Caller,
    limit: int = Query(50, ge=1, le=1000, description="How many records (1..1000)."),
    kind: str | None = Query(None, pattern=KIND_PATTERN, description="Only records of this kind."),
) -> RecordList:
    """Up to ``limit`` records, newest first."""
    try:
        records, truncated = await store_of(request).list(limit, kind)
    except StoreUnavailable as exc:
        raise unavailable(exc) from None
    return RecordList(count=len(records), truncated=truncated, records=[_model(r) for r in records])
