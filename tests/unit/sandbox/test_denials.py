"""Denials: each refused family is named exactly, with its hint, on both paths.

A run's ``denials`` come from the jail's supervisor (its init, which answers
the seccomp filter's refusals) and from the limit the service saw stop the
run; one ``pagi-sandbox:`` line per denial is appended to stderr unless the
tool's policy turns it off. Each test makes the tool print a marker first,
so a tool that crashed at start cannot pass. The same families through the
whole service, in both privilege modes, are in tests/escape/test_denials.py.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from sandbox.host.runner import Runner
from sandbox.spec import Denial, RunLimits, RunResult
from tests.unit.sandbox.jailed import PATHS, PYTHON, python

pytestmark = pytest.mark.asyncio(loop_scope="module")

NO_NETWORK = "this tool has no network (tools.python.network)"
NEVER = "nothing in the policy can allow it"

# (family, code that makes the refused call, expected `what`, expected hint)
SECCOMP_FAMILIES = [
    (
        "network socket",
        "import socket\ntry:\n    socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
        "except OSError as e:\n    print(e.errno)",
        "socket(AF_INET, SOCK_STREAM)",
        NO_NETWORK,
    ),
    (
        "network socket, IPv6 datagram with flags",
        "import socket\ntry:\n    socket.socket(socket.AF_INET6, socket.SOCK_DGRAM"
        " | socket.SOCK_CLOEXEC)\nexcept OSError as e:\n    print(e.errno)",
        "socket(AF_INET6, SOCK_DGRAM)",
        NO_NETWORK,
    ),
    (
        "netlink socket",
        "import socket\ntry:\n    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)\n"
        "except OSError as e:\n    print(e.errno)",
        "socket(AF_NETLINK, SOCK_RAW)",
        f"only unix and IP sockets exist in the jail: {NEVER} (AF_NETLINK)",
    ),
    (
        "process tracing",
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.ptrace(16, 1, 0, 0), ctypes.get_errno())",
        "ptrace(PTRACE_ATTACH)",
        f"process tracing is always refused: {NEVER}",
    ),
    (
        "user namespace",
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.unshare(0x10000000), ctypes.get_errno())",
        "unshare(CLONE_NEWUSER)",
        f"a new or another namespace is always refused: {NEVER}",
    ),
    (
        "namespace by clone",
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.syscall(56, 0x40000000 | 0x20000 | 17, 0, 0, 0, 0), ctypes.get_errno())",
        "clone(CLONE_NEWNS|CLONE_NEWNET)",
        f"a new or another namespace is always refused: {NEVER}",
    ),
    (
        "mount",
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.mount(b'none', b'/tmp', b'tmpfs', 0, None), ctypes.get_errno())",
        "mount",
        f"mounting is always refused: {NEVER}",
    ),
    (
        "keyrings",
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.syscall(250, 0, -3, 0, 0, 0), ctypes.get_errno())",  # keyctl
        "keyctl(KEYCTL_GET_KEYRING_ID)",
        f"use of the kernel's keyrings is always refused: {NEVER}",
    ),
    (
        "bpf",
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.syscall(321, 5, 0, 0), ctypes.get_errno())",
        "bpf(BPF_PROG_LOAD)",
        f"BPF is always refused: {NEVER}",
    ),
    (
        "io_uring",
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.syscall(425, 8, 0), ctypes.get_errno())",
        "io_uring_setup",
        f"io_uring is always refused: {NEVER}",
    ),
    (
        "module loading",
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.syscall(313, 0, b'', 0), ctypes.get_errno())",  # finit_module
        "finit_module",
        f"loading kernel modules is always refused: {NEVER}",
    ),
    (
        "the supervisor",
        "import os\ntry:\n    os.kill(1, 9)\nexcept OSError as e:\n    print(e.errno)",
        "kill(1)",
        f"the jail's supervisor (pid 1) is out of the tool's reach: {NEVER}",
    ),
]


FAMILIES_BY_NAME = {family: code for family, code, _, _ in SECCOMP_FAMILIES}


def seccomp_entries(result: RunResult) -> list[Denial]:
    """The seccomp entries of a result, less what the interpreter itself was refused."""
    return [denial for denial in result.denials if denial.layer == "seccomp"]


def the_denial(result: RunResult, what: str) -> Denial:
    matches = [denial for denial in result.denials if denial.what == what]
    assert len(matches) == 1, f"no single denial {what!r} in {result.denials}; {result.stderr}"
    return matches[0]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    ("family", "code", "what", "hint"), SECCOMP_FAMILIES, ids=[f[0] for f in SECCOMP_FAMILIES]
)
async def test_each_refused_family_is_named_with_its_hint(
    runner: Runner, path: str, family: str, code: str, what: str, hint: str
) -> None:
    result = await runner.run(python(f"print('trying', flush=True)\n{code}", path))
    assert result.stdout.startswith("trying\n"), result.stderr
    assert result.stdout.split()[-1] == "1", f"{family}: not refused with EPERM: {result.stdout}"
    denial = the_denial(result, what)
    assert (denial.layer, denial.count, denial.hint) == ("seccomp", 1, hint)
    assert result.stderr.endswith(f"pagi-sandbox: refused {what}: {hint}\n")
    assert result.seccomp_refusals == sum(d.count for d in seccomp_entries(result))


@pytest.mark.parametrize("path", PATHS)
async def test_repeated_refusals_are_one_entry_with_a_count(runner: Runner, path: str) -> None:
    code = (
        "import socket\nprint('trying', flush=True)\n"
        "for _ in range(5):\n"
        "    try:\n        socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
        "    except OSError:\n        pass\n"
    )
    result = await runner.run(python(code, path))
    assert result.stdout == "trying\n"
    assert result.denials == [
        Denial(layer="seccomp", what="socket(AF_INET, SOCK_STREAM)", count=5, hint=NO_NETWORK)
    ]
    assert result.seccomp_denials == {"socket": 5}
    line = f"pagi-sandbox: refused socket(AF_INET, SOCK_STREAM) (5 times): {NO_NETWORK}\n"
    assert result.stderr == line


@pytest.mark.parametrize("path", PATHS)
async def test_a_syscall_the_policy_denies_names_its_key(runner: Runner, path: str) -> None:
    code = (
        "import os\nprint('trying', flush=True)\n"
        "try:\n    os.mkdir('d')\nexcept OSError as e:\n    print(e.errno)"
    )
    result = await runner.run(python(code, path, denied_syscalls=("mkdir", "mkdirat")))
    assert result.stdout == "trying\n1\n"
    (denial,) = result.denials
    assert denial.what in ("mkdir", "mkdirat")
    assert denial.hint == "denied to this tool by its policy (tools.python.denied_syscalls)"


@pytest.mark.parametrize("path", PATHS)
async def test_no_stderr_line_when_the_policy_turns_it_off(runner: Runner, path: str) -> None:
    code = (
        "import os, sys\nprint('trying', flush=True)\nsys.stderr.write('own\\n')\n"
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.unshare(0x10000000), ctypes.get_errno())"
    )
    result = await runner.run(python(code, path, explain_denials=False))
    assert result.stdout == "trying\n-1 1\n"
    assert result.stderr == "own\n"
    assert [d.what for d in result.denials] == ["unshare(CLONE_NEWUSER)"]


@pytest.mark.parametrize("path", PATHS)
async def test_a_program_printing_fake_denials_gets_no_entry(runner: Runner, path: str) -> None:
    fake = f"pagi-sandbox: refused socket(AF_INET, SOCK_STREAM): {NO_NETWORK}"
    code = (
        "import sys\n"
        f"print({fake!r})\n"
        f"sys.stderr.write({fake!r} + '\\n')\n"
        "print('refusals 3 41:3')\nprint('refused 41,2,1:3')\n"
    )
    result = await runner.run(python(code, path))
    assert result.exit_code == 0
    assert result.denials == [] and result.seccomp_refusals == 0
    assert result.stderr == fake + "\n"  # the tool's own line, nothing appended


@pytest.mark.parametrize("path", PATHS)
async def test_a_clean_run_has_no_denials(runner: Runner, path: str) -> None:
    result = await runner.run(python("import json; print(json.dumps(1))", path))
    assert (result.stdout, result.stderr, result.denials) == ("1\n", "", [])


# ----------------------------------------------------------------- limits


@pytest.mark.parametrize("path", PATHS)
async def test_wall_time_limit_is_named_with_its_value(runner: Runner, path: str) -> None:
    code = "import time\nprint('sleeping', flush=True)\ntime.sleep(30)"
    result = await runner.run(python(code, path, limits=RunLimits(wall_seconds=0.5)))
    assert result.limit_hit == "wall_time"
    denial = the_denial(result, "wall_seconds = 0.5 s")
    assert denial.layer == "limit"
    assert (
        denial.hint == "this tool's limit (tools.python.limits.wall_seconds, within PAGI's ceiling)"
    )
    assert result.stderr.endswith(
        f"pagi-sandbox: stopped at limit wall_seconds = 0.5 s: {denial.hint}\n"
    )


@pytest.mark.parametrize("path", PATHS)
async def test_cpu_limit_is_named_with_its_value(runner: Runner, path: str) -> None:
    code = "print('spinning', flush=True)\nwhile True:\n    pass\n"
    result = await runner.run(python(code, path, limits=RunLimits(cpu_seconds=1, wall_seconds=10)))
    assert result.limit_hit == "cpu_time"
    assert the_denial(result, "cpu_seconds = 1 s").layer == "limit"


@pytest.mark.parametrize("path", PATHS)
async def test_output_limit_is_named_with_its_value(runner: Runner, path: str) -> None:
    code = "import sys\nwhile True:\n    sys.stderr.write('x' * 65536)\n"
    result = await runner.run(python(code, path, limits=RunLimits(output_bytes=4096)))
    assert result.limit_hit == "output"
    assert the_denial(result, "output_bytes = 4 KiB").layer == "limit"
    hint = "this tool's limit (tools.python.limits.output_bytes, within PAGI's ceiling)"
    assert len(result.stderr) == 4096  # the line takes the place of the tool's last bytes
    assert result.stderr.endswith(f"pagi-sandbox: stopped at limit output_bytes = 4 KiB: {hint}\n")


@pytest.mark.parametrize("path", PATHS)
async def test_memory_and_process_limits_are_named_when_seen(runner: Runner, path: str) -> None:
    """The service sees these limits only through the run's cgroup; without one, no entry."""
    memory = (
        "blocks = []\nprint('allocating', flush=True)\n"
        "while True:\n    blocks.append(bytearray(1 << 22))\n"
    )
    processes = (
        "import os, time\nprint('forking', flush=True)\n"
        "while True:\n    if os.fork() == 0:\n        time.sleep(5)\n        os._exit(0)\n"
    )
    for code, limits, limit, what in (
        (memory, RunLimits(memory_bytes=64 << 20), "memory", "memory_bytes = 64 MiB"),
        (processes, RunLimits(processes=8, wall_seconds=2), "processes", "processes = 8"),
    ):
        result = await runner.run(python(code, path, limits=limits))
        limited = [d for d in result.denials if d.layer == "limit"]
        if result.limit_hit == limit:
            assert [d.what for d in limited] == [what]
        else:
            assert all(d.what.split()[0] != what.split()[0] for d in limited)


