"""The sandbox as its Kubernetes pod runs it: readiness, the policy ConfigMap, a masked /proc.

The service runs as the pod's container does (uid 10001, no capability, no
privilege gain: the unprivileged jail), with the manifests' settings: the
policy read from a directory laid out as the kubelet lays out a ConfigMap
volume (``..data`` a symlink to a timestamped directory, the file a symlink
through it), the audit file and run directories where sandbox.yaml puts
them. Checked here:

- ``ready.py`` (the pod's readiness check) passes when the jail works, and
  fails, naming the layer, when it cannot: a container whose ``/proc`` is
  masked, which is what a pod gets without ``procMount: Unmasked``;
- an update of the ConfigMap, which the kubelet makes by swapping the
  ``..data`` symlink, is picked up by the running sandbox (hot reload), and
  an invalid one keeps the last good policy without making the pod unready.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from pagi.auth import TokenSigner, generate_keys
from pagi.stack import Stack
from sandbox.jail.config import OPTIONAL_LAYERS
from sandbox.jail.layer import LAYERS
from sandbox.policy import DEFAULT_REQUIRED_LAYERS
from testing.stack import REPO, LogCollector, in_private_mount_namespace, stack_env
from tests.deploy.manifests import KUBERNETES
from tests.escape.unprivileged import UnprivilegedLauncher, UnprivilegedStack, give_to_unprivileged

pytestmark = pytest.mark.e2e

READY_SCRIPT = KUBERNETES / "base" / "sandbox" / "ready.py"
DEFAULT_POLICY = REPO / "policies" / "sandbox.toml"
RELOAD_DEADLINE_SECONDS = 15.0


def _load_ready() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pagi_sandbox_ready", READY_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ready = _load_ready()


class ConfigMapVolume:
    """A directory updated the way the kubelet updates a ConfigMap volume (its AtomicWriter).

    Each version is written to a new hidden timestamped directory; ``..data``
    is then switched to it by renaming a fresh symlink over it (atomic), the
    previous directory is removed, and each key is a symlink ``KEY ->
    ..data/KEY`` made once.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True)
        path.chmod(0o755)
        self._current: Path | None = None

    def publish(self, files: dict[str, str]) -> None:
        """Make ``files`` the volume's content."""
        stamp = self.path / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{uuid.uuid4().hex[:9]}"
        stamp.mkdir()
        stamp.chmod(0o755)
        for name, text in files.items():
            (stamp / name).write_text(text)
            (stamp / name).chmod(0o644)
        swap = self.path / "..data_tmp"
        swap.symlink_to(stamp.name)
        os.rename(swap, self.path / "..data")
        for name in files:
            link = self.path / name
            if not link.is_symlink():
                link.symlink_to(f"..data/{name}")
        if self._current is not None:
            shutil.rmtree(self._current)
        self._current = stamp


