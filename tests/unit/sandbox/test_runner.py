"""The Runner: inputs and outputs of a run, limits, teardown, and fail-closed behaviour."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from sandbox.host import probe as probe_module
from sandbox.host.runner import Runner, RunnerUnavailable
from sandbox.host.slots import RunPipes
from sandbox.jail.config import OPTIONAL_LAYERS
from sandbox.spec import RunLimits, RunResult, RunSpec
from tests.unit.sandbox.jailed import PATHS, PYTHON, python

pytestmark = pytest.mark.asyncio(loop_scope="module")

STRUCTURAL_LAYERS = sorted(set(probe_module.LAYERS) - OPTIONAL_LAYERS)


@pytest_asyncio.fixture(loop_scope="module")
async def single(tmp_path: Path) -> AsyncIterator[Runner]:
    """A started Runner with one slot (so the next run's jail is built in that slot)."""
    one_slot = Runner(python_executable=PYTHON, state_dir=tmp_path, slots=1)
    await one_slot.start()
    yield one_slot
    await one_slot.close()


def processes_with(marker: str) -> list[int]:
    """Host pids whose command line contains `marker`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if marker.encode() in handle.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


@pytest.mark.parametrize("path", PATHS)
async def test_well_behaved_python_tool_works(runner: Runner, path: str) -> None:
    code = (
        "import sys, json, re, math, datetime, itertools, subprocess\n"
        "data = sys.stdin.read()\n"
        "open('out.txt', 'w').write(data.upper())\n"
        "echo = subprocess.run(['/bin/echo', 'child'], capture_output=True, text=True).stdout\n"
        "print(json.dumps({'in': data, 'file': open('out.txt').read(),"
        " 'helper': open('helper.txt').read(),"
        " 'sqrt': math.isqrt(49), 'echo': echo.strip(), 'argv': sys.argv}))"
    )
    result = await runner.run(python(code, path, stdin=b"hello", files={"helper.txt": b"given"}))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == (
        '{"in": "hello", "file": "HELLO", "helper": "given", "sqrt": 7, '
        '"echo": "child", "argv": ["-c"]}'
    )
    assert result.path == path
    assert result.limit_hit is None


async def test_argv_tool_runs_on_the_cold_path(runner: Runner) -> None:
    result = await runner.run(
        RunSpec(
            tool="cat", argv=("/bin/cat", "notes.txt"), files={"notes.txt": b"a\nb\n"}, warm=True
        )
    )
    assert (result.stdout, result.exit_code, result.path) == ("a\nb\n", 0, "cold")


async def test_python_script_file_and_exit_status(runner: Runner) -> None:
    files = {"main.py": b"import sys\nprint(sys.argv)\nsys.exit(3)\n"}
    result = await runner.run(
        RunSpec(tool="py", argv=(PYTHON, "-I", "-S", "main.py", "x"), files=files)
    )
    assert (result.stdout, result.exit_code) == ("['main.py', 'x']\n", 3)


@pytest.mark.parametrize("path", PATHS)
async def test_uncaught_exception_gives_traceback_and_status_1(runner: Runner, path: str) -> None:
    result = await runner.run(python("raise ValueError('boom')", path))
    assert result.exit_code == 1
    assert "ValueError: boom" in result.stderr
    assert 'File "<string>", line 1, in <module>' in result.stderr
    # Only the tool's own frames: nothing of the jail's source or its host path.
    assert "warm_run.py" not in result.stderr
    assert str(Path(__file__).resolve().parents[3]) not in result.stderr


@pytest.mark.parametrize("path", PATHS)
async def test_wall_time_limit_kills_the_whole_tree(runner: Runner, path: str) -> None:
    marker = f"77{os.getpid() % 1000}.{len(path)}"
    code = (
        "import os, subprocess, time\n"
        f"subprocess.Popen(['/bin/sh', '-c', 'sleep {marker}'], start_new_session=True)\n"
        "print('started', flush=True)\n"
        "time.sleep(60)"
    )
    limits = RunLimits(wall_seconds=1.0)
    result = await runner.run(python(code, path, limits=limits))
    assert result.stdout == "started\n"
    assert result.limit_hit == "wall_time"
    assert result.duration_ms < 4000
    assert processes_with(f"sleep {marker}") == []


@pytest.mark.parametrize("path", PATHS)
async def test_a_stream_of_refused_syscalls_does_not_hold_off_the_wall_clock(
    runner: Runner, path: str
) -> None:
    # Each refusal wakes init (it answers seccomp notifications): the clock
    # must still run out while they keep coming.
    code = (
        "import os\n"
        "print('refusing', flush=True)\n"
        "while True:\n"
        "    try:\n"
        "        os.setuid(0)\n"
        "    except PermissionError:\n"
        "        pass\n"
    )
    limits = RunLimits(wall_seconds=1.0, cpu_seconds=30)
    result = await runner.run(python(code, path, limits=limits))
    assert result.stdout == "refusing\n"
    assert result.limit_hit == "wall_time"
    assert result.signal == signal.SIGKILL
    assert result.seccomp_refusals > 100
    assert result.duration_ms < 4000


@pytest.mark.skipif(os.geteuid() != 0, reason="a zygote makes the pid namespace only as root")
async def test_a_root_zygote_child_is_the_jails_init(single: Runner) -> None:
    """Two processes per run: the zygote's child is pid 1 of its own namespace, the tool pid 2."""
    await single.run(python("print(1)", "warm"))
    init = (await _spare_ready(single)).reader.report.jail_pid
    zygote = single._slots[0].zygote
    assert init is not None and zygote is not None
    status = dict(
        line.split(":\t", 1) for line in Path(f"/proc/{init}/status").read_text().splitlines()
    )
    assert int(status["PPid"]) == zygote.pid
    assert status["NSpid"].split() == [str(init), "1"]  # pid 1 of a namespace of its own
    assert os.readlink(f"/proc/{init}/ns/pid") != os.readlink(f"/proc/{zygote.pid}/ns/pid")
    # The jail says who it is first thing; it forks the tool once it is built.
    for _ in range(400):
        children = Path(f"/proc/{init}/task/{init}/children").read_text().split()
        if children:
            break
        await asyncio.sleep(0.005)
    assert len(children) == 1  # the tool, waiting for its payload
    tool_status = Path(f"/proc/{children[0]}/status").read_text()
    assert "\nNSpid:\t" + children[0] + "\t2\n" in tool_status


@pytest.mark.parametrize("path", PATHS)
async def test_daemonized_grandchild_dies_with_the_tool(runner: Runner, path: str) -> None:
    marker = f"66{os.getpid() % 1000}.{len(path)}"
    code = (
        "import os\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        os.execv('/bin/sleep', ['sleep', '{marker}'])\n"
        "    os._exit(0)\n"
        "print('detached', flush=True)\n"
    )
    result = await runner.run(python(code, path))
    assert (result.stdout, result.exit_code) == ("detached\n", 0)
    await asyncio.sleep(0.05)
    assert processes_with(f"sleep {marker}") == []


@pytest.mark.parametrize("path", PATHS)
async def test_output_cap_truncates_and_stops_the_run(runner: Runner, path: str) -> None:
    code = "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n"
    result = await runner.run(python(code, path, limits=RunLimits(output_bytes=4096)))
    assert len(result.stdout) == 4096
    assert result.stdout_truncated and result.limit_hit == "output"


@pytest.mark.parametrize("path", PATHS)
async def test_memory_bomb_is_stopped(runner: Runner, path: str) -> None:
    code = (
        "blocks = []\n"
        "print('allocating', flush=True)\n"
        "while True:\n"
        "    blocks.append(bytearray(1 << 22))\n"
    )
    limits = RunLimits(memory_bytes=64 * 1024 * 1024)
    result = await runner.run(python(code, path, limits=limits))
    assert result.stdout == "allocating\n"
    assert result.exit_code != 0
    assert "MemoryError" in result.stderr or result.limit_hit == "memory"


@pytest.mark.parametrize("path", PATHS)
async def test_fork_bomb_hits_the_process_limit(runner: Runner, path: str) -> None:
    code = (
        "import os, time\n"
        "print('forking', flush=True)\n"
        "children = 0\n"
        "try:\n"
        "    while True:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30)\n"
        "            os._exit(0)\n"
        "        children += 1\n"
        "except OSError as e:\n"
        "    print('refused after', children, flush=True)\n"
    )
    limits = RunLimits(processes=8, wall_seconds=5)
    result = await runner.run(python(code, path, limits=limits))
    assert result.stdout.startswith("forking\nrefused after ")
    assert int(result.stdout.split()[-1]) <= 8
    assert result.exit_code == 0


@pytest.mark.parametrize("path", PATHS)
async def test_cpu_limit(runner: Runner, path: str) -> None:
    code = "print('spinning', flush=True)\nwhile True:\n    pass\n"
    limits = RunLimits(cpu_seconds=1, wall_seconds=10)
    result = await runner.run(python(code, path, limits=limits))
    assert result.stdout == "spinning\n"
    assert result.signal in (signal.SIGXCPU, signal.SIGKILL)
    assert result.limit_hit == "cpu_time"


def host_leftovers(runner: Runner) -> list[Path]:
    """Anything a run left in the service's run dirs (slot mountpoints must stay empty)."""
    return [entry for slot in runner.runs_root.iterdir() for entry in slot.iterdir()]


@pytest.mark.parametrize("path", PATHS)
async def test_nothing_persists_between_runs(runner: Runner, path: str) -> None:
    write = "open('junk', 'w').write('x'); open('/tmp/junk', 'w').write('x'); print('wrote')"
    assert (await runner.run(python(write, path))).stdout == "wrote\n"
    check = "import os; print(os.listdir('.'), os.listdir('/tmp'))"
    for _ in range(runner.slot_count + 1):  # every slot at least once
        assert (await runner.run(python(check, path))).stdout == "[] []\n"
    assert host_leftovers(runner) == []


@pytest.mark.parametrize("path", PATHS)
async def test_disk_fill_stops_at_the_workdir_size(runner: Runner, path: str) -> None:
    code = (
        "import errno\n"
        "print('filling', flush=True)\n"
        "chunk = b'x' * (1 << 20)\n"
        "try:\n"
        "    for i in range(10000):\n"
        "        with open(f'f{i}', 'wb') as handle:\n"
        "            handle.write(chunk)\n"
        "except OSError as error:\n"
        "    print(errno.errorcode[error.errno], i)\n"
    )
    limits = RunLimits(memory_bytes=32 * 1024 * 1024, file_size_bytes=2 * 1024 * 1024)
    result = await runner.run(python(code, path, limits=limits))
    assert result.stdout.startswith("filling\nENOSPC ")
    assert int(result.stdout.split()[-1]) <= 8  # a quarter of the memory limit
    assert host_leftovers(runner) == []


async def test_bad_file_name_is_refused_before_running(runner: Runner) -> None:
    for name in ("../escape", "/etc/passwd", "a/../../b", ""):
        with pytest.raises(RunnerUnavailable):
            await runner.run(python("print(1)", "cold", files={name: b"x"}))


async def test_files_in_subdirectories(runner: Runner) -> None:
    files = {
        "pkg/mod.py": b"VALUE = 5\n",
        "main.py": b"import sys\nprint(open('pkg/mod.py').read())",
    }
    result = await runner.run(RunSpec(tool="py", argv=(PYTHON, "-I", "-S", "main.py"), files=files))
    assert result.stdout == "VALUE = 5\n\n"


async def test_concurrent_runs_do_not_block_each_other(runner: Runner) -> None:
    slow = python("import time; time.sleep(0.5); print('slow')", "warm")
    fast = [python(f"print({i})", "warm") for i in range(6)]
    results = await asyncio.gather(runner.run(slow), *(runner.run(spec) for spec in fast))
    assert [r.stdout for r in results] == ["slow\n", *(f"{i}\n" for i in range(6))]


async def test_failing_layer_fails_closed(tmp_path: Path) -> None:
    broken = Runner(python_executable=PYTHON, state_dir=tmp_path, jail_uid=0)
    await broken.start()
    try:
        assert broken.missing_layers(["privileges"]) == ["privileges"]
        with pytest.raises(RunnerUnavailable) as refused:
            await broken.run(python("print('ran')", "cold"))
        assert "privileges" in str(refused.value)
    finally:
        await broken.close()


async def test_dead_zygote_falls_back_to_cold_and_comes_back(single: Runner) -> None:
    zygote = single._slots[0].zygote
    assert zygote is not None and zygote.process is not None
    zygote.process.kill()
    zygote.process.wait()
    assert single.isolation_report()["warm_path"]["state"] == "cold_fallback"
    result = await single.run(python("print('still runs')", "warm"))
    assert (result.stdout, result.path) == ("still runs\n", "cold")
    for _ in range(100):
        await asyncio.sleep(0.05)
        if single.isolation_report()["warm_path"]["state"] == "ready":
            break
    assert single.isolation_report()["warm_path"]["restarts"] == 1
    result = await single.run(python("print('warm again')", "warm"))
    assert (result.stdout, result.path) == ("warm again\n", "warm")


async def test_policy_change_and_run_count_recycle_the_zygotes(tmp_path: Path) -> None:
    single = Runner(
        python_executable=PYTHON, state_dir=tmp_path, slots=1, warm_runs_before_recycle=3
    )
    await single.start()
    try:

        def zygote_pid() -> int | None:
            zygote = single._slots[0].zygote
            return zygote.pid if zygote is not None else None

        first = zygote_pid()
        await single.reload("v2")
        second = zygote_pid()
        assert second is not None and second != first
        for _ in range(3):
            assert (await single.run(python("print(1)", "warm"))).path == "warm"
        result = await single.run(python("print(2)", "warm"))  # the 4th: a new zygote
        assert (result.stdout, result.path) == ("2\n", "warm")
        assert zygote_pid() not in (first, second)
    finally:
        await single.close()


@pytest.mark.parametrize("path", PATHS)
async def test_inode_exhaustion_stops_at_the_tmpfs_limit(runner: Runner, path: str) -> None:
    code = (
        "import errno, os\n"
        "print('creating', flush=True)\n"
        "try:\n"
        "    for i in range(100000):\n"
        "        os.close(os.open(f'e{i}', os.O_CREAT | os.O_WRONLY))\n"
        "except OSError as error:\n"
        "    print(errno.errorcode[error.errno], i)\n"
    )
    result = await runner.run(python(code, path, limits=RunLimits(open_files=64)))
    assert result.stdout.startswith("creating\nENOSPC ")
    assert int(result.stdout.split()[-1]) <= 16384


def _failing_first(jail_runner: Runner, failures: int) -> list[str]:
    """Make the runner's first `failures` runs end without a report, as under heavy load."""
    real = jail_runner._execute
    calls: list[str] = []

    async def flaky(spec: RunSpec, layers: list[str]) -> object:
        calls.append(spec.tool)
        if len(calls) <= failures:
            raise RunnerUnavailable("the jail ended without reporting the tool's status")
        return await real(spec, layers)

    jail_runner._execute = flaky  # type: ignore[method-assign]
    return calls


async def test_probe_retries_a_run_that_reported_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probe_module, "PROBE_RETRY_SECONDS", 0.01)
    flaky = Runner(python_executable=PYTHON, state_dir=tmp_path, slots=1)
    calls = _failing_first(flaky, failures=1)
    await flaky.start()
    try:
        assert calls == ["probe", "probe"]
        assert flaky.missing_layers(STRUCTURAL_LAYERS) == []
        assert (await flaky.run(python("print('ran')", "warm"))).stdout == "ran\n"
    finally:
        await flaky.close()


