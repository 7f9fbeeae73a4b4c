"""Finding a jailed process from the host, by the name (comm) it gave itself."""

from __future__ import annotations

import os
import time
from pathlib import Path


def status_fields(pid: int) -> dict[str, str]:
    """``/proc/PID/status`` as a dict (``OSError`` once the process is gone)."""
    text = Path(f"/proc/{pid}/status").read_text()
    return {
        name: value.strip()
        for name, _, value in (line.partition(":") for line in text.splitlines())
        if value
    }


def pids_named(comm: str) -> list[int]:
    """Host pids of the processes whose comm is ``comm`` now."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if Path(f"/proc/{entry}/comm").read_text().strip() == comm:
                found.append(int(entry))
        except OSError:
            continue  # gone meanwhile
    return found


def wait_for_process_named(comm: str, deadline_s: float) -> tuple[int, dict[str, str]]:
    """The pid and status fields of a process named ``comm``, once one appears.

    ``AssertionError`` if none does within ``deadline_s`` seconds.
    """
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for pid in pids_named(comm):
            try:
                return pid, status_fields(pid)
            except OSError:
                continue
        time.sleep(0.02)
    raise AssertionError(f"no process named {comm} appeared within {deadline_s} s")
