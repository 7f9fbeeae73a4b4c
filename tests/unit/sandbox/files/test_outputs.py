"""The output collector: it returns the regular files under out/ within the caps, lists what
it will not return and why, and no link, special file, mount or race planted by a tool makes it
read a host file or another run's file (judge0's CVE-2024-28185/28189 followed such links)."""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import files_out
from sandbox.file_audit import files_out_record
from sandbox.files_out import (
    DEPTH_CEILING,
    LISTED_CEILING,
    CollectedFile,
    OutputCollection,
    collect_output_files,
)
from sandbox.models import output_files_of, response_of
from sandbox.spec import RunResult
from tests.unit.sandbox.files.mounts import run_with_tmpfs_at

REPO = Path(__file__).resolve().parents[4]
SECRET = b"host secret: the service's private key"
OTHER_RUN = b"another run's private result"
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture(params=["openat2", "openat"])
def opener(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test runs with openat2 (RESOLVE_BENEATH...) and with the O_NOFOLLOW fallback."""
    files_out._Beneath.available = None if request.param == "openat2" else False
    yield request.param
    if request.param == "openat2":
        assert files_out._Beneath.available in (None, True)
    files_out._Beneath.available = None


class Runs:
    """Two runs' working dirs on one filesystem, and a host file beside them."""

    def __init__(self, top: Path) -> None:
        self.host = top / "host"
        self.a = top / "run-a"
        self.b = top / "run-b"
        for path in (self.host, self.a / "out", self.b / "out"):
            path.mkdir(parents=True)
        (self.host / "secret").write_bytes(SECRET)
        (self.b / "out" / "result.bin").write_bytes(OTHER_RUN)
        (self.b / "out" / "deep").mkdir()
        (self.b / "out" / "deep" / "x.bin").write_bytes(OTHER_RUN)

    @property
    def out(self) -> Path:
        return self.a / "out"

    def collect(self, max_files: int = 16, max_bytes: int = 1 << 20) -> OutputCollection:
        collection = collect_output_files(str(self.a), max_files, max_bytes)
        for entry in collection.files:
            assert entry.data not in (SECRET, OTHER_RUN), entry
            if entry.data is not None:
                assert entry.sha256 == hashlib.sha256(entry.data).hexdigest()
                assert entry.size == len(entry.data)
            assert entry.path.startswith("out")
        return collection


@pytest.fixture
def runs(tmp_path: Path, opener: str) -> Runs:
    return Runs(tmp_path)


def by_path(collection: OutputCollection) -> dict[str, CollectedFile]:
    return {entry.path: entry for entry in collection.files}


def returned(collection: OutputCollection) -> dict[str, bytes]:
    return {e.path: e.data for e in collection.files if e.data is not None}


def skipped(collection: OutputCollection) -> dict[str, str | None]:
    return {e.path: e.skipped for e in collection.files if e.skipped is not None}


# --------------------------------------------------------------------------- normal


def test_returns_the_regular_files_under_out_in_name_order(runs: Runs):
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    (runs.out / "plot.png").write_bytes(png)
    (runs.out / "tables").mkdir()
    (runs.out / "tables" / "b.csv").write_bytes(b"b\n")
    (runs.out / "tables" / "a.csv").write_bytes(b"a\n")
    (runs.out / "empty.txt").write_bytes(b"")
    (runs.a / "main.py").write_bytes(b"not an output")
    collection = runs.collect()
    assert [e.path for e in collection.files] == [
        "out/empty.txt",
        "out/plot.png",
        "out/tables/a.csv",
        "out/tables/b.csv",
    ]
    assert returned(collection)["out/plot.png"] == png
    assert by_path(collection)["out/plot.png"].sha256 == hashlib.sha256(png).hexdigest()
    assert collection.unlisted == 0 and collection.returned_bytes == len(png) + 4


def test_no_out_dir_is_no_files(runs: Runs):
    os.rmdir(runs.out)
    assert runs.collect() == OutputCollection()
    os.mkdir(runs.out)
    assert runs.collect() == OutputCollection()


def test_an_out_that_is_not_a_directory_is_listed_not_read(runs: Runs):
    os.rmdir(runs.out)
    runs.out.write_bytes(b"a file called out")
    assert runs.collect().files == (CollectedFile("out", 0, skipped="not_a_directory"),)
    runs.out.unlink()
    runs.out.symlink_to(runs.b / "out")
    assert runs.collect().files == (CollectedFile("out", 0, skipped="symlink"),)


def test_the_result_and_audit_views_carry_the_same_files(runs: Runs):
    (runs.out / "a.bin").write_bytes(b"\x00\xff" * 10)
    (runs.out / "b.bin").write_bytes(b"x" * 100)
    collection = runs.collect(max_files=1)
    [first, second] = output_files_of(collection)
    assert base64.b64decode(first.content or "") == b"\x00\xff" * 10 and not first.truncated
    assert (second.content, second.sha256, second.truncated, second.size) == (None, None, True, 100)
    result = RunResult(stdout="", stderr="", exit_code=0, duration_ms=1.0)
    answer = response_of(result, "python-data", "v1", collection).model_dump(mode="json")
    assert [f["path"] for f in answer["result"]["files"]] == ["out/a.bin", "out/b.bin"]
    assert response_of(result, "python", "v1").result.files is None


def test_the_audit_record_names_sizes_and_hashes_but_never_content(runs: Runs):
    (runs.out / "report.csv").write_bytes(b"confidential,figures\n")
    (runs.out / "big.bin").write_bytes(b"z" * 300)
    (runs.out / "link").symlink_to(runs.host / "secret")
    record = files_out_record(runs.collect(max_bytes=100))
    assert record == {
        "count": 3,
        "returned": 1,
        "returned_bytes": 21,
        "unlisted": 0,
        "files": [
            {
                "path": "out/big.bin",
                "size": 300,
                "sha256": None,
                "truncated": True,
                "skipped": None,
            },
            {
                "path": "out/link",
                "size": len(str(runs.host / "secret")),
                "sha256": None,
                "truncated": False,
                "skipped": "symlink",
            },
            {
                "path": "out/report.csv",
                "size": 21,
                "sha256": hashlib.sha256(b"confidential,figures\n").hexdigest(),
                "truncated": False,
                "skipped": None,
            },
        ],
    }
    assert "confidential" not in json.dumps(record)
    assert files_out_record(OutputCollection()) is None and files_out_record(None) is None


# --------------------------------------------------------------------------- caps


def test_files_over_the_count_cap_are_listed_truncated_never_dropped(runs: Runs):
    for index in range(5):
        (runs.out / f"f{index}.txt").write_bytes(b"%d" % index)
    collection = runs.collect(max_files=3)
    assert list(returned(collection)) == ["out/f0.txt", "out/f1.txt", "out/f2.txt"]
    assert [(e.path, e.size, e.truncated, e.data) for e in collection.files[3:]] == [
        ("out/f3.txt", 1, True, None),
        ("out/f4.txt", 1, True, None),
    ]


def test_a_file_over_the_bytes_left_is_truncated_and_smaller_ones_still_fit(runs: Runs):
    (runs.out / "a.bin").write_bytes(b"a" * 10)
    (runs.out / "b.bin").write_bytes(b"b" * 100)
    (runs.out / "c.bin").write_bytes(b"c" * 40)
    collection = runs.collect(max_bytes=50)
    assert returned(collection) == {"out/a.bin": b"a" * 10, "out/c.bin": b"c" * 40}
    assert by_path(collection)["out/b.bin"].truncated
    assert collection.returned_bytes == 50
    nothing = runs.collect(max_files=0, max_bytes=0)
    assert all(e.truncated for e in nothing.files) and len(nothing.files) == 3


def test_the_listing_stops_at_its_ceiling_and_counts_the_rest(runs: Runs):
    for index in range(LISTED_CEILING + 76):
        (runs.out / f"{index:05}").write_bytes(b"")
    collection = runs.collect(max_files=4)
    assert len(collection.files) == LISTED_CEILING and collection.unlisted == 76
    assert sum(1 for e in collection.files if e.data is not None) == 4


def test_directories_deeper_than_the_ceiling_are_listed_not_walked(runs: Runs):
    deep = runs.out
    for level in range(DEPTH_CEILING + 4):
        deep = deep / f"d{level}"
    deep.mkdir(parents=True)
    (deep / "bottom.txt").write_bytes(b"x")
    [entry] = runs.collect().files
    assert entry.skipped == "directory_limit"
    assert entry.path.count("/") == DEPTH_CEILING


def test_names_that_are_not_utf8_are_listed_escaped_not_returned(runs: Runs):
    with open(os.path.join(os.fsencode(runs.out), b"\xff\xfe.bin"), "wb") as handle:
        handle.write(b"data")
    [entry] = runs.collect().files
    assert (entry.path, entry.skipped, entry.data) == ("out/\\xff\\xfe.bin", "invalid_name", None)
    json.dumps(entry.path).encode("utf-8")


# --------------------------------------------------------------------------- hostile trees


def test_symlinks_to_host_files_and_other_runs_are_never_followed(runs: Runs):
    out = runs.out
    (out / "abs-secret").symlink_to(runs.host / "secret")
    (out / "rel-secret").symlink_to("../../host/secret")
    (out / "other-run").symlink_to(runs.b / "out" / "result.bin")
    (out / "other-run-dir").symlink_to(runs.b / "out")
    (out / "proc-root").symlink_to("/proc/self/root/etc/passwd")
    (out / "dangling").symlink_to(runs.host / "nothing")
    (out / "sub").mkdir()
    (out / "sub" / "up").symlink_to("../..")
    (out / "real.txt").write_bytes(b"mine")
    collection = runs.collect()
    assert returned(collection) == {"out/real.txt": b"mine"}
    assert skipped(collection) == {
        "out/abs-secret": "symlink",
        "out/dangling": "symlink",
        "out/other-run": "symlink",
        "out/other-run-dir": "symlink",
        "out/proc-root": "symlink",
        "out/rel-secret": "symlink",
        "out/sub/up": "symlink",
    }


def test_hard_links_are_never_read(runs: Runs):
    os.link(runs.host / "secret", runs.out / "to-host")
    os.link(runs.b / "out" / "result.bin", runs.out / "to-other-run")
    (runs.out / "mine").write_bytes(b"mine")
    os.link(runs.out / "mine", runs.out / "mine-again")
    collection = runs.collect()
    assert returned(collection) == {}
    assert set(skipped(collection).values()) == {"hard_link"} and len(collection.files) == 4


def test_fifos_and_sockets_are_listed_without_blocking(runs: Runs):
    os.mkfifo(runs.out / "pipe")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(runs.out / "sock"))
    (runs.out / "z.txt").write_bytes(b"after them")
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            collection = pool.submit(runs.collect).result(timeout=10)
    finally:
        listener.close()
    assert skipped(collection) == {"out/pipe": "fifo", "out/sock": "socket"}
    assert returned(collection) == {"out/z.txt": b"after them"}