async def test_failed_probes_refuse_runs_until_a_later_probe_proves_the_layers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probe_module, "PROBE_RETRY_SECONDS", 0.01)
    flaky = Runner(python_executable=PYTHON, state_dir=tmp_path, slots=1)
    calls = _failing_first(flaky, failures=probe_module.PROBE_ATTEMPTS + 1)
    await flaky.start()
    try:
        # Nothing was shown, so nothing is reported active and nothing runs.
        report = flaky.isolation_report()
        assert not any(report[name]["active"] for name in probe_module.LAYERS)
        assert "probing again" in report["pidns"]["reason"]
        with pytest.raises(RunnerUnavailable):
            await flaky.run(python("print('ran')", "warm"))
        for _ in range(200):
            if not flaky.missing_layers(STRUCTURAL_LAYERS):
                break
            await asyncio.sleep(0.05)
        assert flaky.missing_layers(STRUCTURAL_LAYERS) == []
        assert calls.count("probe") == probe_module.PROBE_ATTEMPTS + 2
        assert (await flaky.run(python("print('ran')", "warm"))).stdout == "ran\n"
    finally:
        await flaky.close()


async def test_a_probe_that_prints_nothing_shows_no_layer_active(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probe_module, "PROBE_RETRY_SECONDS", 0.01)
    monkeypatch.setattr(probe_module, "REPROBE_MAX_SECONDS", 0.01)
    silent = Runner(python_executable=PYTHON, state_dir=tmp_path, slots=1)

    async def killed(spec: RunSpec, layers: list[str]) -> RunResult:
        return RunResult(stdout="", stderr="", exit_code=None, signal=9, duration_ms=1.0)

    silent._execute = killed  # type: ignore[method-assign]
    await silent.start()
    try:
        await asyncio.sleep(0.1)  # a few background probes, all silent
        report = silent.isolation_report()
        assert not any(report[name]["active"] for name in probe_module.LAYERS)
    finally:
        await silent.close()