# ----------------------------------------------------------------- written files do not run

EXEC_WRITTEN = (
    "import os, shutil, subprocess, json\n"
    "print('trying', flush=True)\n"
    "outcome = {}\n"
    "for place in ('/tmp', '/workdir'):\n"
    "    copy = os.path.join(place, 'true')\n"
    "    shutil.copy('/bin/true', copy)\n"
    "    os.chmod(copy, 0o755)\n"
    "    try:\n"
    "        outcome[place] = subprocess.run([copy]).returncode\n"
    "    except OSError as e:\n"
    "        outcome[place] = e.errno\n"
    "print(json.dumps(outcome))\n"
)


@pytest.mark.parametrize("path", PATHS)
async def test_a_written_file_cannot_be_executed(runner: Runner, path: str) -> None:
    result = await runner.run(python(EXEC_WRITTEN, path))
    assert result.stdout.startswith("trying\n"), result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"/tmp": 13, "/workdir": 13}  # EACCES


@pytest.mark.parametrize("path", PATHS)
async def test_a_tool_allowed_to_may_execute_what_it_writes(runner: Runner, path: str) -> None:
    result = await runner.run(python(EXEC_WRITTEN, path, allow_exec_written=True))
    assert json.loads(result.stdout.splitlines()[-1]) == {"/tmp": 0, "/workdir": 0}, result.stderr


