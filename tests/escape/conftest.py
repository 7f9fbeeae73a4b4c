"""One real sandbox per execution path (cold, warm) and jail mode for the whole escape suite.

Modes: ``root`` (the service runs as root, as on this test machine) and
``unprivileged`` (the service runs as uid 10001 with no capability, as in
the hardened container; see :mod:`tests.escape.unprivileged`). Every test
runs against each of the four, and against the ``python-data`` tool (warm,
root: its package environment mounted, its runs forked from a zygote with
numpy, pandas and matplotlib loaded; the environment is built into the
tests' cache, ``PAGI_TEST_ENVS_DIR``, when missing).

Everything an attack may go after lives in a world-readable area under /tmp,
so that only the jail's layers (not file modes) can stand in the way: the
service's keys (private keys readable by all), its policy and state dir, a
host secret, a world-writable host file and dir, and host sockets.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pagi import SERVICES
from pagi.auth import TokenSigner, generate_keys
from pagi.stack import Stack
from sandbox.package_envs import build, definitions
from sandbox.policy import load_policy
from sandbox.settings import base_python_executable
from testing.stack import REPO, LogCollector, stack_env
from tests.escape.harness import HostFiles, HostListeners, SandboxUnderTest
from tests.escape.unprivileged import UnprivilegedLauncher, UnprivilegedStack, give_to_unprivileged

EXECUTION_PATHS = ("cold", "warm")
JAIL_MODES = ("root", "unprivileged")
SANDBOXES = [(path, mode, "python") for mode in JAIL_MODES for path in EXECUTION_PATHS]
SANDBOXES.append(("warm", "root", "python-data"))
ENVS_DIR = Path(os.environ.get("PAGI_TEST_ENVS_DIR", Path.home() / ".cache" / "pagi" / "test-envs"))
POLICY_SOURCE = REPO / "policies" / "sandbox.toml"

LAYER_LOG: list[tuple[str, str, str, str]] = []
"""(path, attack id, family, layers) of every attack judged, for the summary."""


def policy_with_executor(source: Path, executor: str) -> str:
    """The default policy text with the python tool's ``executor`` set."""
    text = source.read_text()
    section = re.search(r"^\[tools\.python\]\n(?:(?!^\[).*\n)*", text, re.MULTILINE)
    assert section is not None, f"{source} has no [tools.python] table"
    body = section.group(0)
    if re.search(r"^executor\s*=", body, re.MULTILINE):
        body = re.sub(r"^executor\s*=.*$", f'executor = "{executor}"', body, flags=re.MULTILINE)
    else:
        body = body.replace("[tools.python]\n", f'[tools.python]\nexecutor = "{executor}"\n', 1)
    return text[: section.start()] + body + text[section.end() :]


def wait_for_env(client: httpx.Client, url: str) -> None:
    """Until the sandbox has checked the data environment and found it ready."""
    for _ in range(600):
        envs = client.get(f"{url}/health").json()["package_envs"]
        if envs["data"]["state"] == "ready":
            return
        time.sleep(0.1)
    raise AssertionError(f"the data environment is not ready: {envs['data']}")


def writable_cgroups() -> bool:
    """Whether a root service here finds a cgroup hierarchy it may make groups in."""
    root = Path("/sys/fs/cgroup")
    v1 = (root / "memory" / "tasks").exists() and (root / "pids" / "tasks").exists()
    v2 = (root / "cgroup.controllers").exists()
    return (v1 or v2) and os.geteuid() == 0 and os.access(root / ("memory" if v1 else ""), os.W_OK)


