"""The jail's input-file writer alone, in a temporary dir: it writes exactly the files it is
given, with modes the tool can use, and a hostile tree already in the working dir (links,
FIFOs, foreign directories, another filesystem, a race) never makes it write elsewhere."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sandbox.jail.files import DIRECTORY_MODE, FILE_MODE, InputFileError, write_input_files
from tests.unit.sandbox.files.mounts import run_with_tmpfs_at

REPO = Path(__file__).resolve().parents[4]
NOBODY = 65534
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture
def area(tmp_path: Path) -> tuple[Path, Path]:
    """A working dir and, beside it, a directory standing for the host's files."""
    workdir = tmp_path / "workdir"
    host = tmp_path / "host"
    workdir.mkdir()
    host.mkdir()
    (host / "secret").write_text("host secret")
    return workdir, host


def tree(top: Path) -> dict[str, bytes | None]:
    """Everything under `top`: files with their content, other entries as None."""
    found: dict[str, bytes | None] = {}
    for directory, dirs, names in os.walk(top):
        for name in dirs + names:
            path = Path(directory, name)
            relative = str(path.relative_to(top))
            found[relative] = (
                path.read_bytes() if path.is_file() and not path.is_symlink() else None
            )
    return found


def test_writes_files_and_directories_with_the_tools_modes_whatever_the_umask(area):
    workdir, _ = area
    previous = os.umask(0o077)
    try:
        write_input_files(
            str(workdir),
            {"main.py": b"print(1)\n", "data/2024/jan.csv": b"a,b\n", "data/feb.csv": b""},
        )
    finally:
        os.umask(previous)
    assert tree(workdir) == {
        "main.py": b"print(1)\n",
        "data": None,
        "data/2024": None,
        "data/feb.csv": b"",
        "data/2024/jan.csv": b"a,b\n",
    }
    assert stat.S_IMODE((workdir / "data/2024/jan.csv").stat().st_mode) == FILE_MODE
    assert stat.S_IMODE((workdir / "data/2024").stat().st_mode) == DIRECTORY_MODE


def test_takes_a_directory_descriptor_and_leaves_it_open(area):
    workdir, _ = area
    fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        write_input_files(fd, {"a/b.txt": b"x"})
        os.fstat(fd)  # still open
    finally:
        os.close(fd)
    assert (workdir / "a" / "b.txt").read_bytes() == b"x"


@root_only
def test_root_writing_for_the_tool_hands_everything_over(area):
    workdir, _ = area
    write_input_files(str(workdir), {"d/e/f.csv": b"1,2\n"}, owner=(NOBODY, NOBODY))
    for path in ("d", "d/e", "d/e/f.csv"):
        status = (workdir / path).stat()
        assert (status.st_uid, status.st_gid) == (NOBODY, NOBODY), path
    # And that user can read it (from inside the working dir, as in the jail).
    read = subprocess.run(
        [
            "setpriv",
            "--reuid",
            str(NOBODY),
            "--regid",
            str(NOBODY),
            "--clear-groups",
            "cat",
            "d/e/f.csv",
        ],
        cwd=workdir,
        capture_output=True,
        check=False,
    )
    assert read.stdout == b"1,2\n", read.stderr


@pytest.mark.parametrize("bad", ["", "/abs", "a/../b", "./a", "a//b", "a/", "a\x00b", ".."])
def test_refuses_what_is_not_a_plain_relative_path_even_if_the_service_did_not(area, bad):
    workdir, _ = area
    with pytest.raises(InputFileError):
        write_input_files(str(workdir), {bad: b"x"})
    assert tree(workdir) == {}


# --------------------------------------------------------------------------- hostile trees


def test_a_symlinked_directory_on_the_way_is_never_followed(area):
    workdir, host = area
    (workdir / "data").symlink_to(host)
    (workdir / "rel").symlink_to("../host")
    for path in ("data/new.csv", "rel/new.csv", "data/sub/new.csv"):
        with pytest.raises(InputFileError, match="symbolic link"):
            write_input_files(str(workdir), {path: b"pwned"})
    assert sorted(os.listdir(host)) == ["secret"]


