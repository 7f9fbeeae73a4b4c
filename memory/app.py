"""The memory service application."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request

from memory.records import router as records_router
from memory.runs import router as runs_router
from memory.settings import MemorySettings
from memory.store import StoreUnavailable, create_store
from pagi.app import create_app as create_service_app
from pagi.auth import TokenVerifier, TrustStore
from pagi.logging import log_event

logger = logging.getLogger(__name__)

# Room for the JSON around the content and for pretty-printed bodies.
_BODY_OVERHEAD_BYTES = 64 * 1024


def create_app(settings: MemorySettings) -> FastAPI:
    """The memory service: records and agent runs in SQLite or PostgreSQL, token-checked."""
    store = create_store(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await store.open()
            log_event(logger, "database_opened", backend=store.backend, location=store.location)
        except StoreUnavailable as exc:
            # Keep serving: requests get 503 until the database can be opened.
            log_event(
                logger,
                "database_unavailable",
                logging.ERROR,
                reason=exc.reason,
                backend=store.backend,
                location=store.location,
            )
        try:
            yield
        finally:
            await store.close()

    async def health_extra(request: Request) -> dict[str, Any]:
        return {"database": store.state, "database_backend": store.backend}

    max_content = settings.pagi_memory_max_content_bytes
    largest = max(max_content, settings.pagi_memory_max_run_bytes)
    app = create_service_app(
        "memory",
        lifespan=lifespan,
        health_extra=health_extra,
        max_body_bytes=max(2 * largest, largest + _BODY_OVERHEAD_BYTES),
        metrics_token=settings.metrics_token(),
    )
    app.state.store = store
    app.state.max_content_bytes = max_content
    app.state.max_run_bytes = settings.pagi_memory_max_run_bytes
    app.state.verifier = TokenVerifier("memory", TrustStore.from_keys_dir(settings.keys_dir))
    app.include_router(records_router)
    app.include_router(runs_router)
    return app
