"""The audit trail: one JSON record per ``execute_tool`` request, allowed or not.

Records go to an append-only file (``O_APPEND``, one ``write()`` per record,
so concurrent records never interleave) and, as an ``audit`` event, to the
log. The file is opened once and reopened when it was rotated or removed.
Durability: by default a record reaches the kernel before the response is
sent (it survives a crash of the service, not of the machine); with
``PAGI_SANDBOX_AUDIT_FSYNC=true`` each record is also fsync'ed.

Fail closed: when the file cannot be written, :meth:`AuditLog.ready` is
False and the service refuses to run tools (503) until it can write again;
refusals are still logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pagi.logging import log_event

logger = logging.getLogger(__name__)


def utc_now() -> str:
    """The current time as an ISO 8601 UTC string with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditLog:
    """An append-only JSON-lines file plus a log line per record."""

    def __init__(self, path: Path, fsync: bool = False) -> None:
        self.path = path
        self.fsync = fsync
        self._fd: int | None = None
        self.error: str | None = None
        """Why the file cannot be written now; None when it can."""

    def open(self) -> None:
        """Open (or create, mode 0600) the file; on failure ``error`` says why."""
        self.close()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # O_NONBLOCK: a FIFO put at the path fails the open instead of hanging it.
            flags = (
                os.O_WRONLY
                | os.O_APPEND
                | os.O_CREAT
                | os.O_CLOEXEC
                | os.O_NOFOLLOW
                | os.O_NONBLOCK
            )
            fd = os.open(self.path, flags, 0o600)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise OSError(f"{self.path} is not a regular file")
        except OSError as exc:
            self._fail(f"cannot open the audit file {self.path}: {exc.strerror or exc}")
            return
        self._fd = fd
        if self.error is not None:
            log_event(logger, "audit_recovered", path=str(self.path))
        self.error = None

    def close(self) -> None:
        """Close the file (records can no longer be written until :meth:`open`)."""
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def ready(self) -> bool:
        """Whether a record can be written now; reopens a rotated or removed file."""
        if self._fd is None or not self._still_the_file():
            self.open()
        return self._fd is not None

    def _still_the_file(self) -> bool:
        assert self._fd is not None
        try:
            on_disk = os.stat(self.path, follow_symlinks=False)
            opened = os.fstat(self._fd)
        except OSError:
            return False
        return (on_disk.st_dev, on_disk.st_ino) == (opened.st_dev, opened.st_ino)

    def _fail(self, message: str) -> None:
        if message != self.error:
            log_event(logger, "audit_unavailable", logging.ERROR, error=message)
        self.error = message
        self.close()

    async def write(self, record: dict[str, Any]) -> bool:
        """Append ``record`` and log it; False when the file could not take it."""
        if not self._append(record):
            return False
        if self.fsync:
            assert self._fd is not None
            try:
                await asyncio.to_thread(os.fsync, self._fd)
            except OSError as exc:
                self._fail(f"cannot sync the audit file {self.path}: {exc.strerror or exc}")
                return False
        return True

    def write_now(self, record: dict[str, Any]) -> bool:
        """:meth:`write` without leaving the caller's thread (for rare service events)."""
        if not self._append(record):
            return False
        if self.fsync:
            assert self._fd is not None
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self._fail(f"cannot sync the audit file {self.path}: {exc.strerror or exc}")
                return False
        return True

    def _append(self, record: dict[str, Any]) -> bool:
        log_event(logger, "audit", **record)
        if not self.ready():
            return False
        assert self._fd is not None
        line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
        try:
            written = os.write(self._fd, line)
            if written != len(line):
                raise OSError(f"short write ({written} of {len(line)} bytes)")
        except OSError as exc:
            self._fail(f"cannot write the audit file {self.path}: {exc.strerror or exc}")
            return False
        return True


def last_lines(path: Path, count: int, block: int = 8192) -> list[bytes]:
    """The last ``count`` lines of the file, read backwards from its end."""
    if count <= 0:
        return []
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        position = handle.tell()
        data = b""
        while position > 0 and data.count(b"\n") <= count:
            step = min(block, position)
            position -= step
            handle.seek(position)
            data = handle.read(step) + data
    return [line for line in data.splitlines() if line.strip()][-count:]
