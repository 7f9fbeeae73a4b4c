"""Where the memory keeps its collections: SQLite (default) or PostgreSQL, one interface.

:func:`create_store` picks the backend from the settings: PostgreSQL when
``MEMORY_DATABASE_URL`` names a ``postgresql://`` database (several replicas
may share it), else the SQLite file ``PAGI_MEMORY_DB``.
"""

from __future__ import annotations

from memory.settings import MemorySettings
from memory.store.base import (
    LIST_MAX_BYTES,
    RUNNING,
    MemoryStore,
    RunFinished,
    StoredRecord,
    StoredRun,
    StoreUnavailable,
)
from memory.store.postgres import PostgresStore
from memory.store.sqlite import SQLiteStore

__all__ = [
    "LIST_MAX_BYTES",
    "MemoryStore",
    "PostgresStore",
    "RUNNING",
    "RunFinished",
    "SQLiteStore",
    "StoredRun",
    "StoreUnavailable",
    "StoredRecord",
    "create_store",
]


def create_store(settings: MemorySettings) -> MemoryStore:
    """The backend the settings name (not opened yet)."""
    max_records = settings.pagi_memory_max_records or None
    max_runs = settings.pagi_memory_max_runs or None
    if settings.memory_database_url is not None:
        return PostgresStore(
            settings.memory_database_url.get_secret_value(),
            settings.pagi_memory_busy_timeout_seconds,
            max_records=max_records,
            max_runs=max_runs,
            pool_size=settings.pagi_memory_pool_size,
        )
    return SQLiteStore(
        settings.db_path,
        settings.pagi_memory_busy_timeout_seconds,
        max_records=max_records,
        max_runs=max_runs,
    )
