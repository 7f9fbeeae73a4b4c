"""The shipped `data` environment, built for real from policies/envs/data.txt (wheels from the
package index): it holds exactly the locked numpy, pandas and matplotlib, and the python-data
tool's program (CSV in, PNG out) runs in the jail with the tool's own limits and environment.

Built once into a cache dir (PAGI_TEST_ENVS_DIR, default ~/.cache/pagi/test-envs), keyed by the
lock and the interpreter, so later sessions only check it. The tests that need it are slow."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from sandbox.host.runner import Runner
from sandbox.package_envs import EnvState, build, definitions, inspect
from sandbox.policy import load_policy
from sandbox.tool_call import run_spec_for
from tests.unit.sandbox.files.envs import PYTHON

REPO = Path(__file__).resolve().parents[4]
POLICY = load_policy(REPO / "policies" / "sandbox.toml")
DATA = definitions(POLICY)["data"]
CACHE = Path(os.environ.get("PAGI_TEST_ENVS_DIR", Path.home() / ".cache" / "pagi" / "test-envs"))


def locked_pins(lock: Path) -> dict[str, tuple[str, int]]:
    """name -> (version, hashes) of the pins that apply to this interpreter."""
    pins: dict[str, tuple[str, int]] = {}
    entries = re.sub(r"\\\n\s*", " ", lock.read_text())
    for line in entries.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        text, *options = line.split(" --")
        requirement = Requirement(text.strip())
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", line
        hashes = [o for o in options if o.startswith("hash=sha256:")]
        pins[canonicalize_name(requirement.name)] = (specifier.version, len(hashes))
    return pins


@pytest.fixture(scope="module")
def data_env() -> EnvState:
    state = build(DATA, CACHE, PYTHON, quiet=True, echo=lambda _: None)
    assert state.ready, state.reason
    return state


def test_the_lock_pins_every_package_exactly_with_hashes_and_meets_the_ranges() -> None:
    pins = locked_pins(DATA.requirements)
    assert {"numpy", "pandas", "matplotlib"} <= set(pins)
    assert all(count >= 1 for _, count in pins.values())
    ranges = (REPO / "policies" / "envs" / "data.in").read_text().splitlines()
    for line in ranges:
        if line.strip() and not line.startswith("#"):
            wanted = Requirement(line)
            version, _ = pins[canonicalize_name(wanted.name)]
            assert wanted.specifier.contains(version), (line, version)


@pytest.mark.slow
def test_the_built_environment_holds_exactly_the_lock(data_env: EnvState) -> None:
    checked = inspect(DATA, CACHE, PYTHON)
    assert checked.ready, checked.reason
    installed = {canonicalize_name(name): version for name, version in checked.packages.items()}
    assert installed == {
        name: version for name, (version, _) in locked_pins(DATA.requirements).items()
    }


CSV_TO_PNG = """
import json, os
import pandas as pd
import matplotlib
import matplotlib.pyplot as plt
frame = pd.read_csv("data/sales.csv")
summary = frame.groupby("region")["amount"].sum().sort_index()
os.makedirs("out", exist_ok=True)
summary.plot(kind="bar")
plt.savefig("out/plot.png")
png = open("out/plot.png", "rb").read()
print(json.dumps({"backend": matplotlib.get_backend(), "sum": summary.to_dict(),
                  "png": png[:8].hex(), "png_bytes": len(png)}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("path", ["cold", "warm"])
async def test_csv_in_png_out_in_the_jail_with_the_tools_limits(
    data_env: EnvState, tmp_path: Path, path: str
) -> None:
    tool = POLICY.document.tools["python-data"]
    assert tool.executor == "warm"
    csv = b"region,amount\nnorth,10\nsouth,5\nnorth,7\n"
    runner = Runner(python_executable=PYTHON, state_dir=tmp_path)
    await runner.start()
    try:
        spec = run_spec_for(
            POLICY,
            "python-data",
            tool,
            CSV_TO_PNG.encode(),
            data_env.python or "",
            data_env.path,
            DATA.preload,
        ).model_copy(update={"warm": path == "warm"})
        spec = spec.model_copy(update={"files": {**spec.files, "data/sales.csv": csv}})
        results = [await runner.run(spec) for _ in range(2)]
    finally:
        await runner.close()
    for result in results:
        assert result.exit_code == 0, result.stderr[-2000:]
        assert result.path == path
        report = json.loads(result.stdout)
        assert report["backend"].lower() == "agg"
        assert report["sum"] == {"north": 17, "south": 5}
        assert report["png"] == "89504e470d0a1a0a" and report["png_bytes"] > 1000
        assert result.files is not None
        [plot] = result.files.files
        assert plot.path == "out/plot.png" and plot.size == report["png_bytes"]
        assert plot.data is not None and plot.data.startswith(b"\x89PNG")


@pytest.mark.slow
def test_the_same_program_runs_with_the_bare_interpreter(
    data_env: EnvState, tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sales.csv").write_text("region,amount\na,1\n")
    done = subprocess.run(
        [data_env.python or "", "-I", "-c", CSV_TO_PNG],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"MPLBACKEND": "Agg", "HOME": str(tmp_path)},
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "plot.png").read_bytes()[:4] == b"\x89PNG"