def test_a_symlink_at_the_files_name_is_never_followed(area):
    workdir, host = area
    (workdir / "data.csv").symlink_to(host / "secret")
    (workdir / "dangling.csv").symlink_to(host / "created-through-link")
    for name in ("data.csv", "dangling.csv"):
        with pytest.raises(InputFileError, match="already there"):
            write_input_files(str(workdir), {name: b"pwned"})
    assert (host / "secret").read_text() == "host secret"
    assert not (host / "created-through-link").exists()


def test_a_fifo_or_file_at_the_name_is_an_error_not_a_hang(area):
    workdir, _ = area
    os.mkfifo(workdir / "pipe.csv")
    (workdir / "taken.csv").write_bytes(b"old")
    (workdir / "notadir").write_bytes(b"file")
    with pytest.raises(InputFileError, match="already there"):
        write_input_files(str(workdir), {"pipe.csv": b"x"})
    with pytest.raises(InputFileError, match="already there"):
        write_input_files(str(workdir), {"taken.csv": b"new"})
    with pytest.raises(InputFileError, match="not one"):
        write_input_files(str(workdir), {"notadir/x.csv": b"x"})
    assert (workdir / "taken.csv").read_bytes() == b"old"


@root_only
def test_a_directory_already_there_that_is_someone_elses_is_refused(area):
    workdir, _ = area
    foreign = workdir / "shared"
    foreign.mkdir(mode=0o777)
    os.chown(foreign, 1234, 1234)
    with pytest.raises(InputFileError, match="someone else"):
        write_input_files(str(workdir), {"shared/x.csv": b"x"}, owner=(NOBODY, NOBODY))
    assert os.listdir(foreign) == []
    # Its own directories, made by an earlier call, are fine.
    write_input_files(str(workdir), {"mine/a": b"1"}, owner=(NOBODY, NOBODY))
    write_input_files(str(workdir), {"mine/b": b"2"}, owner=(NOBODY, NOBODY))
    assert sorted(os.listdir(workdir / "mine")) == ["a", "b"]


@root_only
def test_a_mount_point_in_the_working_dir_is_never_written_into(area):
    workdir, _ = area
    (workdir / "mnt").mkdir()
    script = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from sandbox.jail.files import write_input_files, InputFileError
try:
    write_input_files({str(workdir)!r}, {{"mnt/x.csv": b"x"}})
except InputFileError as error:
    print("refused:", error.reason)
import os
print("inside:", os.listdir({str(workdir / "mnt")!r}))
"""
    done = run_with_tmpfs_at(workdir / "mnt", script)
    assert "refused: the directory is on another filesystem" in done.stdout, done.stderr
    assert "inside: []" in done.stdout


def test_a_directory_swapped_for_a_link_mid_write_never_leads_outside(area):
    workdir, host = area
    stop = threading.Event()

    def swap() -> None:
        target = workdir / "d"
        while not stop.is_set():
            try:
                target.symlink_to(host)
                target.unlink()
            except OSError:
                pass
            try:
                os.rmdir(target)
            except OSError:
                pass

    swapper = threading.Thread(target=swap)
    swapper.start()
    written = refused = 0
    try:
        for index in range(400):
            try:
                write_input_files(str(workdir), {f"d/f{index}.csv": b"x"})
                written += 1
            except InputFileError:
                refused += 1
    finally:
        stop.set()
        swapper.join()
    assert sorted(os.listdir(host)) == ["secret"], "a write went through the link"
    assert written + refused == 400


def test_needs_no_more_than_three_descriptors(tmp_path):
    # The tool's open-files limit is in force when the writer runs.
    workdir = tmp_path / "w"
    workdir.mkdir()
    script = f"""
import resource, sys
sys.path.insert(0, {str(REPO)!r})
from sandbox.jail.files import write_input_files
import os
lowest_free = os.open("/dev/null", os.O_RDONLY)
os.close(lowest_free)
resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free + 3, lowest_free + 3))
files = {{"/".join(f"d{{i}}" for i in range(12)) + f"/f{{n}}": b"x" for n in range(20)}}
write_input_files({str(workdir)!r}, files)
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-I", "-c", script], capture_output=True, text=True, check=False
    )
    assert done.stdout.strip() == "ok", done.stderr
