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
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

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


# --------------------------------------------------------------------------- CLI


def _describe(record: dict[str, Any]) -> str:
    """One readable line for a record."""
    if record.get("kind") in ("policy", "service"):
        details = " ".join(
            f"{key}={value!r}" if isinstance(value, str) and " " in value else f"{key}={value}"
            for key, value in record.items()
            if key not in ("time", "kind", "action")
        )
        return f"{record.get('time', '?')} {record.get('action', '?'):<8} {details}"
    outcome = record.get("outcome") or {}
    parts = [
        str(record.get("time", "?")),
        f"{record.get('decision', '?'):<8}",
        f"{record.get('status', '?')}",
        f"caller={record.get('caller') or '-'}",
        f"tool={record.get('tool') or '-'}",
    ]
    if outcome:
        parts.append(f"tool_status={outcome.get('tool_status')}")
        parts.append(f"exit={outcome.get('exit_code')}")
        if outcome.get("signal") is not None:
            parts.append(f"signal={outcome['signal']}")
        if outcome.get("limit_hit"):
            parts.append(f"limit={outcome['limit_hit']}")
        if outcome.get("seccomp_refusals"):
            parts.append(f"seccomp_refusals={outcome['seccomp_refusals']}")
        if outcome.get("denials"):
            parts.append(f"denials={_denials_text(outcome['denials'])!r}")
    if record.get("reason"):
        parts.append(f"reason={record['reason']!r}")
    if record.get("code_bytes") is not None:
        parts.append(f"code={str(record.get('code_sha256', ''))[:12]}({record['code_bytes']}B)")
    parts.append(f"policy={record.get('policy_version') or '-'}")
    parts.append(f"{record.get('duration_ms', '?')}ms")
    parts.append(f"rid={record.get('request_id') or '-'}")
    return " ".join(parts)


def _denials_text(denials: object) -> str:
    """``layer:what xCOUNT; ...`` for a record's denials (as the service wrote them)."""
    if not isinstance(denials, list):
        return str(denials)
    return "; ".join(
        f"{entry.get('layer')}:{entry.get('what')}"
        + (f" x{entry['count']}" if entry.get("count", 1) != 1 else "")
        if isinstance(entry, dict)
        else str(entry)
        for entry in denials
    )


def _print_line(raw: bytes, out: TextIO) -> None:
    text = raw.decode("utf-8", "replace").strip()
    if not text:
        return
    try:
        record = json.loads(text)
    except ValueError:
        print(f"(unreadable record) {text[:200]}", file=out)
        return
    print(_describe(record) if isinstance(record, dict) else text, file=out, flush=True)


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


def tail_command(path: Path | None, lines: int, follow: bool) -> int:
    """``pagi audit tail``: print the newest records (and new ones with ``follow``)."""
    if path is None:
        from sandbox.settings import SandboxSettings

        path = SandboxSettings().audit_log_path
    try:
        for raw in last_lines(path, lines):
            _print_line(raw, sys.stdout)
        if not follow:
            return 0
        _follow(path)
    except FileNotFoundError:
        print(f"pagi audit tail: no audit file at {path}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"pagi audit tail: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


def _follow(path: Path) -> None:
    """Print records appended after now, following rotation, until interrupted."""
    handle = path.open("rb")
    handle.seek(0, os.SEEK_END)
    pending = b""
    try:
        while True:
            chunk = handle.read()
            if chunk:
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    _print_line(raw, sys.stdout)
                continue
            time.sleep(0.25)
            try:
                rotated = os.stat(path).st_ino != os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                continue
            if rotated:
                handle.close()
                handle = path.open("rb")
                pending = b""
    finally:
        handle.close()