async def test_cold_python_run_is_a_fresh_interpreter_started_inside_the_jail(
    runner: Runner,
) -> None:
    code = (
        "import os, sys\n"
        "print(sorted(m for m in sys.modules if m.startswith(('sandbox', '_ctypes'))))\n"
        "print(os.getpid(), os.getuid(), sys.flags.isolated, sys.flags.no_site)\n"
    )
    cold = await runner.run(python(code, "cold"))
    assert cold.path == "cold"
    # Nothing of the jail's own code was ever loaded in the tool's interpreter.
    assert cold.stdout.splitlines() == ["[]", "2 65534 1 1"], cold.stderr
    warm = await runner.run(python(code, "warm"))
    assert warm.path == "warm"
    assert warm.stdout.splitlines()[1] == "2 65534 1 1"
    assert "sandbox" not in warm.stdout.splitlines()[0]


async def _spare_ready(single: Runner) -> RunPipes:
    """Wait until the one slot holds a jail built for its next run; that jail."""
    for _ in range(200):
        spare = single._slots[0].spare
        built = single.isolation_report()["warm_path"]["jails_built_ahead"] == 1
        # The jail's first report line (its pid) may still be on its way.
        if spare is not None and built and spare.reader.report.jail_pid is not None:
            return spare
        await asyncio.sleep(0.01)
    raise AssertionError("no jail was built ahead")