@pytest.fixture(scope="session")
def escape_area() -> Iterator[Path]:
    """A world-readable scratch area on the host, removed at the end."""
    base = Path(tempfile.mkdtemp(prefix="pagi-escape-", dir="/tmp"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def escape_keys(escape_area: Path) -> Path:
    """A keys dir whose private keys any uid could read: only the jail protects them."""
    keys = escape_area / "keys"
    generate_keys(keys)
    keys.chmod(0o755)
    for key in keys.iterdir():
        key.chmod(0o644)
    return keys


@pytest.fixture(scope="session")
def host_files(escape_area: Path) -> HostFiles:
    """A host secret to steal and a world-writable host file to tamper with."""
    return HostFiles(escape_area / "host")


@pytest.fixture(scope="session")
def host_listeners(escape_area: Path) -> Iterator[HostListeners]:
    """Host sockets (unix path, abstract unix, UDP, TCP) that count what reaches them."""
    listeners = HostListeners(escape_area / "host")
    yield listeners
    listeners.close()


@pytest.fixture(
    scope="session",
    params=SANDBOXES,
    ids=[f"{p}-{m}" if t == "python" else f"{t}-{p}-{m}" for p, m, t in SANDBOXES],
)
def sandbox(
    request: pytest.FixtureRequest,
    escape_area: Path,
    escape_keys: Path,
    host_files: HostFiles,
    host_listeners: HostListeners,
) -> Iterator[SandboxUnderTest]:
    """A running sandbox service: cold or warm python executor, root or unprivileged jail."""
    path, mode, tool = request.param
    area = escape_area / f"{tool}-{path}-{mode}"
    (area / "policy").mkdir(parents=True)
    policy = area / "policy" / "sandbox.toml"
    policy.write_text(policy_with_executor(POLICY_SOURCE, path))
    shutil.copytree(POLICY_SOURCE.parent / "envs", area / "policy" / "envs")
    env = stack_env(area / "state", escape_keys, PAGI_SANDBOX_POLICY=str(policy))
    interpreter = env.get("PAGI_SANDBOX_PYTHON") or base_python_executable()
    if tool != "python":
        definition = definitions(load_policy(policy))["data"]
        built = build(definition, ENVS_DIR, interpreter, quiet=True, echo=lambda _: None)
        assert built.ready, built.reason
        env["PAGI_SANDBOX_ENVS_DIR"] = str(ENVS_DIR)
    logs = LogCollector()
    launcher: UnprivilegedLauncher | None = None
    if mode == "unprivileged":
        launcher = UnprivilegedLauncher()
        give_to_unprivileged(area / "state")
        stack: Stack = UnprivilegedStack(env=env, services=["sandbox"], cwd=REPO, sink=logs)
        stack.launcher = launcher  # type: ignore[attr-defined]
    else:
        stack = Stack(env=env, services=["sandbox"], cwd=REPO, sink=logs)
    client = httpx.Client(timeout=60, trust_env=False)
    try:
        stack.start(timeout=60)
        settings = stack.settings
        signer = TokenSigner.from_keys_dir(escape_keys, "operator")
        under_test = SandboxUnderTest(
            path=path,
            url=settings.url_of("sandbox"),
            token=lambda: signer.sign("sandbox", ttl=300),
            limits=load_policy(policy).limits[tool],
            keys_dir=escape_keys,
            state_dir=area / "state",
            policy_path=policy,
            repo=REPO,
            service_pid=stack.processes["sandbox"].process.pid,
            pagi_ports=sorted({settings.port_of(name) for name in SERVICES}),
            sandbox_port=settings.port_of("sandbox"),
            host_files=host_files,
            listeners=host_listeners,
            client=client,
            stack=stack,
            logs=logs,
            mode=mode,
            interpreter=os.path.realpath(interpreter),
            tool=tool,
            cgroup_delegated=bool(launcher.cgroups) if launcher else writable_cgroups(),
        )
        if tool != "python":
            wait_for_env(client, under_test.url)
        idle = under_test.run('print("idle")')
        under_test.baseline_refusals = idle.refusals
        under_test.baseline_denials = idle.denials
    except BaseException:
        sys.stderr.write("\n".join(f"{name}| {line}" for name, line in logs.lines[-200:]))
        client.close()
        stack.stop()
        if launcher is not None:
            launcher.close()
        raise
    try:
        yield under_test
    finally:
        client.close()
        stack.stop()
        if launcher is not None:
            launcher.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the catalogue: which layer stopped which attack, per execution path."""
    if not LAYER_LOG:
        return
    terminalreporter.section("escape catalogue: attack -> layer that stopped it")
    for path, attack_id, family, layers in sorted(LAYER_LOG):
        terminalreporter.write_line(f"{path:<18} {family:<12} {attack_id:<34} {layers}")
