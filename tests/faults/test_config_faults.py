"""The policy file and the keys dir vanishing or turning unreadable at runtime.

A running service keeps the last good state (the policy in force, the keys
it loaded) and says what is wrong; a service (re)started without them
refuses with a clear message, not a traceback; once they are back, all is
well again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pagi import SERVICES
from pagi.auth import TokenSigner, generate_keys
from pagi.stack import Stack
from testing.live import recent_logs, start_live_stack, wait_until
from testing.stack import REPO, stack_env

POLICY_POLL_SECONDS = 5.0
"""The sandbox notices a change within about a second; polling covers missed events."""


@pytest.fixture
def policy_sandbox(tmp_path: Path, keys_dir: Path) -> Iterator[tuple[Stack, Path]]:
    policy = tmp_path / "policy" / "sandbox.toml"
    policy.parent.mkdir()
    shutil.copy(REPO / "policies" / "sandbox.toml", policy)
    stack = start_live_stack(
        tmp_path / "state", keys_dir, services=["sandbox"], PAGI_SANDBOX_POLICY=str(policy)
    )
    yield stack, policy
    stack.stop()


def _policy_status(base_url: str, token: str) -> dict:
    response = httpx.get(
        f"{base_url}/api/v1/policy", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()


def _run(base_url: str, token: str) -> httpx.Response:
    return httpx.post(
        f"{base_url}/api/v1/execute_tool",
        json={"tool_name": "python", "code": "print(6 * 7)"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=20,
    )


def test_policy_vanishing_keeps_the_last_good_version(policy_sandbox, token_for):
    stack, policy = policy_sandbox
    base_url = stack.settings.url_of("sandbox")
    token = token_for("sandbox")
    good = _policy_status(base_url, token)
    assert good["last_error"] is None, good
    original = policy.read_text()

    hidden = policy.with_suffix(".away")
    breakages = {
        "removed": lambda: policy.rename(hidden),
        "garbage": lambda: policy.write_text("[sandbox\nthis is = not toml ]]]"),
        "a directory": lambda: (policy.unlink(), policy.mkdir()),
        "invalid limits": lambda: policy.write_text(
            original.replace("wall_seconds = 5", "wall_seconds = 100000")
        ),
    }
    undo = {
        "removed": lambda: hidden.rename(policy),
        "garbage": lambda: policy.write_text(original),
        "a directory": lambda: (policy.rmdir(), policy.write_text(original)),
        "invalid limits": lambda: policy.write_text(original),
    }
    for what, breakage in breakages.items():
        breakage()
        try:
            noticed = wait_until(
                lambda: _policy_status(base_url, token)["last_error"] is not None,
                POLICY_POLL_SECONDS,
            )
            status = _policy_status(base_url, token)
            run = _run(base_url, token)
        finally:
            undo[what]()
        assert noticed, f"policy {what}: no error reported: {status}"
        assert status["version"] == good["version"], f"policy {what}: version changed: {status}"
        assert run.status_code == 200, f"policy {what}: {run.text}"
        assert run.json()["result"]["stdout"] == "42\n", run.text
        healed = wait_until(
            lambda: _policy_status(base_url, token)["last_error"] is None, POLICY_POLL_SECONDS
        )
        assert healed, f"policy {what}: error still shown after the file came back"


def _service_output(service: str, env: dict[str, str], timeout: float = 30) -> tuple[int, str]:
    """Run ``python -m service`` until it exits; its exit code and output."""
    result = subprocess.run(
        [sys.executable, "-m", service],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result.returncode, result.stdout + result.stderr


def test_missing_policy_is_a_clear_message_not_a_traceback(tmp_path: Path, keys_dir: Path):
    env = stack_env(tmp_path / "state", keys_dir, PAGI_SANDBOX_POLICY=str(tmp_path / "none.toml"))
    code, output = _service_output("sandbox", env)
    assert code != 0, output
    assert "none.toml" in output, output
    assert "Traceback" not in output, output


# --------------------------------------------------------------------------- keys


@pytest.fixture
def own_keys(tmp_path: Path) -> Path:
    """A keys dir of this test's own (the session's shared one must not move)."""
    path = tmp_path / "keys"
    generate_keys(path)
    return path


def test_keys_dir_vanishing_keeps_services_serving(tmp_path: Path, own_keys: Path):
    stack = start_live_stack(
        tmp_path / "state",
        own_keys,
        services=["gateway", "memory", "agent", "bff"],
        REQUEST_TIMEOUT_SECONDS="2",
    )
    try:
        operator = TokenSigner.from_keys_dir(own_keys, "operator")
        settings = stack.settings
        hidden = own_keys.with_name("keys.away")
        own_keys.rename(hidden)
        try:
            time.sleep(1.0)
            plan = httpx.post(
                f"{settings.url_of('agent')}/api/v1/plan",
                json={"prompt": "count the disks"},
                headers={"Authorization": f"Bearer {operator.sign('agent')}"},
                timeout=20,
            )
            latest = httpx.get(
                f"{settings.url_of('memory')}/memory/latest",
                headers={"Authorization": f"Bearer {operator.sign('memory')}"},
                timeout=20,
            )
            stack.stop_service("memory")
        finally:
            hidden.rename(own_keys)
        assert plan.status_code == 200, plan.text
        assert plan.json()["bff_echo"].get("service") == "bff", plan.text
        assert latest.status_code == 200, latest.text

        stack.start_service("memory")
        stack.wait_healthy("memory")
        again = httpx.get(
            f"{settings.url_of('memory')}/memory/latest",
            headers={"Authorization": f"Bearer {operator.sign('memory')}"},
            timeout=20,
        )
        assert again.status_code == 200, f"{again.text}\n{recent_logs(stack, 'memory')}"
    finally:
        stack.stop()


@pytest.mark.parametrize("service", SERVICES)
def test_service_without_keys_exits_with_a_message(tmp_path: Path, service: str):
    missing = tmp_path / "no-keys"
    code, output = _service_output(service, stack_env(tmp_path / "state", missing))
    assert code != 0, f"{service} started without keys:\n{output}"
    assert str(missing) in output, output
    assert "Traceback" not in output, f"a traceback instead of a message:\n{output}"


def test_cli_token_without_keys_is_a_clear_message(tmp_path: Path):
    env = {**os.environ, "PAGI_KEYS_DIR": str(tmp_path / "no-keys")}
    result = subprocess.run(
        [sys.executable, "-m", "cli", "token", "--aud", "sandbox"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "keys" in output.lower(), output
    assert "Traceback" not in output, output