@root_only
def test_device_nodes_are_never_opened(runs: Runs):
    os.mknod(runs.out / "urandom", 0o666 | stat.S_IFCHR, os.makedev(1, 9))
    os.mknod(runs.out / "disk", 0o666 | stat.S_IFBLK, os.makedev(7, 0))
    collection = runs.collect()
    assert skipped(collection) == {"out/disk": "device", "out/urandom": "device"}
    assert returned(collection) == {}


def test_a_directory_named_like_a_file_is_walked_as_a_directory(runs: Runs):
    (runs.out / "plot.png").mkdir()
    (runs.out / "plot.png" / "inner.txt").write_bytes(b"inside")
    (runs.out / "empty.csv").mkdir()
    collection = runs.collect()
    assert [(e.path, e.data) for e in collection.files] == [("out/plot.png/inner.txt", b"inside")]


def test_a_given_root_that_is_a_link_is_refused_and_a_given_fd_is_left_as_it_was(runs: Runs):
    link = runs.a.parent / "link-to-b"
    link.symlink_to(runs.b)
    with pytest.raises(OSError):
        collect_output_files(str(link), 16, 1 << 20)
    (runs.out / "x").write_bytes(b"x")
    fd = os.open(runs.a, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert returned(collect_output_files(fd, 16, 1 << 20)) == {"out/x": b"x"}
        assert sorted(os.listdir(fd)) == ["out"]  # still open, still readable from the start
    finally:
        os.close(fd)


@root_only
def test_a_mount_point_under_out_is_never_crossed(tmp_path: Path, opener: str):
    runs = Runs(tmp_path)
    (runs.out / "mnt").mkdir()
    (runs.out / "mine.txt").write_bytes(b"mine")
    script = f"""
import json, sys
sys.path.insert(0, {str(REPO)!r})
from sandbox import files_out
from sandbox.file_audit import files_out_record
files_out._Beneath.available = {None if opener == "openat2" else False}
with open({str(runs.out / "mnt" / "planted")!r}, "wb") as handle:
    handle.write(b"from another filesystem")
collection = files_out.collect_output_files({str(runs.a)!r}, 16, 1 << 20)
print(json.dumps([[e.path, e.skipped, e.data is not None] for e in collection.files]))
"""
    done = run_with_tmpfs_at(runs.out / "mnt", script)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        ["out/mine.txt", None, True],
        ["out/mnt", "other_filesystem", False],
    ]


