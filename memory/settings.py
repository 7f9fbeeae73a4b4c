"""Settings of the memory service."""

from __future__ import annotations

from pathlib import Path

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict
from pydantic import Field, SecretStr, field_validator

from pagi.settings import CommonSettings

POSTGRESQL_SCHEMES = ("postgresql://", "postgres://")


class MemorySettings(CommonSettings):
    """Where the database lives and how much a record may hold."""

    memory_database_url: SecretStr | None = Field(
        None,
        description=(
            "A postgresql:// URL: the memory stores there (replicas may share it);"
            " unset: the SQLite file PAGI_MEMORY_DB."
        ),
    )
    pagi_memory_pool_size: int = Field(
        10, ge=1, le=1000, description="Most PostgreSQL connections one memory replica holds."
    )
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

    @field_validator("memory_database_url", mode="before")
    @classmethod
    def _postgresql_only(cls, value: object) -> object:
        # The error never repeats the URL: it may hold a password.
        if value is None or value == "":
            return None
        text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        if not text.startswith(POSTGRESQL_SCHEMES):
            raise ValueError("must be a postgresql:// URL (leave it unset for SQLite)")
        try:
            conninfo_to_dict(text)
        except ProgrammingError:
            raise ValueError("is not a valid PostgreSQL connection URL") from None
        return text

    @property
    def db_path(self) -> Path:
        """The SQLite database file."""
        return self.pagi_memory_db or self.pagi_state_dir / "memory.db"
