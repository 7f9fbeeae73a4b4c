"""Each jail layer is active: shown by a tool that tries what the layer forbids.

Every test runs on both paths (cold launcher and warm zygote): the same
`contain()` must hold on each. A check only counts when the tool reached the
point of trying (it prints a marker first), so a tool that crashed at start
cannot pass.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.host.runner import Runner, RunnerUnavailable
from sandbox.jail import LAYERS
from sandbox.spec import RunLimits, RunSpec
from tests.unit.sandbox.jailed import PATHS, PYTHON, python

pytestmark = pytest.mark.asyncio(loop_scope="module")

REPO = Path(__file__).resolve().parents[3]


def facts(stdout: str) -> dict:
    lines = stdout.strip().splitlines()
    assert lines, "the tool printed nothing: it never reached the attack"
    return json.loads(lines[-1])


async def test_every_layer_is_active_here(runner: Runner) -> None:
    report = runner.isolation_report()
    inactive = {name: report[name] for name in LAYERS if not report[name]["active"]}
    assert inactive == {}
    assert report["landlock"]["abi"] >= 1
    assert report["seccomp"]["filter_size"] > 100
    assert runner.missing_layers(LAYERS) == []


async def test_unknown_or_missing_required_layer_refuses_to_run(runner: Runner) -> None:
    assert runner.missing_layers(["seccomp", "teleport"]) == ["teleport"]
    with pytest.raises(RunnerUnavailable) as refused:
        await runner.run(python("print('ran')", "cold", required_layers=frozenset({"teleport"})))
    assert "teleport" in str(refused.value)


@pytest.mark.parametrize("path", PATHS)
async def test_privileges_tool_is_not_root_and_has_no_capabilities(
    runner: Runner, path: str
) -> None:
    code = (
        "import os, json; status = dict(l.split(':\\t', 1) for l in "
        "open('/proc/self/status').read().splitlines() if ':\\t' in l)\n"
        "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'groups': os.getgroups(),"
        " 'map': open('/proc/self/uid_map').read().split(), 'cap': status['CapEff'].strip(),"
        " 'bnd': status['CapBnd'].strip(), 'nnp': status['NoNewPrivs'].strip()}))"
    )
    result = await runner.run(python(code, path, readable_paths=("/proc",)))
    seen = facts(result.stdout)
    assert result.path == path
    assert seen["uid"] == 65534 and seen["gid"] == 65534 and seen["groups"] == []
    assert seen["map"] == ["65534", "65534", "1"]  # not root outside either
    assert int(seen["cap"], 16) == 0 and int(seen["bnd"], 16) == 0
    assert seen["nnp"] == "1"  # no_new_privs


@pytest.mark.parametrize("path", PATHS)
async def test_pidns_tool_sees_only_its_own_tree(runner: Runner, path: str) -> None:
    code = (
        "import os, json; print(json.dumps({'pid': os.getpid(),"
        " 'pids': sorted(int(p) for p in os.listdir('/proc') if p.isdigit())}))"
    )
    result = await runner.run(python(code, path, readable_paths=("/proc",)))
    seen = facts(result.stdout)
    assert seen["pid"] == 2
    assert seen["pids"] == [1, 2]


@pytest.mark.parametrize("path", PATHS)
async def test_network_is_unreachable_and_inet_sockets_refused(runner: Runner, path: str) -> None:
    code = (
        "import socket, json\n"
        "print('trying', flush=True)\n"
        "out = {}\n"
        "try:\n"
        "    socket.create_connection(('127.0.0.1', 22), timeout=1)\n"
        "    out['tcp'] = 'connected'\n"
        "except OSError as e:\n"
        "    out['tcp'] = e.errno\n"
        "devices = open('/proc/self/net/dev').read().splitlines()[2:]\n"
        "out['devices'] = [d.split(':')[0].strip() for d in devices]\n"
        "print(json.dumps(out))"
    )
    result = await runner.run(python(code, path, readable_paths=("/proc",)))
    seen = facts(result.stdout)
    assert seen["tcp"] == 1  # EPERM from seccomp: socket(AF_INET) never even created
    assert seen["devices"] == ["lo"]  # netns: nothing but a loopback (down)
    assert result.seccomp_refusals >= 1


@pytest.mark.parametrize("path", PATHS)
async def test_landlock_denies_reads_outside_the_allowed_paths(runner: Runner, path: str) -> None:
    # /proc is mounted in the jail but not granted to Landlock in this run.
    code = (
        "import os, json\n"
        "out = {}\n"
        "for name, target in (('proc', '/proc/self/status'), ('root', '/')):\n"
        "    try:\n"
        "        os.listdir(target) if target == '/' else open(target).read()\n"
        "        out[name] = 'read'\n"
        "    except PermissionError:\n"
        "        out[name] = 'denied'\n"
        "open('mine.txt', 'w').write('ok')\n"
        "out['own'] = open('mine.txt').read()\n"
        "print(json.dumps(out))"
    )
    result = await runner.run(python(code, path))
    assert facts(result.stdout) == {"proc": "denied", "root": "denied", "own": "ok"}


@pytest.mark.parametrize("path", PATHS)
async def test_mountns_service_files_do_not_exist_in_the_jail(runner: Runner, path: str) -> None:
    home = [str(p) for p in Path("/root").iterdir() if p.name != ".pyenv"][:3]
    targets = [str(REPO / "pyproject.toml"), str(REPO), "/etc/shadow", sys.prefix, *home]
    code = f"import os, json\nprint(json.dumps({{t: os.path.exists(t) for t in {targets!r}}}))"
    result = await runner.run(python(code, path))
    assert facts(result.stdout) == {target: False for target in targets}


@pytest.mark.parametrize("path", PATHS)
async def test_seccomp_refuses_ptrace_and_counts_it(runner: Runner, path: str) -> None:
    code = (
        "import ctypes, json\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print('trying', flush=True)\n"
        "r = libc.ptrace(0, 0, 0, 0)\n"  # PTRACE_TRACEME
        "e1 = ctypes.get_errno()\n"
        "r2 = libc.syscall(165, b'none', b'/tmp', b'tmpfs', 0, 0)\n"  # mount
        "e2 = ctypes.get_errno()\n"
        "print(json.dumps({'ptrace': [r, e1], 'mount': [r2, e2]}))"
    )
    result = await runner.run(python(code, path))
    assert facts(result.stdout) == {"ptrace": [-1, 1], "mount": [-1, 1]}
    assert result.seccomp_refusals >= 2


@pytest.mark.parametrize("path", PATHS)
async def test_seccomp_refuses_namespace_clone_and_answers_clone3_enosys(
    runner: Runner, path: str
) -> None:
    code = (
        "import ctypes, json, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print('trying', flush=True)\n"
        "r = libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0)\n"  # clone(CLONE_NEWUSER|SIGCHLD)
        "e1 = ctypes.get_errno()\n"
        "r3 = libc.syscall(435, 0, 0)\n"  # clone3
        "e3 = ctypes.get_errno()\n"
        "pid = os.fork()\n"  # a plain fork still works
        "if pid == 0:\n"
        "    os._exit(7)\n"
        "print(json.dumps({'clone': [r, e1], 'clone3': [r3, e3],"
        " 'fork': os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])}))"
    )
    result = await runner.run(python(code, path))
    assert facts(result.stdout) == {"clone": [-1, 1], "clone3": [-1, 38], "fork": 7}


@pytest.mark.parametrize("path", PATHS)
async def test_seccomp_kills_x32_syscalls(runner: Runner, path: str) -> None:
    code = (
        "import ctypes\n"
        "print('trying', flush=True)\n"
        "ctypes.CDLL(None).syscall(0x40000000 | 39)\n"  # x32 getpid
        "print('survived')"
    )
    result = await runner.run(python(code, path))
    assert result.stdout == "trying\n"
    assert result.signal == signal.SIGSYS
    assert result.seccomp_refusals >= 1


@pytest.mark.parametrize("path", PATHS)
async def test_rlimits_and_cgroup_apply(runner: Runner, path: str) -> None:
    code = (
        "import resource, json\n"
        "print(json.dumps({'nproc': resource.getrlimit(resource.RLIMIT_NPROC),"
        " 'nofile': resource.getrlimit(resource.RLIMIT_NOFILE),"
        " 'core': resource.getrlimit(resource.RLIMIT_CORE),"
        " 'cgroup': open('/proc/self/cgroup').read()}))"
    )
    limits = RunLimits(processes=9, open_files=33)
    result = await runner.run(python(code, path, limits=limits, readable_paths=("/proc",)))
    seen = facts(result.stdout)
    assert seen["nproc"] == [9, 9] and seen["nofile"] == [33, 33] and seen["core"] == [0, 0]
    assert "pagi-sandbox" in seen["cgroup"]


@pytest.mark.parametrize("path", PATHS)
async def test_utsns_ipcns_hostname_and_namespaces_differ(runner: Runner, path: str) -> None:
    names = ("user", "pid", "net", "mnt", "ipc", "uts")
    code = (
        "import os, json\n"
        f"ns = {{n: os.readlink('/proc/self/ns/' + n) for n in {names!r}}}\n"
        "print(json.dumps({'host': os.uname().nodename, 'ns': ns}))"
    )
    result = await runner.run(python(code, path, readable_paths=("/proc",)))
    seen = facts(result.stdout)
    assert seen["host"] == "sandbox"
    for name in names:
        assert seen["ns"][name] != os.readlink(f"/proc/self/ns/{name}"), name


@pytest.mark.parametrize("path", PATHS)
async def test_hygiene_environment_and_fds(runner: Runner, path: str) -> None:
    code = (
        "import os, json\n"
        "print(json.dumps({'env': dict(os.environ), 'fds': sorted(os.listdir('/proc/self/fd'))}))"
    )
    result = await runner.run(python(code, path, env={"TOOL_MODE": "x"}, readable_paths=("/proc",)))
    seen = facts(result.stdout)
    assert seen["env"] == {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/workdir",
        "TOOL_MODE": "x",
    }
    assert seen["fds"] in (["0", "1", "2", "3"], ["0", "1", "2"])  # 3: listdir's own fd


LATIN1 = "en_US.ISO-8859-1"
"""A locale whose character set is not UTF-8, built for the tests (see :func:`locale_dir`)."""


STDIN_LINES = b"line one\r\nline two\rline three\n"


@pytest.fixture(scope="module")
def locale_dir() -> Iterator[str]:
    """A directory holding :data:`LATIN1`, for LOCPATH; outside /tmp, which a jail replaces."""
    directory = tempfile.mkdtemp(prefix="pagi-test-locales-", dir="/var/tmp")
    try:
        built = subprocess.run(
            ["localedef", "-i", "en_US", "-f", "ISO-8859-1", f"{directory}/{LATIN1}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        # localedef warns (exit 1) on some glibc sources but still writes the locale.
        assert os.path.exists(f"{directory}/{LATIN1}/LC_CTYPE"), built.stderr
        for root, dirs, files in os.walk(directory):
            for name in (root, *(os.path.join(root, entry) for entry in dirs + files)):
                os.chmod(name, 0o755 if os.path.isdir(name) else 0o644)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize(
    ("lang", "in_process"),
    [
        ("C.UTF-8", True),
        ("C.utf8", True),
        ("C", False),
        ("POSIX", False),
        ("", False),
        ("xx_XX.nonexistent", False),
        (LATIN1, False),
    ],
)
async def test_python_starts_the_same_on_both_paths(
    runner: Runner, locale_dir: str, lang: str, in_process: bool
) -> None:
    """A warm run's interpreter starts as a fresh one would: streams, encodings, locale, env.

    Its streams are made by its zygote before the run exists, and its
    interpreter started under the zygote's locale. Where a fresh interpreter
    would start otherwise (UTF-8 mode under C or POSIX, a charset other than
    UTF-8), the warm jail execs one, and the run says "cold".
    """
    code = (
        "import json, locale, os, sys\n"
        "streams = (sys.stdin, sys.stdout, sys.stderr)\n"
        "facts = [[s.fileno(), s.seekable(), s.isatty(), s.encoding, s.errors,\n"
        "          s.readable(), s.writable(), s.closed, s.name, s.mode, s.line_buffering,\n"
        "          s.write_through, type(s.buffer).__name__, type(s.buffer.raw).__name__]\n"
        "         for s in streams]\n"
        "start = [sys.flags.utf8_mode, locale.getpreferredencoding(False),\n"
        "         sys.getfilesystemencoding(), sys.getfilesystemencodeerrors(),\n"
        "         locale.setlocale(locale.LC_CTYPE), os.environ.get('LC_CTYPE')]\n"
        "sys.stderr.write('caf\\udce9\\n')\n"
        "print(json.dumps({'streams': facts, 'start': start, 'stdin': sys.stdin.read()}))"
    )
    env = {"LANG": lang, "LOCPATH": locale_dir}
    started_cold = runner.isolation_report()["warm_path"]["warm_runs_started_cold"]
    seen = {}
    for path in PATHS:
        result = await runner.run(
            python(code, path, stdin=STDIN_LINES, env=env, readable_paths=(locale_dir,))
        )
        assert result.exit_code == 0, result.stderr
        assert result.stderr == "caf\\udce9\n"  # backslashreplace, as Python does for stderr
        seen[path] = facts(result.stdout)
        assert result.path == ("warm" if path == "warm" and in_process else "cold")
    assert seen["warm"] == seen["cold"]
    now_started_cold = runner.isolation_report()["warm_path"]["warm_runs_started_cold"]
    assert now_started_cold == started_cold + (0 if in_process else 1)  # shown at /health
    assert seen["warm"]["stdin"] == STDIN_LINES.decode()  # carriage returns untouched
    assert [s[1] for s in seen["warm"]["streams"]] == [False, False, False]  # pipes
    if lang == LATIN1:  # the locale was found: this case shows what it claims to
        assert seen["warm"]["streams"][1][3] == "iso8859-1"


MAIN_FACTS = (
    "import __main__, json, sys\n"
    "loader = __main__.__loader__\n"
    "loader = [type(loader).__name__, *(getattr(loader, k, None) for k in ('name', 'path'))]\n"
    "print(json.dumps({'keys': list(vars(__main__)), 'file': getattr(__main__, '__file__', None),\n"
    "    'loader': loader,\n"
    "    'module': repr(__main__), 'argv': sys.argv, 'orig_argv': sys.orig_argv[3:]}))\n"
)


def _compiled(source: str) -> bytes:
    """`source` as a .pyc file's bytes."""
    import importlib.util
    import marshal

    code = compile(source, "compiled.py", "exec")
    return importlib.util.MAGIC_NUMBER + bytes(12) + marshal.dumps(code)