# --------------------------------------------------------------------------- races


def test_a_file_swapped_for_a_link_while_being_collected_never_yields_the_target(runs: Runs):
    good = b"good content " * 100
    stop = threading.Event()

    def swap() -> None:
        name = runs.out / "a.bin"
        link, regular = runs.out / ".link", runs.out / ".regular"
        while not stop.is_set():
            try:
                link.symlink_to(runs.host / "secret")
                os.replace(link, name)
                regular.write_bytes(good)
                os.replace(regular, name)
            except OSError:
                pass

    swapper = threading.Thread(target=swap)
    swapper.start()
    seen: set[str] = set()
    try:
        for _ in range(5000):
            if {"read", "symlink"} <= seen:
                break
            entry = by_path(runs.collect()).get("out/a.bin")
            if entry is None:
                continue
            if entry.data is not None:
                assert entry.data == good
                seen.add("read")
            else:
                assert entry.skipped in ("symlink", "changed"), entry
                seen.add(entry.skipped)
    finally:
        stop.set()
        swapper.join()
    assert "read" in seen and "symlink" in seen  # the race really ran both ways


def test_a_file_that_grows_or_shrinks_during_the_read_is_listed_changed(
    runs: Runs, monkeypatch: pytest.MonkeyPatch
):
    target = runs.out / "log.txt"
    target.write_bytes(b"x" * 1000)
    real_read = os.read

    def read_then_append(fd: int, size: int) -> bytes:
        data = real_read(fd, size)
        with open(target, "ab") as handle:
            handle.write(b"more")
        return data

    monkeypatch.setattr(files_out.os, "read", read_then_append)
    [entry] = runs.collect().files
    assert (entry.skipped, entry.data) == ("changed", None) and entry.size > 1000

    def read_then_truncate(fd: int, size: int) -> bytes:
        os.truncate(target, 10)
        return real_read(fd, size)

    monkeypatch.setattr(files_out.os, "read", read_then_truncate)
    [entry] = runs.collect().files
    assert (entry.skipped, entry.data) == ("changed", None)