@pytest.mark.parametrize("path", PATHS)
async def test_a_jail_built_ahead_waits_without_its_clock_running(
    single: Runner, path: str
) -> None:
    limits = RunLimits(wall_seconds=1.0)
    await single.run(python("print(1)", path, limits=limits))
    await _spare_ready(single)
    await asyncio.sleep(1.5)  # longer than the run may take
    result = await single.run(python("print('in time')", path, limits=limits))
    assert (result.stdout, result.limit_hit, result.path) == ("in time\n", None, path)
    assert single.isolation_report()["warm_path"]["runs_on_jails_built_ahead"] == 1
    # ...and the clock does run once the run is in.
    slow = await single.run(python("import time; time.sleep(5)", path, limits=limits))
    assert slow.limit_hit == "wall_time"


async def test_a_dead_jail_built_ahead_is_replaced(single: Runner) -> None:
    await single.run(python("print(1)", "warm"))
    spare = await _spare_ready(single)
    assert spare.reader.report.jail_pid is not None
    os.kill(spare.reader.report.jail_pid, signal.SIGKILL)
    await asyncio.wait_for(spare.reader.finished, 5)
    result = await single.run(python("print('fresh')", "warm"))
    assert (result.stdout, result.exit_code) == ("fresh\n", 0)
    assert single.isolation_report()["warm_path"]["runs_on_jails_built_ahead"] == 0


