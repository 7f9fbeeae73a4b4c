"""A tool that behaves well must still work inside every layer, on both paths."""

from __future__ import annotations

import hashlib
import signal

import pytest

from tests.escape.harness import SandboxUnderTest

pytestmark = pytest.mark.escape

STDLIB_PROGRAM = r"""
import collections, datetime, decimal, hashlib, itertools, json, math, re, statistics
data = json.loads('{"values": [3, 1, 4, 1, 5, 9, 2, 6]}')
values = data["values"]
print(json.dumps({"sorted": sorted(values), "sum": sum(values)}, sort_keys=True))
print(re.findall(r"\d+", "a1b22c333"))
print(math.isqrt(10**12), round(math.pi, 5))
print(datetime.date(2024, 2, 28) + datetime.timedelta(days=1))
print(list(itertools.combinations("abc", 2)))
print(decimal.Decimal("0.1") + decimal.Decimal("0.2"), statistics.median(values))
print(collections.Counter("mississippi").most_common(1))
print(hashlib.sha256(b"pagi").hexdigest()[:16])
"""

STDLIB_EXPECTED = "\n".join(
    [
        '{"sorted": [1, 1, 2, 3, 4, 5, 6, 9], "sum": 31}',
        "['1', '22', '333']",
        "1000000 3.14159",
        "2024-02-29",
        "[('a', 'b'), ('a', 'c'), ('b', 'c')]",
        "0.3 3.5",
        "[('i', 4)]",
        hashlib.sha256(b"pagi").hexdigest()[:16],
    ]
)


def test_standard_library_program(sandbox: SandboxUnderTest) -> None:
    response = sandbox.execute(STDLIB_PROGRAM)
    body = response.json()
    assert response.status_code == 200, body
    assert body["tool_status"] == "ok", body
    assert body["result"]["exit_code"] == 0
    assert body["result"]["stdout"] == STDLIB_EXPECTED + "\n", body["result"]
    assert body["result"]["executor"] == sandbox.path


def test_subprocess_of_the_interpreter(sandbox: SandboxUnderTest) -> None:
    program = (
        "import subprocess, sys\n"
        "done = subprocess.run([sys.executable, '-I', '-S', '-c', 'print(6 * 7)'],"
        " capture_output=True, text=True, check=True)\n"
        "print('child said', done.stdout.strip())\n"
    )
    body = sandbox.execute(program).json()
    assert body["tool_status"] == "ok", body
    assert body["result"]["stdout"] == "child said 42\n"


def test_fork_and_threads_work(sandbox: SandboxUnderTest) -> None:
    program = (
        "import os\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(7)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "with ThreadPoolExecutor(4) as pool:\n"
        "    squares = list(pool.map(lambda n: n * n, range(8)))\n"
        "print(os.waitstatus_to_exitcode(status), sum(squares))\n"
    )
    body = sandbox.execute(program).json()
    assert body["tool_status"] == "ok", body
    assert body["result"]["stdout"] == "7 140\n"


def test_stdin_is_empty_not_inherited(sandbox: SandboxUnderTest) -> None:
    body = sandbox.execute("import sys\nprint(repr(sys.stdin.read()))\n").json()
    assert body["tool_status"] == "ok", body
    assert body["result"]["stdout"] == "''\n"


def test_files_in_the_working_dir(sandbox: SandboxUnderTest) -> None:
    program = (
        "import os, tempfile\n"
        "with open('notes.txt', 'w') as f:\n"
        "    f.write('kept for the run')\n"
        "os.mkdir('sub')\n"
        "with open('sub/data.bin', 'wb') as f:\n"
        "    f.write(bytes(range(256)))\n"
        "with tempfile.TemporaryDirectory() as scratch:\n"
        "    open(os.path.join(scratch, 't'), 'w').write('x')\n"
        "print(open('notes.txt').read(), len(open('sub/data.bin', 'rb').read()),"
        " sorted(os.listdir('.')))\n"
    )
    body = sandbox.execute(program).json()
    assert body["tool_status"] == "ok", body
    text = body["result"]["stdout"]
    assert text.startswith("kept for the run 256 "), text
    assert "'notes.txt'" in text and "'sub'" in text


