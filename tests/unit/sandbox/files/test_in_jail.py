"""With the real jail: a request's input files are in the tool's working dir, its own to read,
before it starts; and a package environment works inside the jail when mounted read-only,
with nothing of the service or of the interpreter's own packages visible."""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.files_in import check_input_files
from sandbox.host.runner import Runner
from sandbox.models import InputFile
from sandbox.policy import ToolPolicy
from sandbox.spec import RunSpec
from tests.unit.sandbox.files.envs import build_tiny
from tests.unit.sandbox.jailed import PATHS, PYTHON

pytestmark = pytest.mark.asyncio(loop_scope="module")

READ_INPUTS = """
import json, os, stat
seen = {}
for path in ("data.csv", "in/2024/jan.csv", "raw.bin"):
    status = os.stat(path)
    seen[path] = {
        "content": open(path, "rb").read().hex(),
        "mine": status.st_uid == os.getuid(),
        "mode": oct(stat.S_IMODE(status.st_mode)),
    }
print(json.dumps(seen))
"""


@pytest.mark.parametrize("path", PATHS)
async def test_input_files_are_in_the_working_dir_before_the_tool_starts(
    runner: Runner, path: str
) -> None:
    tool = ToolPolicy(argv=("{python}", "-I", "-S", "main.py"), code="file", code_file="main.py")
    given = {"data.csv": b"a,b\n1,2\n", "./in//2024/jan.csv": b"x", "raw.bin": bytes(range(256))}
    accepted = check_input_files(
        "python",
        tool,
        [InputFile(path=p, content=base64.b64encode(d).decode()) for p, d in given.items()],
    )
    files = {"main.py": READ_INPUTS.encode(), **{f.path: f.data for f in accepted}}
    spec = RunSpec(
        tool="python", argv=(PYTHON, "-I", "-S", "main.py"), files=files, warm=path == "warm"
    )
    result = await runner.run(spec)
    assert result.exit_code == 0, result.stderr
    seen = json.loads(result.stdout)
    assert {p: bytes.fromhex(v["content"]) for p, v in seen.items()} == {
        "data.csv": b"a,b\n1,2\n",
        "in/2024/jan.csv": b"x",
        "raw.bin": bytes(range(256)),
    }
    assert all(v["mine"] for v in seen.values())
    assert {v["mode"] for v in seen.values()} == {"0o600"}  # the jail's writer's, not the umask's


IN_THE_ENVIRONMENT = """
import json, os, sys, csv
report = {"prefix": sys.prefix, "path": sys.path, "imports": {}}
for module in ("pagi", "sandbox", "fastapi", "pydantic", "_pytest", "IPython"):
    try:
        __import__(module)
        report["imports"][module] = "imported"
    except ImportError as error:
        report["imports"][module] = type(error).__name__
try:
    open(os.path.join(sys.prefix, "planted.py"), "w").write("x")
    report["write"] = "written"
except OSError as error:
    report["write"] = error.errno
print(json.dumps(report))
"""


@pytest.fixture
def beside_tmp() -> Iterator[Path]:
    """A scratch dir outside /tmp (the jail has its own /tmp: nothing under it can be shown)."""
    path = Path(tempfile.mkdtemp(prefix="pagi-envs-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_a_package_environment_mounted_read_only_works_in_the_jail(
    runner: Runner, beside_tmp: Path
) -> None:
    state = build_tiny(beside_tmp / "policy", beside_tmp / "envs")
    assert state.ready and state.python and state.path
    spec = RunSpec(
        tool="tiny",
        argv=(state.python, "-I", "main.py"),
        files={"main.py": IN_THE_ENVIRONMENT.encode()},
        readable_paths=(state.path,),
    )
    result = await runner.run(spec)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["prefix"] == state.path
    assert set(report["imports"].values()) == {"ModuleNotFoundError"}, report["imports"]
    assert report["write"] in (13, 30)  # EACCES (Landlock) or EROFS: read-only
    assert not (Path(state.path) / "planted.py").exists()
    assert not any("site-packages" in p and not p.startswith(state.path) for p in report["path"])


WARM_IN_THE_ENVIRONMENT = """
import json, sys
preloaded = "csv" in sys.modules and "decimal" in sys.modules
import csv
left = getattr(csv, "planted_by_an_earlier_run", None)
csv.planted_by_an_earlier_run = "yes"
print(json.dumps({"preloaded": preloaded, "left": left, "prefix": sys.prefix,
                  "executable": sys.executable, "flags": [sys.flags.isolated, sys.flags.no_site]}))
"""


@pytest.mark.parametrize("path", PATHS)
async def test_a_package_environment_has_a_zygote_of_its_own_with_its_modules_preloaded(
    runner: Runner, beside_tmp: Path, path: str
) -> None:
    state = build_tiny(beside_tmp / "policy", beside_tmp / "envs")
    assert state.ready and state.python and state.path
    spec = RunSpec(
        tool="tiny",
        argv=(state.python, "-I", "main.py"),
        files={"main.py": WARM_IN_THE_ENVIRONMENT.encode()},
        package_env=state.path,
        preload=("csv", "decimal"),
        warm=path == "warm",
    )
    reports = []
    for _ in range(3):
        result = await runner.run(spec)
        assert result.exit_code == 0, result.stderr
        assert result.path == path
        reports.append(json.loads(result.stdout))
    for report in reports:
        assert report["prefix"] == state.path and report["executable"] == state.python
        assert report["flags"] == [1, 0]
        assert report["left"] is None  # nothing of one run is seen by the next
        # Only the warm path runs in the environment's zygote, which preloaded them.
        assert report["preloaded"] is (path == "warm")
    zygotes = runner.isolation_report()["warm_path"]["package_env_zygotes"]
    assert zygotes.get(state.path, 0) >= 1


async def test_an_environment_under_the_jails_own_tmp_cannot_be_mounted(
    runner: Runner, beside_tmp: Path, tmp_path: Path
) -> None:
    assert runner.package_env_mount_problem(str(beside_tmp)) is None
    assert "under a path the jail mounts itself" in (
        runner.package_env_mount_problem(str(tmp_path)) or ""
    )
    assert runner.package_env_mount_problem(str(runner.runs_root)) is not None
    assert "not a directory" in (runner.package_env_mount_problem("relative/dir") or "")
