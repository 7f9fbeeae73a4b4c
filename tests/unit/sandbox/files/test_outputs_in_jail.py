"""With the real jail, on the warm and cold paths: what a tool leaves under ``out/`` comes back
through the descriptor of its own working dir, and nothing a hostile tool plants there (links to
host files or to another run's files, hard links, FIFOs, device nodes, a file swapped while it is
read) makes the service read anything but the run's own regular files."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from sandbox.files_out import OutputCollection
from sandbox.host.runner import Runner
from sandbox.spec import OutputCaps, RunResult
from tests.unit.sandbox.jailed import PATHS, python

pytestmark = pytest.mark.asyncio(loop_scope="module")

CAPS = OutputCaps(files=16, bytes=1 << 20)


async def run(runner: Runner, code: str, path: str, caps: OutputCaps | None = CAPS) -> RunResult:
    result = await runner.run(python(code, path, outputs=caps))
    assert result.exit_code == 0, result.stderr
    return result


def listed(collection: OutputCollection | None) -> dict[str, tuple[bytes | None, str | None]]:
    assert collection is not None
    return {entry.path: (entry.data, entry.skipped) for entry in collection.files}


@pytest.mark.parametrize("path", PATHS)
async def test_files_under_out_come_back_with_size_and_hash(runner: Runner, path: str) -> None:
    code = (
        "import os; os.makedirs('out/sub'); open('out/a.txt', 'w').write('alpha');"
        "open('out/sub/b.bin', 'wb').write(bytes(range(256))); open('elsewhere', 'w').write('x')"
    )
    result = await run(runner, code, path)
    assert result.path == path
    assert result.files is not None
    by_path = {entry.path: entry for entry in result.files.files}
    assert set(by_path) == {"out/a.txt", "out/sub/b.bin"}
    assert by_path["out/a.txt"].data == b"alpha"
    assert by_path["out/sub/b.bin"].size == 256
    assert by_path["out/sub/b.bin"].sha256 == hashlib.sha256(bytes(range(256))).hexdigest()


@pytest.mark.parametrize("path", PATHS)
async def test_no_out_dir_or_no_caps_is_no_files(runner: Runner, path: str) -> None:
    assert (await run(runner, "print(1)", path)).files is None
    code = "import os; os.mkdir('out'); open('out/a', 'w').write('a')"
    assert (await run(runner, code, path, caps=None)).files is None


@pytest.mark.parametrize("path", PATHS)
async def test_over_the_caps_is_listed_truncated(runner: Runner, path: str) -> None:
    code = "import os; os.mkdir('out')\nfor i in range(5): open(f'out/{i}', 'w').write('x' * 10)"
    result = await run(runner, code, path, caps=OutputCaps(files=2, bytes=1 << 20))
    assert result.files is not None
    assert [(e.path, e.data is not None, e.truncated) for e in result.files.files] == [
        ("out/0", True, False),
        ("out/1", True, False),
        ("out/2", False, True),
        ("out/3", False, True),
        ("out/4", False, True),
    ]


SECRET = b"host secret, never to leave\n"

HOSTILE = """
import json, os, socket
os.mkdir("out")
planted = {{}}
def plant(name, kind, make):
    try:
        make()
        planted["out/" + name] = kind
    except OSError as error:
        planted["out/" + name] = "refused: " + error.strerror
for name, target in {links!r}.items():
    plant(name, "symlink", lambda: os.symlink(target, "out/" + name))
plant("proc_root", "symlink", lambda: os.symlink("/proc/1/root/etc/hostname", "out/proc_root"))
plant("up", "symlink", lambda: os.symlink("..", "out/up"))
plant("dev", "symlink", lambda: os.symlink("/dev/null", "out/dev"))
open("mine.txt", "w").write("mine")
plant("hard", "hard_link", lambda: os.link("mine.txt", "out/hard"))
plant("fifo", "fifo", lambda: os.mkfifo("out/fifo"))
plant("null", "device", lambda: os.mknod("out/null", 0o666 | 0o020000, os.makedev(1, 3)))
server = socket.socket(socket.AF_UNIX)
plant("socket", "socket", lambda: server.bind("out/socket"))
os.mkdir("out/looks_like.csv")
open("out/looks_like.csv/inner.txt", "w").write("inner")
open("out/plain.txt", "w").write("plain")
print(json.dumps(planted))
"""


@pytest.mark.parametrize("path", PATHS)
async def test_nothing_a_tool_plants_under_out_is_followed(
    runner: Runner, path: str, tmp_path: Path
) -> None:
    host_file = tmp_path / "secret.txt"
    host_file.write_bytes(SECRET)
    os.chmod(tmp_path, 0o755)
    links = {
        "host_file": str(host_file),
        "passwd": "/etc/passwd",
        "shadow": "/etc/shadow",
        "other_runs": str(runner.runs_root),  # where every run's root is mounted, on the host
        "other_workdir": "/proc/self/cwd",
        "relative": "../mine.txt",
    }
    result = await run(runner, HOSTILE.format(links=links), path)
    planted = json.loads(result.stdout)
    made = {name: kind for name, kind in planted.items() if not kind.startswith("refused")}
    # Every link is made; the jail's filter refuses some other plantings itself (FIFOs,
    # device nodes: mknod): whatever was made is listed as what it is, never read.
    assert made["out/hard"] == "hard_link" and made["out/socket"] == "socket", planted
    assert {name for name, kind in made.items() if kind == "symlink"} == {
        f"out/{name}" for name in (*links, "proc_root", "up", "dev")
    }
    seen = listed(result.files)
    assert seen.pop("out/plain.txt") == (b"plain", None)
    assert seen.pop("out/looks_like.csv/inner.txt") == (b"inner", None)
    assert seen == {name: (None, kind) for name, kind in made.items()}
    assert result.files is not None
    assert all(SECRET not in (entry.data or b"") for entry in result.files.files)


SWAPPER = """
import os, threading
os.mkdir("out")
big = b"x" * (4 << 20)
open("out/data", "wb").write(big)
stop = False
def swap():
    while not stop:
        try:
            os.rename("out/data", "out/.old")
            os.symlink("/etc/passwd", "out/data")
            os.unlink("out/data")
            os.rename("out/.old", "out/data")
        except OSError:
            pass
os.fork() == 0 and (swap(), os._exit(0))
"""


@pytest.mark.parametrize("path", PATHS)
async def test_a_file_swapped_for_a_link_while_collected_never_yields_the_target(
    runner: Runner, path: str
) -> None:
    # A child keeps swapping the file for a link to a host file after the tool exits,
    # while the service collects: whatever it finds, it never reads through the link.
    for _ in range(5):
        result = await runner.run(python(SWAPPER, path, outputs=OutputCaps(bytes=8 << 20)))
        for entry in result.files.files if result.files is not None else ():
            if entry.data is not None:
                assert entry.data == b"x" * (4 << 20), entry.path
            assert b"root:" not in (entry.data or b"")


@pytest.mark.parametrize("path", PATHS)
async def test_a_run_never_sees_the_last_ones_files(runner: Runner, path: str) -> None:
    await run(runner, "import os; os.mkdir('out'); open('out/first', 'w').write('1')", path)
    result = await run(runner, "import os; print(sorted(os.listdir('.')))", path)
    assert result.stdout.strip() == "[]"
    assert result.files is None
