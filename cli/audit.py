"""``pagi audit tail``: the sandbox's audit records, one readable line each."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from sandbox.audit import last_lines
from sandbox.settings import SandboxSettings


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


def tail_command(path: Path | None, lines: int, follow: bool) -> int:
    """``pagi audit tail``: print the newest records (and new ones with ``follow``)."""
    if path is None:
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
