"""Control files held open: every read sees the file as it is now."""

from __future__ import annotations

import os
from pathlib import Path

from sandbox.jail.control_file import KeptOpen


def test_every_read_sees_the_file_as_it_is_now(tmp_path: Path) -> None:
    path = tmp_path / "counter"
    path.write_text("0\n")
    files = KeptOpen()
    assert files.read(str(path)) == "0\n"
    path.write_text("9\n")  # changed behind its back
    assert files.read(str(path)) == "9\n"
    files.close()


def test_close_releases_every_fd(tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    files = KeptOpen()
    for name in ("a", "b", "c"):
        (tmp_path / name).write_text("1")
        files.open(str(tmp_path / name))
    assert len(os.listdir("/proc/self/fd")) == before + 3
    files.close()
    assert len(os.listdir("/proc/self/fd")) == before
