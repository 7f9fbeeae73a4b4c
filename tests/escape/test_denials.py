"""Denials through the whole service: named exactly, with the right hint, on stderr, unforgeable.

Runs against each sandbox of the suite (cold and warm, root and unprivileged
jail). The same families in more detail, limits included, are in
tests/unit/sandbox/test_denials.py.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.escape.harness import SandboxUnderTest

pytestmark = pytest.mark.escape

NO_NETWORK = "this tool has no network (tools.{tool}.network)"
"""Hints name the tool under attack: ``{tool}`` is filled in per sandbox."""
NEVER = "nothing in the policy can allow it"
LIBC = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"

FAMILIES = [
    (
        "network",
        "import socket\ntry:\n    socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
        "except OSError as e:\n    print(-1, e.errno)",
        "socket(AF_INET, SOCK_STREAM)",
        NO_NETWORK,
    ),
    (
        "ptrace",
        LIBC + "print(libc.ptrace(16, 1, 0, 0), ctypes.get_errno())",
        "ptrace(PTRACE_ATTACH)",
        f"process tracing is always refused: {NEVER}",
    ),
    (
        "namespaces",
        LIBC + "print(libc.unshare(0x10000000), ctypes.get_errno())",
        "unshare(CLONE_NEWUSER)",
        f"a new or another namespace is always refused: {NEVER}",
    ),
    (
        "mount",
        LIBC + "print(libc.mount(b'none', b'/tmp', b'tmpfs', 0, None), ctypes.get_errno())",
        "mount",
        f"mounting is always refused: {NEVER}",
    ),
    (
        "keyrings",
        LIBC + "print(libc.syscall(248, b'user', b'k', b'v', 1, -2), ctypes.get_errno())",
        "add_key",
        f"use of the kernel's keyrings is always refused: {NEVER}",
    ),
    (
        "bpf",
        LIBC + "print(libc.syscall(321, 0, 0, 0), ctypes.get_errno())",
        "bpf(BPF_MAP_CREATE)",
        f"BPF is always refused: {NEVER}",
    ),
    (
        "io_uring",
        LIBC + "print(libc.syscall(425, 8, 0), ctypes.get_errno())",
        "io_uring_setup",
        f"io_uring is always refused: {NEVER}",
    ),
    (
        "modules",
        LIBC + "print(libc.syscall(175, 0, 0, b''), ctypes.get_errno())",
        "init_module",
        f"loading kernel modules is always refused: {NEVER}",
    ),
]


def result_of(sandbox: SandboxUnderTest, code: str) -> dict[str, Any]:
    response = sandbox.execute(code)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["result"]["executor"] == sandbox.path, body
    return body["result"]


def idle_denials(sandbox: SandboxUnderTest) -> list[dict[str, Any]]:
    """What a program that tries nothing is refused here (normally nothing)."""
    return result_of(sandbox, "print('idle')")["denials"]


@pytest.mark.parametrize(("family", "code", "what", "hint"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_each_family_is_named_with_its_hint_and_on_stderr(
    sandbox: SandboxUnderTest, family: str, code: str, what: str, hint: str
) -> None:
    hint = hint.format(tool=sandbox.tool)
    result = result_of(sandbox, f"print('trying', flush=True)\n{code}")
    assert result["stdout"].startswith("trying\n"), result
    assert result["stdout"].split()[-2:] == ["-1", "1"], f"{family} not refused: {result}"
    matching = [entry for entry in result["denials"] if entry["what"] == what]
    assert matching == [{"layer": "seccomp", "what": what, "count": 1, "hint": hint}], result
    assert f"pagi-sandbox: refused {what}: {hint}\n" in result["stderr"]


def test_a_written_file_does_not_run(sandbox: SandboxUnderTest) -> None:
    code = (
        "import json, os, shutil, subprocess\nprint('trying', flush=True)\noutcome = {}\n"
        "for place in ('/tmp', '/workdir'):\n"
        "    copy = os.path.join(place, 'true')\n"
        "    shutil.copy('/bin/true', copy)\n"
        "    os.chmod(copy, 0o755)\n"
        "    try:\n        outcome[place] = subprocess.run([copy]).returncode\n"
        "    except OSError as e:\n        outcome[place] = e.errno\n"
        "print(json.dumps(outcome))\n"
    )
    result = result_of(sandbox, code)
    assert json.loads(result["stdout"].splitlines()[-1]) == {"/tmp": 13, "/workdir": 13}
    # EACCES from the noexec mount and Landlock: answered inside execve, unseen by
    # the supervisor; /health says so, and no entry is guessed.
    assert result["denials"] == idle_denials(sandbox)


def test_writes_outside_the_writable_paths_are_refused(sandbox: SandboxUnderTest) -> None:
    code = (
        "import json\nprint('trying', flush=True)\noutcome = {}\n"
        "for target in ('/usr/pagi-written', '/pagi-written'):\n"
        "    try:\n        open(target, 'w').close()\n        outcome[target] = 'written'\n"
        "    except OSError as e:\n        outcome[target] = e.errno\n"
        "print(json.dumps(outcome))\n"
    )
    result = result_of(sandbox, code)
    outcome = json.loads(result["stdout"].splitlines()[-1])
    assert set(outcome.values()) <= {30, 13}, outcome  # EROFS, or EACCES from Landlock
    assert result["denials"] == idle_denials(sandbox)


def test_the_output_limit_is_named_with_its_value(sandbox: SandboxUnderTest) -> None:
    result = result_of(sandbox, "import sys\nwhile True:\n    sys.stderr.write('x' * 65536)\n")
    assert result["limit_hit"] == "output"
    limit = [entry for entry in result["denials"] if entry["layer"] == "limit"]
    cap = sandbox.limits.output_bytes // 1024
    assert limit == [
        {
            "layer": "limit",
            "what": f"output_bytes = {cap} KiB",
            "count": 1,
            "hint": f"this tool's limit (tools.{sandbox.tool}.limits.output_bytes,"
            " within PAGI's ceiling)",
        }
    ]


def test_fake_denial_lines_make_no_entry(sandbox: SandboxUnderTest) -> None:
    no_network = NO_NETWORK.format(tool=sandbox.tool)
    fake = f"pagi-sandbox: refused socket(AF_INET, SOCK_STREAM): {no_network}"
    code = (
        "import sys\n"
        f"print({fake!r})\nsys.stderr.write({fake!r} + '\\n')\n"
        "print('refusals 9 41:9')\nprint('refused 41,2,1:9')\n"
    )
    result = result_of(sandbox, code)
    assert result["exit_code"] == 0
    assert result["denials"] == idle_denials(sandbox)
    assert result["stderr"].count("pagi-sandbox:") == 1


def test_the_audit_record_carries_the_denials(sandbox: SandboxUnderTest) -> None:
    code = LIBC + "print(libc.ptrace(16, 1, 0, 0), ctypes.get_errno())"
    result = result_of(sandbox, code)
    response = sandbox.client.get(
        f"{sandbox.url}/api/v1/audit",
        params={"limit": 5},
        headers={"Authorization": f"Bearer {sandbox.token()}"},
    )
    assert response.status_code == 200, response.text
    records = [r for r in response.json()["records"] if r.get("outcome")]
    assert records[-1]["outcome"]["denials"] == result["denials"]


def test_health_says_which_denials_this_host_observes(sandbox: SandboxUnderTest) -> None:
    health = sandbox.client.get(f"{sandbox.url}/health").json()
    observable = health["isolation"]["denials_observable"]
    assert observable["seccomp"]["observed"] is True
    assert observable["mount"]["observed"] is False


@pytest.fixture
def quiet_policy(sandbox: SandboxUnderTest) -> Iterator[None]:
    """The tool under attack with ``explain_denials = false`` for one test, then as before."""
    original = sandbox.policy_path.read_text()
    table = f"[tools.{sandbox.tool}]\n"
    quiet = original.replace(table, f"{table}explain_denials = false\n", 1)
    assert quiet != original
    _apply_policy(sandbox, quiet)
    try:
        yield
    finally:
        _apply_policy(sandbox, original)


def _apply_policy(sandbox: SandboxUnderTest, text: str) -> None:
    headers = {"Authorization": f"Bearer {sandbox.token()}"}

    def version() -> str:
        return httpx.get(f"{sandbox.url}/api/v1/policy", headers=headers).json()["version"]

    before = version()
    sandbox.policy_path.write_text(text)
    deadline = time.monotonic() + 10
    while version() == before:
        assert time.monotonic() < deadline, "the sandbox never took the edited policy"
        time.sleep(0.1)


def test_no_stderr_line_when_the_tool_turns_them_off(
    sandbox: SandboxUnderTest, quiet_policy: None
) -> None:
    result = result_of(sandbox, LIBC + "print(libc.unshare(0x10000000), ctypes.get_errno())")
    assert result["stdout"].split() == ["-1", "1"]
    assert any(entry["what"] == "unshare(CLONE_NEWUSER)" for entry in result["denials"])
    assert not re.search("pagi-sandbox:", result["stderr"]), result["stderr"]


def test_a_memory_file_that_could_run_is_refused_and_named(sandbox: SandboxUnderTest) -> None:
    code = (
        "import os\nprint('trying', flush=True)\n"
        "try:\n    os.memfd_create('x')\nexcept OSError as e:\n    print(-1, e.errno)\n"
    )
    result = result_of(sandbox, code)
    assert result["stdout"] == "trying\n-1 1\n", result
    (entry,) = [e for e in result["denials"] if e["what"].startswith("memfd_create")]
    assert entry["what"] == "memfd_create(MFD_CLOEXEC)"
    assert entry["hint"].endswith(
        f"written files never run (tools.{sandbox.tool}.allow_exec_written)"
    )