def test_a_file_written_to_while_collected_is_whole_or_listed_changed(runs: Runs):
    target = runs.out / "growing.bin"
    target.write_bytes(b"y" * (4 << 20))
    stop = threading.Event()

    def append() -> None:
        with open(target, "ab", buffering=0) as handle:
            while not stop.is_set():
                handle.write(b"y" * 65536)
                if handle.tell() > 12 << 20:
                    handle.truncate(4 << 20)
                    handle.seek(4 << 20)

    writer = threading.Thread(target=append)
    writer.start()
    outcomes: set[str] = set()
    try:
        for _ in range(500):
            [entry] = runs.collect(max_bytes=16 << 20).files
            if entry.data is not None:
                assert entry.data == b"y" * len(entry.data)
                outcomes.add("whole")
            else:
                assert entry.skipped == "changed"
                outcomes.add("changed")
            if "changed" in outcomes:
                break
    finally:
        stop.set()
        writer.join()
    assert "changed" in outcomes  # the race really happened


def test_openat2_is_in_use_on_this_kernel(tmp_path: Path):
    """The RESOLVE_BENEATH path is the one that runs here, not only the fallback."""
    files_out._Beneath.available = None
    runs = Runs(tmp_path)
    (runs.out / "x").write_bytes(b"x")
    runs.collect()
    assert files_out._Beneath.available is True
