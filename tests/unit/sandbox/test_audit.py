"""The audit file: append-only JSON lines, reopened when rotated, shown by `pagi audit tail`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.audit import tail_command
from cli.main import main as pagi_main
from sandbox.audit import AuditLog, last_lines

REPO = Path(__file__).resolve().parents[3]


def record(n: int, **extra: object) -> dict:
    return {
        "time": f"2026-11-25T12:00:{n:02d}.000Z",
        "request_id": f"rid-{n}",
        "caller": "agent",
        "tool": "python",
        "code_sha256": "ab" * 32,
        "code_bytes": 10,
        "policy_version": "0123456789abcdef",
        "decision": "allowed",
        "status": 200,
        "reason": None,
        "outcome": {
            "tool_status": "ok",
            "exit_code": 0,
            "signal": None,
            "limit_hit": None,
            "seccomp_refusals": 0,
        },
        "duration_ms": 3.2,
        **extra,
    }


async def test_records_are_json_lines_in_a_private_file(tmp_path):
    log = AuditLog(tmp_path / "audit" / "sandbox-audit.jsonl")
    log.open()
    assert await log.write(record(1))
    assert await log.write(record(2, decision="refused", status=403))
    lines = log.path.read_text().splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == ["rid-1", "rid-2"]
    assert log.path.stat().st_mode & 0o777 == 0o600
    log.close()


async def test_existing_records_are_never_truncated(tmp_path):
    path = tmp_path / "audit.jsonl"
    path.write_text(json.dumps(record(0)) + "\n")
    log = AuditLog(path)
    log.open()
    await log.write(record(1))
    assert len(path.read_text().splitlines()) == 2
    log.close()


async def test_concurrent_writers_never_interleave(tmp_path):
    path = tmp_path / "audit.jsonl"
    logs = [AuditLog(path) for _ in range(4)]
    for log in logs:
        log.open()
    big = "x" * 20000  # larger than a pipe buffer; still one write() each
    await asyncio.gather(*(log.write(record(i, reason=big)) for i in range(50) for log in logs))
    lines = path.read_text().splitlines()
    assert len(lines) == 200
    assert all(json.loads(line)["reason"] == big for line in lines)


async def test_fsync_mode_writes_too(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl", fsync=True)
    log.open()
    assert await log.write(record(1))
    assert json.loads(log.path.read_text())["request_id"] == "rid-1"


async def test_write_failure_is_reported_and_recovers(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.open()
    path.unlink()
    path.mkdir()
    assert not log.ready()
    assert log.error and "audit.jsonl" in log.error
    assert not await log.write(record(1))
    path.rmdir()
    assert log.ready() and log.error is None
    assert await log.write(record(2))
    assert json.loads(path.read_text())["request_id"] == "rid-2"


async def test_symlink_at_the_audit_path_is_refused(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("")
    path = tmp_path / "audit.jsonl"
    path.symlink_to(target)
    log = AuditLog(path)
    log.open()
    assert log.error is not None
    assert not await log.write(record(1))
    assert target.read_text() == ""


def write_records(path: Path, count: int) -> None:
    path.write_text("".join(json.dumps(record(i)) + "\n" for i in range(count)))


def test_last_lines_reads_from_the_end(tmp_path):
    path = tmp_path / "audit.jsonl"
    write_records(path, 500)
    tail = last_lines(path, 3, block=256)
    assert [json.loads(line)["request_id"] for line in tail] == ["rid-497", "rid-498", "rid-499"]
    assert len(last_lines(path, 1000)) == 500
    assert last_lines(path, 0) == []


def test_tail_command_prints_readable_records(tmp_path, capsys):
    path = tmp_path / "audit.jsonl"
    write_records(path, 5)
    with path.open("a") as handle:
        handle.write("{broken\n")
        handle.write(
            json.dumps(
                record(
                    9,
                    decision="refused",
                    status=403,
                    outcome=None,
                    reason="caller 'bff' may not run tool 'python'",
                )
            )
            + "\n"
        )
    assert tail_command(path, 3, follow=False) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3
    assert "rid-4" in out[0] and "allowed" in out[0] and "tool_status=ok" in out[0]
    assert "unreadable record" in out[1]
    assert "refused" in out[2] and "403" in out[2] and "may not run" in out[2]


def test_tail_command_missing_file(tmp_path, capsys):
    assert tail_command(tmp_path / "none.jsonl", 10, follow=False) == 1
    assert "no audit file" in capsys.readouterr().err


def test_pagi_audit_tail_uses_the_settings_path(tmp_path, capsys, monkeypatch):
    path = tmp_path / "custom.jsonl"
    write_records(path, 2)
    monkeypatch.setenv("PAGI_SANDBOX_AUDIT_LOG", str(path))
    with pytest.raises(SystemExit) as done:
        pagi_main(["audit", "tail", "-n", "5"])
    assert done.value.code == 0
    assert "rid-1" in capsys.readouterr().out


def test_pagi_audit_tail_follow_prints_new_records(tmp_path):
    path = tmp_path / "audit.jsonl"
    write_records(path, 1)
    follower = subprocess.Popen(
        [sys.executable, "-m", "cli", "audit", "tail", "-f", "-n", "1", "--file", str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        assert "rid-0" in follower.stdout.readline()
        time.sleep(0.3)
        with path.open("a") as handle:
            handle.write(json.dumps(record(7)) + "\n")
        assert "rid-7" in follower.stdout.readline()
        # Rotation: a new file at the same path is followed.
        os.rename(path, path.with_suffix(".1"))
        path.write_text(json.dumps(record(8)) + "\n")
        assert "rid-8" in follower.stdout.readline()
    finally:
        follower.terminate()
        follower.wait(timeout=5)


async def test_a_fifo_at_the_audit_path_is_refused_without_hanging(tmp_path):
    path = tmp_path / "audit.jsonl"
    os.mkfifo(path)
    log = AuditLog(path)
    log.open()
    assert log.error is not None
    assert not log.ready()


def test_tail_describes_service_and_policy_records(tmp_path, capsys):
    path = tmp_path / "audit.jsonl"
    records = [
        {"time": "t1", "kind": "service", "action": "sandbox_started", "policy_version": "v1"},
        {
            "time": "t2",
            "kind": "policy",
            "action": "policy_rejected",
            "error": "f:3: x: bad",
            "kept_version": "v1",
        },
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert tail_command(path, 5, follow=False) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("t1 sandbox_started") and "policy_version=v1" in out[0]
    assert "policy_rejected" in out[1] and "error='f:3: x: bad'" in out[1]


def test_tail_shows_a_runs_denials(tmp_path, capsys):
    path = tmp_path / "audit.jsonl"
    denials = [
        {"layer": "seccomp", "what": "socket(AF_INET, SOCK_STREAM)", "count": 3, "hint": "h"},
        {"layer": "limit", "what": "wall_seconds = 5 s", "count": 1, "hint": "h"},
    ]
    outcome = {"tool_status": "timeout", "exit_code": None, "denials": denials}
    path.write_text(json.dumps(record(1, outcome=outcome)) + "\n")
    assert tail_command(path, 1, follow=False) == 0
    line = capsys.readouterr().out
    assert "denials='seccomp:socket(AF_INET, SOCK_STREAM) x3; limit:wall_seconds = 5 s'" in line