def _zip_app(source: str) -> bytes:
    """A zip archive whose ``__main__.py`` is `source`."""
    import io
    import zipfile

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("__main__.py", source)
    return archive.getvalue()


@pytest.mark.parametrize(
    ("argv", "files", "stdin"),
    [
        (("-c", MAIN_FACTS), {}, b""),
        (("main.py", "one"), {"main.py": MAIN_FACTS.encode()}, b""),
        (("-",), {}, MAIN_FACTS.encode()),
        (("absent.py",), {}, b""),
        (("app",), {"app/__main__.py": MAIN_FACTS.encode()}, b""),
        (("app.zip",), {"app.zip": _zip_app(MAIN_FACTS)}, b""),
        (("compiled.pyc",), {"compiled.pyc": _compiled(MAIN_FACTS)}, b""),
        (("looks_like.py",), {"looks_like.py": _compiled(MAIN_FACTS)}, b""),
    ],
    ids=["code", "script", "stdin", "absent", "directory", "zip", "pyc", "pyc_magic"],
)
async def test_main_module_is_the_same_on_both_paths(
    runner: Runner, argv: tuple[str, ...], files: dict[str, bytes], stdin: bytes
) -> None:
    """``__main__`` and argv as the interpreter sets them up, whatever the command runs.

    What a warm interpreter cannot run as a fresh one would (a directory or
    a zip archive to run as a package, compiled code, a script it cannot
    open) is left to a fresh interpreter, exec'd in the jail.
    """
    seen = {}
    for path in PATHS:
        spec = RunSpec(
            tool="python",
            argv=(PYTHON, "-I", "-S", *argv),
            warm=path == "warm",
            files=files,
            stdin=stdin,
        )
        result = await runner.run(spec)
        seen[path] = (result.exit_code, result.stdout, result.stderr)
    assert seen["warm"] == seen["cold"]
    if argv[0] != "absent.py":
        assert seen["warm"][0] == 0, seen["warm"]
        assert facts(seen["warm"][1])["module"].startswith("<module '__main__'")


