"""Runs in the memory service: written while they go on, read back by id and as a list.

:class:`RunRecorder` keeps one run's writes in order and off the run's
path: each change asks for a write, at most one is in flight, a write
always sends the run as it is when the write starts, and writes while the
run goes on are at least ``min_interval_seconds`` apart, so the changes of
many steps go together in one. The first write (the run started) is sent
at once, and so is the last (the finished run), which is awaited and
retried while its time allows.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import httpx

from agent.run_models import RunListItem, RunRecord
from pagi.http import read_capped
from pagi.logging import log_event

logger = logging.getLogger(__name__)

PREVIEW_CHARS = 200
MAX_READ_BYTES = 32 * 1024 * 1024
RETRY_PAUSE_SECONDS = 0.2
KEPT_WHOLE_STEPS = 3
"""When a run is too large for memory, the outputs of its last steps are kept whole."""
CUT_OUTPUT_CHARS = 200


class RunStoreError(Exception):
    """Memory could not store or read a run; ``reason`` says why."""

    def __init__(self, reason: str, status_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code


def _preview(text: str | None) -> str | None:
    if text is None or len(text) <= PREVIEW_CHARS:
        return text
    return text[: PREVIEW_CHARS - 1] + "\u2026"


def summary_of(run: RunRecord) -> dict[str, Any]:
    """What a list shows of a run (a few hundred bytes)."""
    return {
        "goal": _preview(run.goal),
        "caller": run.caller,
        "actor": run.actor,
        "reason": run.reason,
        "answer": _preview(run.answer),
        "steps": run.usage.steps,
        "total_tokens": run.usage.total_tokens,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "duration_ms": run.duration_ms,
    }


def fit_document(run: RunRecord, max_bytes: int) -> dict[str, Any]:
    """The run as memory stores it: whole when it fits, else older outputs cut to fit."""
    document = run.model_dump(mode="json")
    if _size(document) <= max_bytes:
        return document
    steps = document["steps"]
    for step in steps[: max(len(steps) - KEPT_WHOLE_STEPS, 0)]:
        _cut_step(step)
    document["trimmed"] = True
    if _size(document) <= max_bytes:
        return document
    for step in steps:
        _drop_file_contents(step)  # the names, sizes and hashes stay
    if _size(document) <= max_bytes:
        return document
    for step in steps:
        _cut_step(step)
    if _size(document) <= max_bytes:
        return document
    # Still too large: keep the outcome and the usage (which counts the steps), not the steps.
    document["steps"] = []
    for key in ("goal", "answer"):
        if isinstance(document.get(key), str):
            document[key] = document[key][: max_bytes // 8]
    return document


def _drop_file_contents(step: dict[str, Any]) -> None:
    for call in step["calls"]:
        for entry in call["result"].get("files") or []:
            if entry.get("content") is not None:
                entry["content"] = None
                entry["truncated"] = True


def _cut_step(step: dict[str, Any]) -> None:
    step["model"]["content"] = step["model"]["content"][:CUT_OUTPUT_CHARS]
    for call in step["calls"]:
        call["arguments"] = call["arguments"][:CUT_OUTPUT_CHARS]
        result = call["result"]
        for stream in ("stdout", "stderr"):
            if len(result[stream]) > CUT_OUTPUT_CHARS:
                result[stream] = result[stream][:CUT_OUTPUT_CHARS]
                result[f"{stream}_truncated"] = True


def _size(document: dict[str, Any]) -> int:
    return len(json.dumps(document, ensure_ascii=False).encode("utf-8", "surrogatepass"))


class RunStore:
    """The memory service's ``/memory/runs`` routes."""

    def __init__(self, client: httpx.AsyncClient, timeout_seconds: float, max_bytes: int) -> None:
        self.client = client
        self.timeout_seconds = timeout_seconds
        self.max_bytes = max_bytes

    async def _call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        try:
            async with asyncio.timeout(self.timeout_seconds):
                async with self.client.stream(
                    method, path, timeout=self.timeout_seconds, **kwargs
                ) as response:
                    raw = await read_capped(response.aiter_bytes(), MAX_READ_BYTES)
        except (TimeoutError, httpx.TimeoutException):
            raise RunStoreError(f"memory did not answer within {self.timeout_seconds:g}s") from None
        except httpx.HTTPError as exc:
            raise RunStoreError(f"memory is unreachable ({type(exc).__name__})") from None
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        return response.status_code, body

    @staticmethod
    def _refused(status: int, body: Any) -> RunStoreError:
        detail = body.get("detail") if isinstance(body, dict) else None
        reason = f"memory answered {status}" + (f": {detail}" if isinstance(detail, str) else "")
        return RunStoreError(reason, status)

    async def put(self, run: RunRecord) -> None:
        """Store the run as it is now."""
        payload = {
            "status": run.status,
            "summary": summary_of(run),
            "document": fit_document(run, self.max_bytes),
        }
        status, body = await self._call("PUT", f"/memory/runs/{run.id}", json=payload)
        if status not in (200, 201):
            raise self._refused(status, body)

    async def get(self, run_id: str) -> RunRecord | None:
        """The stored run, or None when memory has none with this id."""
        status, body = await self._call("GET", f"/memory/runs/{run_id}")
        if status == 404:
            return None
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("run"), dict):
            raise self._refused(status, body)
        try:
            return RunRecord.model_validate(body["run"]["document"])
        except (KeyError, ValueError) as exc:
            raise RunStoreError(f"memory holds a run that is not one ({exc})") from None

    async def recent(self, limit: int) -> list[RunListItem]:
        """Up to ``limit`` runs, the most recently started first."""
        status, body = await self._call("GET", "/memory/runs", params={"limit": limit})
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("runs"), list):
            raise self._refused(status, body)
        items = []
        for entry in body["runs"]:
            try:
                summary = entry.get("summary") or {}
                items.append(RunListItem(id=entry["id"], status=entry["status"], **summary))
            except (KeyError, TypeError, ValueError):
                log_event(logger, "run_entry_skipped", logging.WARNING, entry=str(entry)[:200])
        return items