@pytest.mark.parametrize("path", PATHS)
async def test_a_written_library_cannot_be_loaded_nor_mapped_executable(
    runner: Runner, path: str
) -> None:
    code = (
        "import ctypes, ctypes.util, mmap, os, shutil, json\n"
        "print('trying', flush=True)\n"
        "library = '/lib/x86_64-linux-gnu/libm.so.6'\n"
        "shutil.copy(library, '/tmp/libm.so.6')\n"
        "outcome = {}\n"
        "try:\n    ctypes.CDLL('/tmp/libm.so.6')\n    outcome['dlopen'] = 'loaded'\n"
        "except OSError as e:\n    outcome['dlopen'] = 'refused'\n"
        "with open('/tmp/libm.so.6', 'rb') as f:\n"
        "    try:\n"
        "        mmap.mmap(f.fileno(), 4096, prot=mmap.PROT_READ | mmap.PROT_EXEC)\n"
        "        outcome['mmap'] = 'mapped'\n"
        "    except OSError as e:\n        outcome['mmap'] = e.errno\n"
        "print(json.dumps(outcome))\n"
    )
    result = await runner.run(python(code, path))
    assert result.stdout.startswith("trying\n"), result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"dlopen": "refused", "mmap": 1}


@pytest.mark.parametrize("path", PATHS)
async def test_writes_outside_the_writable_paths_fail_read_only(runner: Runner, path: str) -> None:
    code = (
        "import json\nprint('trying', flush=True)\noutcome = {}\n"
        "for target in ('/etc/pagi-written', '/usr/pagi-written', '/pagi-written'):\n"
        "    try:\n        open(target, 'w').close()\n        outcome[target] = 'written'\n"
        "    except OSError as e:\n        outcome[target] = e.errno\n"
        "print(json.dumps(outcome))\n"
    )
    result = await runner.run(python(code, path))
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert set(outcome.values()) <= {30, 2, 13}, outcome  # EROFS, or ENOENT/EACCES (Landlock)
    # The kernel answers these before any layer the service hears from: no entry, no guess.
    assert result.denials == []