@pytest.mark.parametrize(
    "code",
    [
        "raise KeyboardInterrupt",
        "import sys; sys.exit('bye')",
        "import sys; sys.exit(300)",
        "import atexit; atexit.register(print, 'at exit'); raise ValueError('x')",
        "import os, signal; os.kill(os.getpid(), signal.SIGTERM)",
        'out = open(1, "w", closefd=False)\nout.write("never flushed by the code")',
        "import io, sys\nsys.stdout = io.StringIO()\n"
        "class Last:\n    def __del__(self): print('finalised', sys.__stdout__ is sys.stdout)\n"
        "last = Last()",
        "import os; os.close(1); print('lost')",
        "import sys; print(sys.stdout is sys.__stdout__, sys.stderr is sys.__stderr__)",
        "import atexit, sys\natexit.register(lambda: print(repr(sys.last_value)))\n"
        "raise LookupError('seen at exit')",
        # Code that breaks what an ending uses: a fresh interpreter ends in C.
        "import sys; sys.excepthook = None; raise ValueError('v')",
        "import sys\ndef hook(*_): raise RuntimeError('hook')\nsys.excepthook = hook\n"
        "raise ValueError('v')",
        "import sys; del sys.excepthook; raise ValueError('v')",
        "import sys; del sys.__stdout__",
        "import sys; sys.modules['__main__'] = 5",
        "import os, gc, atexit, weakref\n"
        "os._exit = gc.collect = atexit._run_exitfuncs = weakref.ref = None",
        "import os; del os.kill; raise KeyboardInterrupt",
        "import threading; threading._shutdown = None",
        "import sys; sys.stdout = 5",
    ],
    ids=[
        "interrupt",
        "exit_text",
        "exit_300",
        "atexit_after_error",
        "own_sigterm",
        "unflushed_file",
        "finaliser_at_exit",
        "stdout_fd_closed",
        "original_streams",
        "last_value_at_exit",
        "excepthook_none",
        "excepthook_fails",
        "excepthook_missing",
        "original_stdout_deleted",
        "main_module_replaced",
        "ending_functions_replaced",
        "interrupt_without_kill",
        "threading_shutdown_replaced",
        "stdout_not_a_stream",
    ],
)
async def test_how_the_code_ends_is_the_same_on_both_paths(runner: Runner, code: str) -> None:
    """Status, signal and output of a run's end, shutdown included, as a fresh interpreter's."""
    seen = {}
    for path in PATHS:
        result = await runner.run(python(code, path))
        seen[path] = (result.exit_code, result.signal, result.stdout, result.stderr)
    assert seen["warm"] == seen["cold"]


