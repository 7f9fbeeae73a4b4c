"""Package environments without the network: a lock with no package builds in seconds, so
missing, built, broken and stale environments, the build's guarantees (its interpreter is the
jail's, nothing of the service is visible, a failed build leaves nothing) and `pagi env` are
all checked for real."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sandbox.package_envs import (
    MARKER,
    EnvBuildError,
    EnvRegistry,
    build,
    definitions,
    env_key,
    inspect,
    interpreter,
)
from sandbox.policy import PolicyError, parse_policy
from tests.unit.sandbox.files.envs import PYTHON, TINY_POLICY, build_tiny, tiny_definition

REPO = Path(__file__).resolve().parents[4]


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """A policy dir and an envs dir."""
    return tmp_path / "policy", tmp_path / "envs"


def run_in_env(state_path: str, code: str) -> subprocess.CompletedProcess[str]:
    python = Path(state_path) / "bin" / "python"
    return subprocess.run(
        [str(python), "-I", "-c", code], capture_output=True, text=True, env={}, check=False
    )


# --------------------------------------------------------------------------- the policy


def problems(text: str) -> str:
    """What the policy check says of `text` ("" when it is valid)."""
    try:
        parse_policy(text.encode(), Path("/p/sandbox.toml"))
    except PolicyError as error:
        return error.render()
    return ""


def test_definitions_resolve_the_lock_beside_the_policy_and_list_the_tools(tmp_path):
    snapshot = parse_policy(TINY_POLICY.encode(), tmp_path / "p" / "sandbox.toml")
    [definition] = definitions(snapshot).values()
    assert definition.requirements == tmp_path / "p" / "envs" / "tiny.txt"
    assert definition.tools == ("tiny",) and definition.preload == ("json", "csv")
    summary = snapshot.summary()
    assert summary["tools"]["tiny"]["package_env"] == "tiny"
    assert summary["package_envs"]["tiny"]["preload"] == ["json", "csv"]
    assert summary["tools"]["plain"]["files"]["input_files"] == 16


def test_the_default_policy_ships_python_data_with_its_environment():
    snapshot = parse_policy(
        (REPO / "policies" / "sandbox.toml").read_bytes(), REPO / "policies" / "sandbox.toml"
    )
    tool = snapshot.document.tools["python-data"]
    assert tool.package_env == "data" and tool.env["MPLBACKEND"] == "Agg"
    assert "python-data" in snapshot.tools_of("agent") and "python-data" in snapshot.tools_of(
        "operator"
    )
    assert "python-data" not in snapshot.tools_of("bff")
    data = definitions(snapshot)["data"]
    assert data.requirements == REPO / "policies" / "envs" / "data.txt"
    assert data.preload[:3] == ("numpy", "pandas", "matplotlib.pyplot")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ('package_env = "tiny"', None),
        ('package_env = "nope"', "no environment named 'nope'"),
        (
            'argv = ["/usr/bin/python3", "main.py"]\npackage_env = "tiny"',
            "argv[0] must be '{python}'",
        ),
        ('argv = ["{python}", "-I", "-S", "main.py"]\npackage_env = "tiny"', "drop -S"),
        ('argv = ["{python}", "-IS", "main.py"]\npackage_env = "tiny"', "drop -S"),
        ('argv = ["{python}", "-W", "S", "-I", "main.py"]\npackage_env = "tiny"', None),
        ('argv = ["{python}", "-c", "-S"]\npackage_env = "tiny"', None),
        ('package_env = "Bad Name"', "environment name"),
    ],
)
def test_a_tools_package_env_is_checked(change, message):
    text = textwrap.dedent(f"""
        [tools.t]
        argv = ["{{python}}", "-I", "main.py"]
        {change.replace(chr(10), chr(10) + "        ")}
        [package_envs.tiny]
        requirements = "envs/tiny.txt"
    """)
    # argv given twice (the change's own) is a TOML error; keep the change's.
    if change.startswith("argv"):
        text = text.replace('argv = ["{python}", "-I", "main.py"]\n', "", 1)
    if message is None:
        assert problems(text) == ""
    else:
        assert message in problems(text)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('requirements = "/etc/data.txt"', "relative path"),
        ('requirements = "../outside/data.txt"', "'..' is not allowed"),
        ('requirements = "envs/data.in"', "relative path"),
        ('requirements = "envs/d.txt"\npreload = ["os; import socket"]', "module name"),
        ('requirements = "envs/d.txt"\nunknown = 1', "unknown key"),
        ("preload = []", "required key"),
    ],
)
def test_a_package_env_table_is_checked(table, message):
    assert message in problems(f"[package_envs.e]\n{table}\n")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("input_files", "257"),
        ("input_bytes", '"33 MiB"'),
        ("input_depth", "0"),
        ("input_depth", "17"),
        ("output_files", "-1"),
        ("output_bytes", '"1 GiB"'),
        ("input_files", '"4"'),
    ],
)
def test_file_limits_have_hard_ceilings(key, value):
    text = f'[tools.t]\nargv = ["/bin/true"]\n[tools.t.files]\n{key} = {value}\n'
    assert f"tools.t.files.{key}" in problems(text)


# --------------------------------------------------------------------------- build and state


def test_never_built_is_missing_and_says_how_to_build(dirs):
    policy_dir, envs_dir = dirs
    state = inspect(tiny_definition(policy_dir), envs_dir, PYTHON)
    assert state.status == "missing" and "pagi env build tiny" in (state.reason or "")
    assert state.path is None and state.python is None


def test_an_unreadable_lock_is_broken(dirs):
    policy_dir, envs_dir = dirs
    definition = tiny_definition(policy_dir)
    definition.requirements.unlink()
    state = inspect(definition, envs_dir, PYTHON)
    assert state.status == "broken" and "requirements file" in (state.reason or "")
    with pytest.raises(EnvBuildError, match="requirements file"):
        build(definition, envs_dir, PYTHON, quiet=True, echo=lambda _: None)


def test_a_built_environment_is_ready_runs_the_jails_interpreter_and_sees_nothing_else(dirs):
    policy_dir, envs_dir = dirs
    state = build_tiny(policy_dir, envs_dir)
    assert state.ready and state.path is not None and state.python == f"{state.path}/bin/python"
    # The interpreter is the base one the jail runs (PAGI_SANDBOX_PYTHON), by a link.
    assert os.path.realpath(state.python) == os.path.realpath(PYTHON)
    marker = json.loads((Path(state.path) / MARKER).read_text())
    assert marker["key"] == state.key and marker["python"] == os.path.realpath(PYTHON)
    assert marker["build_seconds"] >= 0
    seen = run_in_env(state.path, "import sys, json; print(json.dumps(sys.path))")
    paths = json.loads(seen.stdout)
    base = interpreter(PYTHON)
    assert all(
        p.startswith(state.path)
        or (p.startswith(os.path.dirname(os.path.dirname(base.path))) and "site-packages" not in p)
        for p in paths
    ), paths
    # Neither the service's own packages nor the base interpreter's are importable.
    for module in ("pagi", "fastapi", "pydantic", "_pytest", "IPython"):
        tried = run_in_env(state.path, f"import {module}")
        assert "ModuleNotFoundError" in tried.stderr, (module, tried.stderr)
    # Everything is readable by any user (the tool is not the builder), writable by no other.
    for directory, _, names in os.walk(state.path):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o755
        for name in names:
            mode = os.lstat(os.path.join(directory, name)).st_mode
            if stat.S_ISREG(mode):
                assert mode & 0o444 == 0o444 and not mode & 0o022, (name, oct(mode))


def test_building_again_keeps_a_ready_environment_and_force_replaces_it(dirs):
    policy_dir, envs_dir = dirs
    first = build_tiny(policy_dir, envs_dir)
    marker = Path(first.path or "") / MARKER
    built_at = json.loads(marker.read_text())["built_at"]
    inode = marker.stat().st_ino
    again = build_tiny(policy_dir, envs_dir)
    assert again.path == first.path and marker.stat().st_ino == inode
    forced = build_tiny(policy_dir, envs_dir, force=True)
    assert forced.ready and marker.stat().st_ino != inode
    assert json.loads(marker.read_text())["built_at"] >= built_at


def test_a_changed_lock_is_a_new_build_and_the_old_one_goes(dirs):
    policy_dir, envs_dir = dirs
    definition = tiny_definition(policy_dir)
    old = build_tiny(policy_dir, envs_dir)
    definition.requirements.write_text("# a new lock\n")
    stale = inspect(definition, envs_dir, PYTHON)
    assert stale.status == "missing" and "as it is now" in (stale.reason or "")
    new = build_tiny(policy_dir, envs_dir)
    assert new.ready and new.key != old.key
    assert sorted(p.name for p in envs_dir.iterdir() if not p.name.startswith(".")) == [
        f"tiny-{new.key}"
    ]


def test_the_key_follows_the_lock_and_the_interpreter():
    base = interpreter(PYTHON)
    assert env_key(b"a", base) != env_key(b"b", base)
    other = type(base)(path=base.path, version="3.11.999")
    assert env_key(b"a", base) != env_key(b"a", other)
    assert len(env_key(b"a", base)) == 16


def test_broken_environments_say_why(dirs):
    policy_dir, envs_dir = dirs
    definition = tiny_definition(policy_dir)
    state = build_tiny(policy_dir, envs_dir)
    root = Path(state.path or "")
    # A preload the environment cannot import (the policy asks for more than was built).
    missing_module = tiny_definition(policy_dir, preload=("json", "numpy"))
    broken = inspect(missing_module, envs_dir, PYTHON)
    assert broken.status == "broken" and "cannot import numpy" in (broken.reason or "")
    assert "--force" in (broken.reason or "")
    # An interpreter link that points elsewhere.
    link = root / "bin" / "python3.11"
    link.unlink()
    link.symlink_to("/bin/true")
    assert "interpreter is not" in (inspect(definition, envs_dir, PYTHON).reason or "")
    # An incomplete build: no marker.
    (root / MARKER).unlink()
    assert "incomplete build" in (inspect(definition, envs_dir, PYTHON).reason or "")
    # Broken is rebuilt by a plain build (no --force needed).
    assert build_tiny(policy_dir, envs_dir).ready


def test_a_build_whose_environment_does_not_work_leaves_nothing_behind(dirs):
    policy_dir, envs_dir = dirs
    definition = tiny_definition(policy_dir, preload=("no_such_module_anywhere",))
    with pytest.raises(EnvBuildError, match="cannot import no_such_module_anywhere"):
        build(definition, envs_dir, PYTHON, quiet=True, echo=lambda _: None)
    assert [p.name for p in envs_dir.iterdir()] == [".tiny.lock"]


def test_a_lock_without_hashes_is_refused_by_the_build(dirs):
    policy_dir, envs_dir = dirs
    definition = tiny_definition(policy_dir)
    definition.requirements.write_text("six==1.16.0\n")
    with pytest.raises(EnvBuildError, match="pip install failed"):
        build(definition, envs_dir, PYTHON, quiet=True, echo=lambda _: None)
    assert [p.name for p in envs_dir.iterdir()] == [".tiny.lock"]


# --------------------------------------------------------------------------- the service's view


async def test_the_registry_checks_new_environments_and_follows_changes(dirs, tmp_path):
    policy_dir, envs_dir = dirs
    tiny_definition(policy_dir)
    snapshot = parse_policy(TINY_POLICY.encode(), policy_dir / "sandbox.toml")
    registry = EnvRegistry(envs_dir, PYTHON)
    registry.configure(snapshot)
    assert registry.health()["tiny"]["state"] == "checking"
    stop = asyncio.Event()
    watcher = asyncio.create_task(registry.watch(stop, interval=0.05))
    try:
        for _ in range(200):
            await asyncio.sleep(0.05)
            if registry.state("tiny").status == "missing":
                break
        assert registry.state("tiny").status == "missing"
        await asyncio.to_thread(build_tiny, policy_dir, envs_dir)
        for _ in range(200):
            await asyncio.sleep(0.05)
            if registry.state("tiny").ready:
                break
        health = registry.health()["tiny"]
        assert health["state"] == "ready" and health["tools"] == ["tiny"]
        assert health["preload"] == ["json", "csv"] and health["reason"] is None
    finally:
        stop.set()
        await asyncio.wait_for(watcher, timeout=5)


# --------------------------------------------------------------------------- pagi env


def pagi(tmp_path: Path, policy: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "PAGI_STATE_DIR": str(tmp_path / "state"),
        "PAGI_SANDBOX_POLICY": str(policy),
    }
    return subprocess.run(
        [sys.executable, "-m", "cli", "env", *arguments],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
        timeout=300,
    )


def test_pagi_env_build_and_status(tmp_path):
    policy_dir = tmp_path / "policy"
    tiny_definition(policy_dir)
    policy = policy_dir / "sandbox.toml"
    policy.write_text(TINY_POLICY)
    before = pagi(tmp_path, policy, "status")
    assert before.returncode == 1 and "missing" in before.stdout
    built = pagi(tmp_path, policy, "build")
    assert built.returncode == 0, built.stderr
    assert "tiny: built in" in built.stdout
    again = pagi(tmp_path, policy, "build", "tiny")
    assert again.returncode == 0 and "tiny: ready at" in again.stdout
    status = pagi(tmp_path, policy, "status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["tiny"]["state"] == "ready" and report["tiny"]["python"].endswith("/bin/python")
    unknown = pagi(tmp_path, policy, "build", "nope")
    assert unknown.returncode == 2 and "no package environment 'nope'" in unknown.stderr
    policy.write_text("[tools.x]\n")
    invalid = pagi(tmp_path, policy, "status")
    assert invalid.returncode == 2 and "argv" in invalid.stderr


async def test_a_policy_edit_rechecks_an_environment_only_when_its_definition_changed(dirs):
    policy_dir, envs_dir = dirs
    build_tiny(policy_dir, envs_dir)
    source = policy_dir / "sandbox.toml"
    registry = EnvRegistry(envs_dir, PYTHON)
    registry.configure(parse_policy(TINY_POLICY.encode(), source))
    await registry.refresh()
    checked_at = registry.state("tiny").checked_at
    assert registry.state("tiny").ready
    # The same environment under a new policy version (another tool added): kept as checked.
    more_tools = TINY_POLICY + '\n[tools.other]\nargv = ["/bin/true"]\n'
    registry.configure(parse_policy(more_tools.encode(), source))
    assert registry.state("tiny").ready and registry.state("tiny").checked_at == checked_at
    # A new preload: checked again, and found broken.
    wants_more = TINY_POLICY.replace(
        'preload = ["json", "csv"]', 'preload = ["json", "no_such_mod"]'
    )
    registry.configure(parse_policy(wants_more.encode(), source))
    assert registry.state("tiny").status == "checking"
    await registry.refresh(only_changed=True)
    state = registry.state("tiny")
    assert state.status == "broken" and "cannot import no_such_mod" in (state.reason or "")


def test_policy_check_prints_each_tools_files_and_the_environments(tmp_path, capsys):
    from cli.policy import check_command

    policy = tmp_path / "sandbox.toml"
    policy.write_text(TINY_POLICY + "\n[tools.plain.files]\ninput_files = 0\n")
    assert check_command(policy) == 0
    out = capsys.readouterr().out
    assert "files in=0 (1024KiB, depth 4) out=16 (1024KiB)" in out
    assert "files in=16 (1024KiB, depth 4) out=16 (1024KiB) package_env=tiny" in out
    assert "package environments:\n  tiny         envs/tiny.txt preload: json, csv" in out