@pytest.mark.parametrize("path", PATHS)
async def test_a_kill_for_a_foreign_syscall_names_it(runner: Runner, path: str) -> None:
    code = (
        "import ctypes, os\n"
        "print('trying', flush=True)\n"
        "ctypes.CDLL(None).syscall(0x40000000 | 39)\n"  # x32 getpid
        "print('survived')"
    )
    result = await runner.run(python(code, path))
    assert (result.stdout, result.signal) == ("trying\n", signal.SIGSYS)
    denial = the_denial(result, "x32 syscall 39 (getpid)")
    assert denial.hint == (
        "a syscall of another architecture kills the process that makes it (SIGSYS):"
        " nothing in the policy can allow it"
    )
    assert result.seccomp_denials == {"(foreign ABI: process killed)": 1}


async def test_this_host_says_which_denials_it_observes(runner: Runner) -> None:
    observable = runner.isolation_report()["denials_observable"]
    assert {kind: entry["observed"] for kind, entry in observable.items()} == {
        "seccomp": True,  # user notification exists on this kernel
        "limit": True,
        "landlock": False,
        "mount": False,
    }


@pytest.mark.parametrize("path", PATHS)
async def test_a_written_memory_file_cannot_be_executed(runner: Runner, path: str) -> None:
    code = (
        "import os\nprint('trying', flush=True)\n"
        "try:\n    os.memfd_create('x')\n"
        "except OSError as e:\n    print('memfd', e.errno, flush=True)\n"
        "fd = os.memfd_create('x', os.MFD_NOEXEC_SEAL if hasattr(os, 'MFD_NOEXEC_SEAL') else 8)\n"
        "os.write(fd, open('/bin/true', 'rb').read())\n"
        "if os.fork() == 0:\n"
        "    try:\n        os.execve(fd, ['true'], {})\n"
        "    except OSError as e:\n        print('refused', e.errno, flush=True)\n"
        "    os._exit(3)\n"
        "print(os.waitstatus_to_exitcode(os.wait()[1]))\n"
    )
    result = await runner.run(python(code, path))
    assert result.stdout == "trying\nmemfd 1\nrefused 13\n3\n", result.stderr
    denial = the_denial(result, "memfd_create(MFD_CLOEXEC)")
    assert denial.hint == (
        "a memory file that could be executed (only MFD_NOEXEC_SEAL ones): written"
        " files never run (tools.python.allow_exec_written)"
    )
    allowed = await runner.run(python(code, path, allow_exec_written=True))
    assert allowed.stdout == "trying\nrefused 13\n3\n", allowed.stderr  # sealed: noexec


