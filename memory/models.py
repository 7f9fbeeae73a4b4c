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


RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$"
RUN_STATUS_PATTERN = r"^[a-z][a-z_]{0,31}$"


class RunWrite(BaseModel):
    """``PUT /memory/runs/{run_id}``: a run as it stands now."""

    model_config = ConfigDict(extra="forbid")

    status: str = Field(
        ...,
        pattern=RUN_STATUS_PATTERN,
        description="`running` while the run goes on; any other status is final.",
        examples=["completed"],
    )
    summary: dict[str, Any] = Field(
        ..., description="What a list shows of the run (a JSON object of at most 4 KiB)."
    )
    document: dict[str, Any] = Field(
        ..., description="The whole run (a JSON object, up to the configured size)."
    )


class RunSummary(BaseModel):
    """One run as a list shows it."""

    id: str
    status: str
    summary: dict[str, Any]
    created_at: str = Field(..., description="UTC, ISO 8601 with microseconds.")
    updated_at: str = Field(..., description="When the run was last written.")


class RunStored(RunSummary):
    """``PUT /memory/runs/{run_id}``: the run as committed (without its document)."""

    service: Literal["memory"] = "memory"
    created: bool = Field(..., description="True when this write created the run.")


class RunRecord(RunSummary):
    """One run with its whole document."""

    document: dict[str, Any]


class RunAnswer(BaseModel):
    """``GET /memory/runs/{run_id}``."""

    service: Literal["memory"] = "memory"
    run: RunRecord


class RunList(BaseModel):
    """``GET /memory/runs``: runs, newest first, summaries only."""

    service: Literal["memory"] = "memory"
    count: int
    runs: list[RunSummary]