def test_output_up_to_the_cap_is_complete(sandbox: SandboxUnderTest) -> None:
    size = sandbox.limits.output_bytes - 1
    body = sandbox.execute(f"import sys\nsys.stdout.write('z' * {size})\n").json()
    assert body["tool_status"] == "ok", body
    assert body["result"]["stdout"] == "z" * size
    assert body["result"]["stdout_truncated"] is False


def test_output_beyond_the_cap_is_cut_and_flagged(sandbox: SandboxUnderTest) -> None:
    size = sandbox.limits.output_bytes * 2
    body = sandbox.execute(f"import sys\nsys.stdout.write('z' * {size})\n").json()
    result = body["result"]
    assert result["stdout_truncated"] is True, result
    assert result["stdout"] == "z" * sandbox.limits.output_bytes


def test_unicode_output(sandbox: SandboxUnderTest) -> None:
    body = sandbox.execute("print('héllo ✓ 漢字')\n").json()
    assert body["result"]["stdout"] == "héllo ✓ 漢字\n", body


def test_exit_code_is_propagated(sandbox: SandboxUnderTest) -> None:
    body = sandbox.execute("import sys\nprint('bye')\nsys.exit(3)\n").json()
    assert body["tool_status"] == "error", body
    assert body["result"]["exit_code"] == 3
    assert body["result"]["stdout"] == "bye\n"


def test_uncaught_exception_gives_traceback_and_status_1(sandbox: SandboxUnderTest) -> None:
    body = sandbox.execute("raise ValueError('boom')\n").json()
    assert body["tool_status"] == "error", body
    assert body["result"]["exit_code"] == 1
    assert "ValueError: boom" in body["result"]["stderr"]


def test_death_by_signal_is_reported(sandbox: SandboxUnderTest) -> None:
    body = sandbox.execute("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n").json()
    assert body["tool_status"] == "killed", body
    assert body["result"]["exit_code"] is None
    assert body["result"]["signal"] == signal.SIGTERM


def test_a_short_sleep_is_not_a_timeout(sandbox: SandboxUnderTest) -> None:
    body = sandbox.execute("import time\ntime.sleep(0.3)\nprint('done')\n").json()
    assert body["tool_status"] == "ok", body
    assert body["result"]["duration_ms"] >= 300
    assert body["result"]["limit_hit"] is None


def test_binary_and_invalid_utf8_output_is_reported(sandbox: SandboxUnderTest) -> None:
    program = "import sys\nsys.stdout.buffer.write(b'ok\\xff\\xfe\\x00\\xc3(end')\n"
    response = sandbox.execute(program)
    assert response.status_code == 200, response.text
    stdout = response.json()["result"]["stdout"]
    assert stdout.startswith("ok") and stdout.endswith("end"), stdout


BROAD_STDLIB = r"""
import base64, bisect, bz2, csv, dataclasses, email.message, enum, fnmatch, fractions, glob
import heapq, html, io, lzma, pathlib, random, shutil, sqlite3, string, struct, tempfile
import textwrap, unicodedata, uuid, xml.etree.ElementTree as ET, zlib

packed = zlib.compress(b"pagi" * 100)
assert zlib.decompress(packed) == b"pagi" * 100
assert bz2.decompress(bz2.compress(b"x" * 50)) == b"x" * 50
assert lzma.decompress(lzma.compress(b"y" * 50)) == b"y" * 50
db = sqlite3.connect(":memory:")
db.execute("create table t (n integer)")
db.executemany("insert into t values (?)", [(i,) for i in range(10)])
total = db.execute("select sum(n) from t").fetchone()[0]
rows = list(csv.reader(io.StringIO("a,b\n1,2\n")))
root = ET.fromstring("<r><c>1</c><c>2</c></r>")
print(total, rows, len(root), fractions.Fraction(1, 3) + fractions.Fraction(1, 6),
      base64.b64encode(b"ok").decode(), unicodedata.name("é"), uuid.uuid4().version)
"""


def test_a_broad_slice_of_the_standard_library(sandbox: SandboxUnderTest) -> None:
    body = sandbox.execute(BROAD_STDLIB).json()
    assert body["tool_status"] == "ok", body
    assert body["result"]["stdout"] == (
        "45 [['a', 'b'], ['1', '2']] 2 1/2 b2s= LATIN SMALL LETTER E WITH ACUTE 4\n"
    )
