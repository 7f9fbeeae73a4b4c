"""Arbitrary Python source through ``execute_tool``: every run happens, ends in time, well-formed.

Programs are random text (mostly not Python at all) and small programs
assembled from hostile statements: infinite loops, fork bombs, huge or
binary output, signals, recursion, detached children, closed stdio. Each
must come back within the tool's wall limit plus a small margin as a 200
with a complete result that shows the code ran (see
:mod:`tests.fuzz.tool_runs`), and every test must leave nothing behind,
whatever runs before or after it.

The sandbox here runs the default policy with the python tool's wall and
cpu limits lowered to 1 s, so that the programs that never end cost CI
one second each, not five, plus a twin of that tool on the warm path.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pagi.stack import Stack
from testing.live import service_pid, start_live_stack
from testing.load_driver import ProcessSnapshot, fds_of_new_jails, jails_built_ahead, settle
from testing.stack import REPO
from tests.fuzz.tool_runs import (
    check_run,
    compile_verdict,
    leftovers,
    marked_processes,
    survivors,
    with_prelude,
)

pytestmark = pytest.mark.slow

WALL_SECONDS = 1
MARGIN_SECONDS = 2.0
"""Spawning the jail, killing the tree and answering, on a busy 2-core machine."""
ANSWER_WITHIN = WALL_SECONDS + MARGIN_SECONDS
SURVIVOR_GRACE_SECONDS = 2.0
"""How long after its answer a run's processes may take to disappear."""
SETTLE_SECONDS = 10.0


WARM_TOOL = f"""
[tools.python_warm]
description = "The python tool on the warm path (forked from a pre-started interpreter)."
argv = ["{{python}}", "-I", "-S", "main.py"]
code = "file"
code_file = "main.py"
max_code_bytes = "64 KiB"
executor = "warm"

[tools.python_warm.limits]
wall_seconds = {WALL_SECONDS}
cpu_seconds = {WALL_SECONDS}
"""
TOOLS = ("python", "python_warm")
"""The same code goes through the cold path and the warm path."""


def short_wall_policy() -> str:
    """The default policy, python at a one-second wall and cpu limit, plus a warm twin."""
    text = (REPO / "policies" / "sandbox.toml").read_text()
    limits = re.search(r"\[tools\.python\.limits\]\n(?:[^\[\n].*\n|\n)*", text)
    assert limits, "the default policy has no [tools.python.limits] table"
    table = f"[tools.python.limits]\nwall_seconds = {WALL_SECONDS}\ncpu_seconds = {WALL_SECONDS}\n"
    return text[: limits.start()] + table + WARM_TOOL + "\n" + text[limits.end() :]


@pytest.fixture(scope="module")
def sandbox_stack(tmp_path_factory: pytest.TempPathFactory, keys_dir: Path) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("code-fuzz")
    policy = state / "policy.toml"
    policy.write_text(short_wall_policy())
    stack = start_live_stack(
        state / "state", keys_dir, services=["sandbox"], PAGI_SANDBOX_POLICY=str(policy)
    )
    yield stack
    stack.stop()


def work_root_of(stack: Stack) -> Path:
    return Path(stack.env["PAGI_STATE_DIR"]) / "sandbox"


@pytest.fixture(scope="module")
def client(sandbox_stack: Stack, token_for) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=sandbox_stack.settings.url_of("sandbox"),
        headers={"Authorization": f"Bearer {token_for('sandbox', ttl=3600)}"},
        timeout=WALL_SECONDS + MARGIN_SECONDS + 10,
        trust_env=False,
    ) as opened:
        yield opened


@pytest.fixture(scope="module")
def warmed(client: httpx.Client) -> None:
    """One run on each tool first, so that state made on first use is not counted as a leak."""
    for tool in TOOLS:
        code, proof = with_prelude("pass")
        check_run(client, code, proof, tool, ANSWER_WITHIN)


@pytest.fixture(autouse=True)
def leaves_nothing_behind(sandbox_stack: Stack, client: httpx.Client, warmed) -> Iterator[None]:
    """Around every test, in any order or selection: the sandbox ends as it started."""
    pid = service_pid(sandbox_stack, "sandbox")
    work_root = work_root_of(sandbox_stack)
    base_url = sandbox_stack.settings.url_of("sandbox")
    ahead = jails_built_ahead(base_url)
    rest = ProcessSnapshot.take(pid, work_root)
    yield
    allowed_fds = fds_of_new_jails(base_url, ahead)
    after = settle(pid, work_root, rest, SETTLE_SECONDS, allowed_fds)
    problems = leftovers(rest, after, allowed_fds(), survivors(MARKER, SURVIVOR_GRACE_SECONDS))
    assert not problems, f"at rest: {rest.describe()}\nafter: {after.describe()}\n" + "\n".join(
        problems
    )
    # And it still runs code.
    code, proof = with_prelude("print(7)")
    body = check_run(client, code, proof, "python", ANSWER_WITHIN)
    assert body["result"]["stdout"].endswith("\n7\n"), body