class RunRecorder:
    """One run's writes to memory, in order, coalesced, never blocking the run."""

    def __init__(
        self,
        store: RunStore,
        snapshot: Callable[[], RunRecord],
        min_interval_seconds: float = 1.0,
    ) -> None:
        self._store = store
        self._snapshot = snapshot
        self._min_interval = min_interval_seconds
        self._dirty = False
        self._writer: asyncio.Task[None] | None = None
        self._last_write = float("-inf")
        self._hurry = asyncio.Event()
        self.last_error: str | None = None
        self.stored_final = False

    def changed(self) -> None:
        """The run changed: write it soon (together with any change made meanwhile)."""
        self._dirty = True
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="run-recorder")

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._dirty:
            wait = self._last_write + self._min_interval - loop.time()
            if wait > 0 and not self._hurry.is_set():
                try:
                    await asyncio.wait_for(self._hurry.wait(), wait)
                except TimeoutError:
                    pass
            self._dirty = False
            self._last_write = loop.time()
            run = self._snapshot()
            try:
                await self._store.put(run)
            except RunStoreError as exc:
                self.last_error = exc.reason
                log_event(
                    logger, "run_not_stored", logging.WARNING, run_id=run.id, reason=exc.reason
                )
                if exc.status_code == 409:
                    # Memory holds the run finished already, and a finished run never changes.
                    self.stored_final = True
                    return
            else:
                self.last_error = None
                if run.status != "running":
                    self.stored_final = True

    async def finish(self, timeout_seconds: float) -> bool:
        """Write the finished run and wait for it, retrying within ``timeout_seconds``."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout_seconds
        self._hurry.set()
        self.changed()
        while True:
            writer = self._writer
            assert writer is not None
            try:
                await asyncio.wait_for(asyncio.shield(writer), max(give_up - loop.time(), 0.001))
            except TimeoutError:
                self.last_error = self.last_error or "memory did not store the run in time"
                return False
            if self.stored_final:
                return True
            if loop.time() + RETRY_PAUSE_SECONDS >= give_up:
                return False
            await asyncio.sleep(RETRY_PAUSE_SECONDS)
            self.changed()