@pytest.mark.parametrize("path", PATHS)
async def test_no_import_state_of_the_jail_is_left(runner: Runner, path: str) -> None:
    """Neither the jail's modules nor the finders that loaded them (with their listings)."""
    code = (
        "import json, sys\n"
        "print(json.dumps([sorted(sys.path_importer_cache), sys.path,\n"
        "                  [name for name in sys.modules if name.split('.')[0] == 'sandbox']]))"
    )
    result = await runner.run(python(code, path))
    finders, search_path, jail_modules = facts(result.stdout)
    assert jail_modules == []
    assert not [entry for entry in finders + search_path if entry.startswith(str(REPO))]


async def test_time_zone_of_the_tool_environment_on_both_paths(runner: Runner) -> None:
    """TZ from the policy's environment: a warm run's time module was imported by its zygote."""
    code = (
        "import json, time\n"
        "print(json.dumps([time.tzname, time.timezone, time.strftime('%Z %z', time.localtime(0))]))"
    )
    seen = {}
    for path in PATHS:
        result = await runner.run(python(code, path, env={"TZ": "JST-9"}))
        assert result.exit_code == 0, result.stderr
        seen[path] = facts(result.stdout)
    assert seen["warm"] == seen["cold"] == [["JST", "JST"], -32400, "JST +0900"]