async def test_another_tool_or_a_new_policy_withdraws_the_jail_built_ahead(
    single: Runner,
) -> None:
    await single.run(python("print(1)", "warm"))
    jail = (await _spare_ready(single)).reader.report.jail_pid
    other = python("print('other limits')", "warm", limits=RunLimits(cpu_seconds=2))
    assert (await single.run(other)).stdout == "other limits\n"
    assert jail is not None and not _alive(jail)
    jail = (await _spare_ready(single)).reader.report.jail_pid
    await single.reload("v2")
    assert single._slots[0].spare is None
    for _ in range(100):
        if jail is not None and not _alive(jail):
            break
        await asyncio.sleep(0.01)
    assert jail is not None and not _alive(jail)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("path", PATHS)
async def test_the_runs_files_are_written_before_the_file_size_limit_applies(
    runner: Runner, path: str
) -> None:
    """A tool whose code file is larger than its file size limit still gets it; it cannot
    write a file of that size itself."""
    code = (
        b"# "
        + b"x" * 4096
        + b"\n"
        + (
            b"import os\n"
            b"print(os.path.getsize('main.py'))\n"
            b"try:\n"
            b"    with open('copy.py', 'wb') as copy:\n"
            b"        copy.write(open('main.py', 'rb').read())\n"
            b"except OSError as error:\n"
            b"    print('refused', error.errno)\n"
        )
    )
    result = await runner.run(
        RunSpec(
            tool="python",
            argv=(PYTHON, "-I", "-S", "main.py"),
            files={"main.py": code},
            warm=path == "warm",
            limits=RunLimits(file_size_bytes=1024),
        )
    )
    assert result.exit_code == 0, result
    assert result.stdout.split("\n")[:2] == [str(len(code)), "refused 27"], result  # EFBIG
