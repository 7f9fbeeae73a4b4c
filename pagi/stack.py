"""Starting and stopping the whole stack as local processes (``pagi up``, e2e tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pagi import SERVICES
from pagi.auth import generate_keys, missing_keys
from pagi.health import check_service
from pagi.settings import CommonSettings

LineSink = Callable[[str, str], None]
"""Receives ``(service, line)`` for every line a service prints."""


@dataclass
class ServiceProcess:
    """One running service."""

    name: str
    process: subprocess.Popen[bytes]
    reader: threading.Thread | None = None


@dataclass
class Stack:
    """The services of one deployment, started as child processes.

    ``env`` is the environment every child gets (settings are read from it);
    ``sink`` receives their output lines.
    """

    env: dict[str, str]
    services: Iterable[str] = SERVICES
    cwd: Path | None = None
    sink: LineSink | None = None
    processes: dict[str, ServiceProcess] = field(default_factory=dict)

    @property
    def settings(self) -> CommonSettings:
        """Settings as the children will read them."""
        saved = dict(os.environ)
        try:
            os.environ.clear()
            os.environ.update(self.env)
            return CommonSettings(_env_file=None)
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def ensure_keys(self) -> list[str]:
        """Create any missing key pair; return the identities created."""
        keys_dir = self.settings.keys_dir
        if self.cwd and not keys_dir.is_absolute():
            keys_dir = self.cwd / keys_dir
        return generate_keys(keys_dir) if missing_keys(keys_dir) else []

    def start(self, timeout: float = 60.0) -> None:
        """Start every service in order and wait until each is healthy."""
        self.ensure_keys()
        for name in self.services:
            self.start_service(name)
            self.wait_healthy(name, timeout)

    def command_of(self, name: str) -> list[str]:
        """The command that runs service `name` (a subclass may wrap it)."""
        return [sys.executable, "-m", name]

    def start_service(self, name: str) -> ServiceProcess:
        """Start one service (without waiting for it)."""
        process = subprocess.Popen(
            self.command_of(name),
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        entry = ServiceProcess(name, process)
        if process.stdout is not None:
            entry.reader = threading.Thread(
                target=self._pump, args=(name, process.stdout), daemon=True
            )
            entry.reader.start()
        self.processes[name] = entry
        return entry

    def _pump(self, name: str, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            if self.sink is not None:
                self.sink(name, raw.decode("utf-8", "replace").rstrip("\n"))

    def wait_healthy(self, name: str, timeout: float = 60.0) -> None:
        """Block until ``name`` answers healthy; raise if it dies or times out."""
        settings = self.settings
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.processes.get(name)
            if entry is not None and entry.process.poll() is not None:
                raise RuntimeError(f"{name} exited with code {entry.process.returncode}")
            if check_service(name, settings, timeout=1.0)["ok"]:
                return
            time.sleep(0.1)
        raise TimeoutError(f"{name} did not become healthy within {timeout:.0f}s")

    def stop_service(self, name: str, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop one service (its whole process group), escalating to SIGKILL."""
        entry = self.processes.pop(name, None)
        if entry is None:
            return
        _signal_group(entry.process, sig)
        try:
            entry.process.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(entry.process, signal.SIGKILL)
            entry.process.wait()
        if entry.reader is not None:
            entry.reader.join(timeout=2)

    def stop(self) -> None:
        """Stop every service, dependents first."""
        for name in reversed(list(self.processes)):
            self.stop_service(name)

    def first_exited(self) -> ServiceProcess | None:
        """A service that has exited on its own, if any."""
        for entry in self.processes.values():
            if entry.process.poll() is not None:
                return entry
        return None


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
