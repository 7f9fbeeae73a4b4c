"""The live policy: the last good snapshot, swapped atomically when the file changes.

:class:`PolicyStore` holds one immutable :class:`~sandbox.policy.snapshot.PolicySnapshot`
at a time. A request reads ``store.current`` once and keeps that object to the
end, so a run finishes under the version it was admitted with while the next
request already sees a new one. An edit that does not validate, a deleted or
unreadable file never replaces the snapshot: the error is logged and kept in
``last_error`` until a good version is read again.

The watcher listens for any change in the file's directory (editors and
config-map mounts replace files rather than write them in place) and also
re-reads the file every few seconds in case an event was missed. Re-reading an
unchanged file is a no-op: versions are content hashes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from watchfiles import awatch

from pagi.logging import log_event
from pagi.metric_catalogue import POLICY_EDITS_REFUSED, POLICY_RELOADS
from sandbox.policy.errors import PolicyError
from sandbox.policy.load import load_policy, parse_policy, read_policy_bytes
from sandbox.policy.snapshot import PolicyContext, PolicySnapshot

logger = logging.getLogger(__name__)

POLL_SECONDS = 2.0
"""Re-read the file this often even without a change event."""
RETRY_SECONDS = 1.0
"""Wait this long before watching again when the watcher itself failed."""

PolicyListener = Callable[[PolicySnapshot], Awaitable[None]]
EventSink = Callable[[dict[str, Any]], None]


class PolicyStore:
    """The policy in force, and the error of the last refused version, if any."""

    def __init__(self, initial: PolicySnapshot, path: Path, context: PolicyContext) -> None:
        self.path = path
        self.context = context
        self._current = initial
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self.last_checked_at: datetime = initial.loaded_at
        self._listeners: list[PolicyListener] = []
        self._notified_version = initial.version
        self._event_sinks: list[EventSink] = []
        self._notifier: asyncio.Task[None] | None = None

    @classmethod
    def open(cls, path: Path, context: PolicyContext | None = None) -> PolicyStore:
        """Load the policy at ``path``; :class:`PolicyError` if it is not valid."""
        context = context or PolicyContext()
        return cls(load_policy(path, context), path, context)

    @property
    def current(self) -> PolicySnapshot:
        """The snapshot new requests use (read once per request)."""
        return self._current

    def subscribe(self, listener: PolicyListener) -> None:
        """Call ``listener(snapshot)`` after a new version goes live.

        Listeners run in the background, in order, never two at once; when
        versions follow each other faster than the listeners finish, only
        the newest is passed on. The swap itself never waits for them.
        """
        self._listeners.append(listener)

    def on_event(self, sink: EventSink) -> None:
        """Call ``sink(event)`` when a version goes live, an edit is refused, or recovered.

        ``event`` holds ``action`` (``policy_reloaded``, ``policy_rejected``,
        ``policy_error_cleared``) and its details; sinks run inline and must
        be quick (the audit log records them).
        """
        self._event_sinks.append(sink)

    def _emit(self, action: str, **details: Any) -> None:
        for sink in self._event_sinks:
            try:
                sink({"action": action, "source": str(self.path), **details})
            except Exception as exc:  # a sink must not stop the reload
                log_event(logger, "policy_event_sink_failed", logging.ERROR, error=repr(exc))

    def refresh(self) -> PolicySnapshot | None:
        """Re-read the file now; return the new snapshot when a new version went live."""
        self.last_checked_at = datetime.now(UTC)
        try:
            data = read_policy_bytes(self.path)
            if hashlib.sha256(data).hexdigest()[:16] == self._current.version:
                self._clear_error()
                return None
            snapshot = parse_policy(data, self.path, self.context)
        except PolicyError as exc:
            self._record_error(exc)
            return None
        previous = self._current
        self._current = snapshot
        self.last_error = None
        self.last_error_at = None
        details = {
            "version": snapshot.version,
            "previous_version": previous.version,
            "tools": sorted(snapshot.document.tools),
        }
        POLICY_RELOADS.labels().inc()
        log_event(logger, "policy_reloaded", source=str(self.path), **details)
        self._emit("policy_reloaded", **details)
        return snapshot

    def _record_error(self, exc: PolicyError) -> None:
        message = exc.render()
        if message != self.last_error:  # a new refused edit, not the same one seen again
            POLICY_EDITS_REFUSED.labels().inc()
            log_event(
                logger,
                "policy_rejected",
                logging.ERROR,
                source=str(self.path),
                error=message,
                kept_version=self._current.version,
            )
            self._emit("policy_rejected", error=message, kept_version=self._current.version)
        self.last_error = message
        self.last_error_at = datetime.now(UTC)

    def _clear_error(self) -> None:
        if self.last_error is not None:
            log_event(logger, "policy_error_cleared", version=self._current.version)
            self._emit("policy_error_cleared", version=self._current.version)
        self.last_error = None
        self.last_error_at = None

    async def _refresh_and_notify(self) -> None:
        if self.refresh() is not None and self._listeners:
            if self._notifier is None or self._notifier.done():
                self._notifier = asyncio.create_task(self._notify_listeners())

    async def _notify_listeners(self) -> None:
        while self._notified_version != self._current.version:
            snapshot = self._current
            self._notified_version = snapshot.version
            for listener in self._listeners:
                try:
                    await listener(snapshot)
                except Exception as exc:  # a listener must not stop the others
                    log_event(
                        logger,
                        "policy_listener_failed",
                        logging.ERROR,
                        error=repr(exc),
                        version=snapshot.version,
                    )

    async def watch(self, stop: asyncio.Event) -> None:
        """Follow the file until ``stop`` is set; never raises."""
        try:
            await self._watch(stop)
        finally:
            if self._notifier is not None:
                await asyncio.wait({self._notifier}, timeout=5)

    async def _watch(self, stop: asyncio.Event) -> None:
        poll_ms = int(POLL_SECONDS * 1000)
        while not stop.is_set():
            try:
                async for _changes in awatch(
                    self.path.parent,
                    watch_filter=None,
                    debounce=400,
                    step=50,
                    stop_event=stop,
                    rust_timeout=poll_ms,
                    yield_on_timeout=True,
                    recursive=False,
                    ignore_permission_denied=True,
                ):
                    await self._refresh_and_notify()
            except Exception as exc:  # e.g. the directory itself was removed
                log_event(
                    logger,
                    "policy_watch_failed",
                    logging.WARNING,
                    error=repr(exc),
                    source=str(self.path),
                )
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=RETRY_SECONDS)
            if not stop.is_set():
                await self._refresh_and_notify()
