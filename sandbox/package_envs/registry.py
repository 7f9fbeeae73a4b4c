"""The service's view of its policy's package environments, kept current."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from sandbox.package_envs.checks import EnvState, inspect, new_state
from sandbox.package_envs.layout import MARKER, EnvDefinition, builds, definitions
from sandbox.policy import PolicySnapshot

RECHECK_SECONDS = 5.0
"""How often the service looks for a changed (rebuilt, removed) environment."""
RETRY_SECONDS = 60.0
"""How often an environment that is not ready is checked again, changed or not."""


class EnvRegistry:
    """The service's view of its policy's environments, kept current in the background."""

    def __init__(self, envs_dir: Path, python: str) -> None:
        self.envs_dir = envs_dir
        self.python = python
        self._definitions: dict[str, EnvDefinition] = {}
        self._states: dict[str, EnvState] = {}
        self._fingerprints: dict[str, tuple[object, ...]] = {}
        self._checked: dict[str, float] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

    def configure(self, snapshot: PolicySnapshot) -> None:
        """Follow a (new) policy: its environments, each ``checking`` until checked."""
        previous = self._definitions
        self._definitions = definitions(snapshot)
        states = {}
        for name, definition in self._definitions.items():
            known = self._states.get(name)
            before = previous.get(name)
            same = before is not None and (before.requirements, before.preload) == (
                definition.requirements,
                definition.preload,
            )
            if (
                known is not None
                and same
                and self._fingerprints.get(name) == self._fingerprint(definition)
            ):
                states[name] = replace(known, tools=definition.tools, preload=definition.preload)
            else:
                states[name] = new_state(definition, "checking", "being checked")
                self._fingerprints.pop(name, None)
        self._states = states
        self._wake.set()  # check the new ones now, not at the next round

    def state(self, name: str) -> EnvState | None:
        """The last known state of environment ``name`` (None: the policy has none)."""
        return self._states.get(name)

    def health(self) -> dict[str, Any]:
        """``/health``'s ``package_envs``: each environment's state."""
        return {name: state.health() for name, state in sorted(self._states.items())}

    def _fingerprint(self, definition: EnvDefinition) -> tuple[object, ...]:
        """What changes when the environment's files do (cheap: a few stats)."""
        parts: list[object] = []
        for path in (definition.requirements, *builds(self.envs_dir, definition.name)):
            try:
                status = path.stat()
                parts.append((str(path), status.st_ino, status.st_mtime_ns, status.st_size))
            except OSError:
                parts.append((str(path), None))
        for build_dir in builds(self.envs_dir, definition.name):
            try:
                marker = (build_dir / MARKER).stat()
                parts.append((marker.st_ino, marker.st_mtime_ns))
            except OSError:
                parts.append(None)
        return tuple(parts)

    async def refresh(self, only_changed: bool = False) -> None:
        """Check every environment again (``only_changed``: those whose files changed)."""
        async with self._lock:
            for name, definition in list(self._definitions.items()):
                fingerprint = await asyncio.to_thread(self._fingerprint, definition)
                known = self._states.get(name)
                retry = known is None or (
                    not known.ready
                    and time.monotonic() - self._checked.get(name, 0.0) >= RETRY_SECONDS
                )
                if only_changed and self._fingerprints.get(name) == fingerprint and not retry:
                    continue
                state = await asyncio.to_thread(inspect, definition, self.envs_dir, self.python)
                if self._definitions.get(name) is definition:
                    self._states[name] = state
                    self._fingerprints[name] = fingerprint
                    self._checked[name] = time.monotonic()

    async def watch(self, stop: asyncio.Event, interval: float = RECHECK_SECONDS) -> None:
        """Check now, then again whenever an environment's files change, until ``stop``."""
        while not stop.is_set():
            self._wake.clear()
            await self.refresh(only_changed=True)
            stopped = asyncio.ensure_future(stop.wait())
            woken = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait(
                    {stopped, woken}, timeout=interval, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                stopped.cancel()
                woken.cancel()