@dataclass
class SandboxPod:
    """A sandbox started as its pod runs it."""

    stack: Stack
    url: str
    port: int
    policy: ConfigMapVolume
    token: str
    logs: LogCollector

    def health(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/health", timeout=10, trust_env=False).json()

    def policy_version(self) -> str:
        response = httpx.get(
            f"{self.url}/api/v1/policy",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
            trust_env=False,
        )
        assert response.status_code == 200, response.text
        return response.json()["version"]

    def run(self, tool: str, code: str | None = None) -> httpx.Response:
        body: dict[str, Any] = {"tool_name": tool}
        if code is not None:
            body["code"] = code
        return httpx.post(
            f"{self.url}/api/v1/execute_tool",
            json=body,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
            trust_env=False,
        )

    def readiness(self) -> subprocess.CompletedProcess[str]:
        """What the kubelet's exec probe gets: the script run as in the pod."""
        return subprocess.run(
            [sys.executable, "-I", str(READY_SCRIPT)],
            env={
                "RUST_SANDBOX_PORT": str(self.port),
                "PAGI_SANDBOX_POLICY": str(self.policy.path / "sandbox.toml"),
                "PATH": "/usr/bin:/bin",
            },
            capture_output=True,
            text=True,
            timeout=30,
        )


class MaskedProcStack(UnprivilegedStack):
    """The unprivileged sandbox in a container whose /proc is masked, as runtimes mask it."""

    def command_of(self, name: str) -> list[str]:
        # A file of /proc covered by a mount, as runc covers /proc/kcore, /proc/keys...
        mask = 'mount --bind /dev/null /proc/uptime && exec "$@"'
        return in_private_mount_namespace(mask, *super().command_of(name))


@pytest.fixture(scope="module")
def pod_area() -> Iterator[Path]:
    """A world-readable area: keys, the policy volume and state the uid 10001 reads."""
    if os.geteuid() != 0:
        pytest.skip("starts the sandbox as uid 10001, which needs root to switch to")
    base = Path(tempfile.mkdtemp(prefix="pagi-pod-", dir="/tmp"))
    base.chmod(0o755)
    keys = base / "keys"
    generate_keys(keys)
    keys.chmod(0o755)
    for key in keys.iterdir():
        key.chmod(0o644)  # only the pod's own mount protects them in a cluster
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _start(area: Path, name: str, masked_proc: bool) -> tuple[SandboxPod, UnprivilegedLauncher]:
    policy = ConfigMapVolume(area / name / "policies")
    policy.publish({"sandbox.toml": DEFAULT_POLICY.read_text()})
    state = area / name / "state"
    give_to_unprivileged(state)
    env = stack_env(
        state,
        area / "keys",
        PAGI_SANDBOX_POLICY=str(policy.path / "sandbox.toml"),
        PAGI_SANDBOX_AUDIT_LOG=str(state / "audit" / "sandbox-audit.jsonl"),
        PAGI_SANDBOX_WORK_ROOT=str(state / "runs"),
    )
    launcher = UnprivilegedLauncher()
    logs = LogCollector()
    kind = MaskedProcStack if masked_proc else UnprivilegedStack
    stack = kind(env=env, services=["sandbox"], cwd=REPO, sink=logs)
    stack.launcher = launcher  # type: ignore[attr-defined]
    try:
        stack.start(timeout=60)
    except BaseException:
        sys.stderr.write("\n".join(line for _, line in logs.lines[-100:]))
        stack.stop()
        launcher.close()
        raise
    signer = TokenSigner.from_keys_dir(area / "keys", "operator")
    port = stack.settings.port_of("sandbox")
    pod = SandboxPod(
        stack, stack.settings.url_of("sandbox"), port, policy, signer.sign("sandbox", 600), logs
    )
    return pod, launcher


@pytest.fixture(scope="module")
def sandbox_pod(pod_area: Path) -> Iterator[SandboxPod]:
    pod, launcher = _start(pod_area, "working", masked_proc=False)
    yield pod
    pod.stack.stop()
    launcher.close()


@pytest.fixture(scope="module")
def masked_pod(pod_area: Path) -> Iterator[SandboxPod]:
    pod, launcher = _start(pod_area, "masked", masked_proc=True)
    yield pod
    pod.stack.stop()
    launcher.close()


# ----------------------------------------------------------------- the live pod


def test_a_working_pod_is_ready_and_runs_tools(sandbox_pod: SandboxPod) -> None:
    probe = sandbox_pod.readiness()
    assert probe.returncode == 0, probe.stdout + probe.stderr
    isolation = sandbox_pod.health()["isolation"]
    assert isolation["userns"]["active"] and isolation["mountns"]["active"]
    answer = sandbox_pod.run("python", "print(6 * 7)")
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"]["stdout"].strip() == "42"


def test_a_pod_with_a_masked_proc_is_not_ready_and_refuses_runs(masked_pod: SandboxPod) -> None:
    health = masked_pod.health()
    assert health["status"] == "ok"  # the contract: /health answers; the report says why
    mountns = health["isolation"]["mountns"]
    assert mountns["active"] is False
    assert "/proc" in mountns["reason"] and "masked" in mountns["reason"], mountns
    answer = masked_pod.run("python", "print(1)")
    assert answer.status_code == 503, answer.text
    assert "mountns" in answer.text
    probe = masked_pod.readiness()
    assert probe.returncode == 1, probe.stdout + probe.stderr
    assert "layer mountns" in probe.stdout and "masked" in probe.stdout, probe.stdout


def test_the_config_map_swap_reloads_the_policy(sandbox_pod: SandboxPod) -> None:
    before = sandbox_pod.policy_version()
    assert sandbox_pod.run("shout").status_code == 404
    edited = DEFAULT_POLICY.read_text().replace(
        "[tools.python]",
        '[tools.shout]\nargv = ["/bin/echo", "policy swapped"]\ncode = "none"\n\n[tools.python]',
    )
    assert edited != DEFAULT_POLICY.read_text()
    started = time.monotonic()
    sandbox_pod.policy.publish({"sandbox.toml": edited})
    while sandbox_pod.policy_version() == before:
        assert time.monotonic() - started < RELOAD_DEADLINE_SECONDS, "the swap was not seen"
        time.sleep(0.1)
    elapsed = time.monotonic() - started
    print(f"ConfigMap symlink swap: new policy in force after {elapsed:.2f} s")
    answer = sandbox_pod.run("shout")
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"]["stdout"].strip() == "policy swapped"
    assert sandbox_pod.readiness().returncode == 0


def test_an_invalid_config_map_keeps_the_last_good_policy_and_the_pod_ready(
    sandbox_pod: SandboxPod,
) -> None:
    good = sandbox_pod.policy_version()
    sandbox_pod.policy.publish({"sandbox.toml": "[sandbox\nthis is not TOML"})
    deadline = time.monotonic() + RELOAD_DEADLINE_SECONDS
    while not sandbox_pod.health()["policy"]["last_edit_refused"]:
        assert time.monotonic() < deadline, "the invalid policy was not noticed"
        time.sleep(0.1)
    assert sandbox_pod.policy_version() == good
    probe = sandbox_pod.readiness()
    assert probe.returncode == 0, probe.stdout
    assert sandbox_pod.run("python", "print('still')").status_code == 200
    sandbox_pod.policy.publish({"sandbox.toml": DEFAULT_POLICY.read_text()})


# ----------------------------------------------------------- ready.py on its own


def _health(inactive: dict[str, str] | None = None, writable: bool = True) -> dict[str, Any]:
    inactive = inactive or {}
    isolation: dict[str, Any] = {
        name: {
            "active": name not in inactive,
            **({"reason": inactive[name]} if name in inactive else {}),
        }
        for name in LAYERS
    }
    isolation["warm_path"] = {"state": "ready"}
    return {"status": "ok", "isolation": isolation, "audit": {"writable": writable}}


def test_ready_uses_the_sandboxs_own_defaults() -> None:
    reported = set(LAYERS)
    assert ready.required_layers({}, reported) == set(DEFAULT_REQUIRED_LAYERS)
    assert ready.STRUCTURAL_LAYERS == set(LAYERS) - OPTIONAL_LAYERS


@pytest.mark.parametrize(
    ("policy", "inactive", "writable", "missing"),
    [
        ({}, {}, True, []),
        ({}, {"cgroup": "no writable hierarchy"}, True, []),
        ({}, {"landlock": "ENOSYS"}, True, ["layer landlock: ENOSYS"]),
        ({"sandbox": {"required_layers": ["seccomp"]}}, {"landlock": "x"}, True, []),
        ({"sandbox": {"required_layers": ["cgroup"]}}, {"cgroup": "none"}, True, ["layer cgroup"]),
        # Whatever the policy says, nothing runs without the jail's structure.
        ({"sandbox": {"required_layers": []}}, {"pidns": "EPERM"}, True, ["layer pidns"]),
        # An unreadable policy: the sandbox keeps its last good one; judge the structure only.
        (None, {"landlock": "x"}, True, []),
        (None, {"mountns": "masked"}, True, ["layer mountns"]),
        ({"sandbox": {"required_layers": "all"}}, {"landlock": "x"}, True, []),
        ({}, {}, False, ["audit file not writable"]),
    ],
)
def test_ready_judges_the_layers_the_policy_requires(
    policy: dict[str, Any] | None, inactive: dict[str, str], writable: bool, missing: list[str]
) -> None:
    found = ready.problems(_health(inactive, writable), policy)
    assert len(found) == len(missing), found
    for expected, problem in zip(sorted(missing), sorted(found), strict=True):
        assert problem.startswith(expected), found


def test_ready_fails_when_health_does_not_answer(tmp_path: Path) -> None:
    from testing.stack import free_port

    probe = subprocess.run(
        [sys.executable, "-I", str(READY_SCRIPT)],
        env={
            "RUST_SANDBOX_PORT": str(free_port()),
            "PAGI_SANDBOX_POLICY": str(DEFAULT_POLICY),
        },
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert probe.returncode == 1
    assert probe.stdout.startswith("not ready: GET /health")
