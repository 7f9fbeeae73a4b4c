"""Request and response bodies of the memory service."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

KIND_PATTERN = r"^[a-z0-9_.\-]{1,64}$"


class NewRecord(BaseModel):
    """``POST /api/v1/memory``: what to remember."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(
        ...,
        min_length=1,
        max_length=64,
        pattern=KIND_PATTERN,
        description="Short label: lowercase letters, digits, '_', '.', '-'.",
        examples=["plan"],
    )
    content: Any = Field(..., description="Any JSON value, up to the configured size.")


class MemoryRecord(BaseModel):
    """One stored record."""

    id: str = Field(..., description="Opaque record id.")
    kind: str
    content: Any
    created_at: str = Field(..., description="UTC, ISO 8601 with microseconds.")


class RecordAnswer(BaseModel):
    """One record, or ``record: null`` when there is none (``GET /memory/latest``)."""

    service: Literal["memory"] = "memory"
    record: MemoryRecord | None


class StoredAnswer(MemoryRecord):
    """``POST /api/v1/memory``: the record as committed, with its id and timestamp."""

    service: Literal["memory"] = "memory"


class RecordList(BaseModel):
    """``GET /api/v1/memory``: records, newest first."""

    service: Literal["memory"] = "memory"
    count: int
    truncated: bool = False
    """True when the page stopped short of ``limit`` to stay within the answer size cap."""
    records: list[MemoryRecord]