@pytest.mark.parametrize("path", PATHS)
async def test_policy_denied_syscalls_are_refused_and_counted(runner: Runner, path: str) -> None:
    code = (
        "import os\n"
        "print('trying', flush=True)\n"
        "try:\n"
        "    os.getcwd()\n"
        "    print('allowed')\n"
        "except PermissionError:\n"
        "    print('refused')\n"
    )
    result = await runner.run(python(code, path, denied_syscalls=("getcwd",)))
    assert result.stdout == "trying\nrefused\n"
    assert result.seccomp_refusals >= 1
    allowed = await runner.run(python(code, path))
    assert allowed.stdout == "trying\nallowed\n"


async def test_a_tool_with_network_keeps_the_host_network(runner: Runner) -> None:
    code = (
        "import socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
        "print('inet socket', s.family == socket.AF_INET)\n"
    )
    closed = await runner.run(python(code, "cold"))
    assert "PermissionError" in closed.stderr
    opened = await runner.run(python(code, "cold", network=True))
    assert opened.stdout == "inet socket True\n"
    with pytest.raises(RunnerUnavailable, match="netns"):
        await runner.run(python(code, "cold", network=True, required_layers=frozenset({"netns"})))


@pytest.mark.parametrize("path", PATHS)
async def test_policy_readable_paths_become_visible_read_only(runner: Runner, path: str) -> None:
    code = (
        "import os\n"
        "print(os.path.exists('/etc/passwd'), len(os.listdir('/usr/share')) > 0)\n"
        "try:\n"
        "    open('/etc/passwd', 'a')\n"
        "except OSError as error:\n"
        "    print(type(error).__name__)\n"
    )
    hidden = await runner.run(python(code, path))
    assert hidden.stdout.startswith("False True\n")
    shown = await runner.run(
        python(code, path, readable_paths=("/etc/passwd", "/usr/share", "/proc"))
    )
    assert shown.stdout in ("True True\nOSError\n", "True True\nPermissionError\n")
