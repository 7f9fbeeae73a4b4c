"""Settings of the memory service."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from pagi.settings import CommonSettings


class MemorySettings(CommonSettings):
    """Where the database lives and how much a record may hold."""

    pagi_memory_db: Path | None = Field(
        None, description="SQLite database file; defaults to PAGI_STATE_DIR/memory.db."
    )
    pagi_memory_max_content_bytes: int = Field(
        64 * 1024, ge=1, le=16 * 1024 * 1024, description="Largest record content (JSON bytes)."
    )
    pagi_memory_busy_timeout_seconds: float = Field(
        1.0, gt=0, le=60, description="How long a write waits on a locked database before 503."
    )

    pagi_memory_max_records: int = Field(
        100_000,
        ge=0,
        description="Keep at most this many records (oldest dropped first); 0 keeps all.",
    )

    pagi_memory_max_run_bytes: int = Field(
        1024 * 1024,
        ge=4096,
        le=16 * 1024 * 1024,
        description="Largest agent run document (compact JSON bytes).",
    )
    pagi_memory_max_runs: int = Field(
        10_000, ge=0, description="Keep at most this many runs (oldest dropped first); 0 keeps all."
    )

    @property
    def db_path(self) -> Path:
        """The SQLite database file."""
        return self.pagi_memory_db or self.pagi_state_dir / "memory.db"