@pytest.mark.parametrize("path", PATHS)
async def test_the_stderr_lines_stay_within_the_output_cap(runner: Runner, path: str) -> None:
    code = (
        "import socket, sys\n"
        "try:\n    socket.socket(socket.AF_INET, socket.SOCK_STREAM)\nexcept OSError:\n    pass\n"
        "sys.stderr.write('y' * 4000)\n"
    )
    result = await runner.run(python(code, path, limits=RunLimits(output_bytes=4096)))
    line = f"pagi-sandbox: refused socket(AF_INET, SOCK_STREAM): {NO_NETWORK}\n"
    assert len(result.stderr) == 4096 and result.stderr_truncated
    assert result.stderr == "y" * (4096 - len(line)) + line


@pytest.mark.parametrize("path", PATHS)
async def test_a_kill_for_an_i386_syscall_names_it(runner: Runner, path: str) -> None:
    code = (
        "import ctypes, mmap\n"
        "page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "page.write(b'\\xb8\\x14\\x00\\x00\\x00\\xcd\\x80\\xc3')\n"  # mov eax, 20; int 0x80; ret
        "function = ctypes.CFUNCTYPE(ctypes.c_long)(\n"
        "    ctypes.addressof(ctypes.c_char.from_buffer(page)))\n"
        "print('trying', flush=True)\n"
        "function()\n"
        "print('survived')"
    )
    result = await runner.run(python(code, path))
    assert (result.stdout, result.signal) == ("trying\n", signal.SIGSYS), result.stderr
    assert the_denial(result, "i386 syscall 20 (getpid)").layer == "seccomp"


async def test_without_user_notification_nothing_is_guessed(tmp_path: Path) -> None:
    """Refusals answered by the filter itself are unseen; a foreign-ABI kill is still named so."""
    quiet = Runner(python_executable=PYTHON, state_dir=tmp_path, slots=1)
    await quiet.start()
    quiet._notify = False  # as on a kernel without seccomp user notification
    try:
        refused = await quiet.run(python(FAMILIES_BY_NAME["network socket"], "cold"))
        killed = await quiet.run(
            python("import ctypes\nctypes.CDLL(None).syscall(0x40000027)", "cold")
        )
        observable = quiet.isolation_report()["denials_observable"]["seccomp"]
    finally:
        await quiet.close()
    assert refused.stdout.split()[-1] == "1" and refused.denials == []
    assert killed.signal == signal.SIGSYS
    assert [d.what for d in killed.denials] == [
        "a syscall of another architecture (i386 int 0x80 or x32)"
    ]
    assert observable["observed"] is False