MARKER = f"pagi-orphan-probe-{uuid.uuid4().hex[:12]}"
"""Put on the command line of every process a program tries to leave behind."""

IGNORES_SIGTERM = (
    "import os, sys\nos.execv(sys.executable, [sys.executable, '-c', 'import signal, time;"
    " signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(30)', '{marker}'])"
)

STATEMENTS = [
    "print({text!r})",
    "import sys; sys.stdout.buffer.write({data!r})",
    "import sys; sys.stderr.write({text!r} * 1000)",
    "raise ValueError({text!r})",
    "import sys; sys.exit({number})",
    "while True: pass",
    "x = 'a' * (10 ** 10)",
    "import os; os.kill(os.getpid(), 9)",
    "def f(): return f()\nf()",
    "import sys; sys.setrecursionlimit(10**6)\ndef f(): return f()\nf()",
    "print('x' * (10 ** 7))",
    "import time; time.sleep({seconds})",
    "import os\nfor _ in range(10000):\n    try: os.fork()\n    except OSError: pass",
    # Processes meant to outlive their run; the marker makes survivors findable.
    "import os, sys\nif os.fork() == 0:\n    os.setsid()\n    os.execv(sys.executable,"
    " [sys.executable, '-c', 'import time; time.sleep(30)', '{marker}'])",
    "import os, sys\nif os.fork() == 0:\n    if os.fork() == 0:\n        os.execv(sys.executable,"
    " [sys.executable, '-c', 'import time; time.sleep(30)', '{marker}'])\n    os._exit(0)",
    IGNORES_SIGTERM,
    "import socket; socket.create_connection(('127.0.0.1', 80), timeout=1)",
    "open('/etc/shadow').read()",
    "import os; os.close(1); os.close(2); print('gone')",
    "import os; os.write(1, b'\\xff\\xfe\\x00' * 1000)",
    "print('\\udcff\\ud800')",
    "print('\\x00' * 1000)",
    "import threading\nfor _ in range(1000): threading.Thread(target=lambda: None).start()",
    "open('big', 'wb').write(b'0' * (10 ** 9))",
    "import ctypes; ctypes.string_at(0)",
    "import os; os.execv('/bin/sh', ['sh', '-c', 'exec yes {marker}'])",
    "import sys; sys.stdin.read()",
    "exec('1' * 100000)",
    "eval('(' * 1000 + ')' * 1000)",
]

PROGRAMS = st.lists(
    st.builds(
        lambda template, text, data, number, seconds: template.format(
            text=text, data=data, number=number, seconds=seconds, marker=MARKER
        ),
        st.sampled_from(STATEMENTS),
        st.text(max_size=40),
        st.binary(max_size=40),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.sampled_from([0, 0.1, 0.5, 3]),
    ),
    min_size=1,
    max_size=3,
).map("\n".join)


def run_program(client: httpx.Client, program: str, tool: str) -> None:
    """Run a generated program; it must start, end in time, answer whole, leave no process."""
    code, proof = with_prelude(program)
    check_run(client, code, proof, tool, ANSWER_WITHIN)
    stray = survivors(MARKER, SURVIVOR_GRACE_SECONDS)
    assert not stray, f"processes outlived their run of {program[:300]!r}:\n" + "\n".join(stray)


# leaves_nothing_behind is function-scoped on purpose: it judges the whole test,
# while each example checks its own run and survivors.
WHOLE_TEST_FIXTURE = [HealthCheck.function_scoped_fixture]


@pytest.mark.parametrize("tool", TOOLS)
@settings(max_examples=25, deadline=None, suppress_health_check=WHOLE_TEST_FIXTURE)
@given(code=PROGRAMS)
def test_generated_programs_end_in_time(client, tool: str, code: str):
    run_program(client, code, tool)


@pytest.mark.parametrize("tool", TOOLS)
@settings(max_examples=20, deadline=None, suppress_health_check=WHOLE_TEST_FIXTURE)
@given(code=st.text(max_size=500))
def test_arbitrary_text_as_code(client, tool: str, code: str):
    check_run(client, code, compile_verdict(code), tool, ANSWER_WITHIN)


@pytest.mark.parametrize("tool", TOOLS)
def test_every_hostile_statement_alone(client, tool: str):
    """Each statement once, deterministically, whatever hypothesis happened to pick."""
    for template in STATEMENTS:
        code = template.format(text="x", data=b"x", number=3, seconds=0.1, marker=MARKER)
        run_program(client, code, tool)


def test_marked_processes_are_visible_while_they_run(client):
    """Guards the survivor check: a marked process in a jail is seen from the host while it runs."""
    code, proof = with_prelude(IGNORES_SIGTERM.format(marker=MARKER))
    seen: list[str] = []
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(check_run, client, code, proof, "python", ANSWER_WITHIN)
        deadline = time.monotonic() + WALL_SECONDS
        while not seen and time.monotonic() < deadline:
            seen = marked_processes(MARKER)
            time.sleep(0.05)
        running.result()
    assert seen, "the marked process was never seen: the survivor check would prove nothing"
