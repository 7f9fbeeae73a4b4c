"""The compose stack's one-shot key set-up: each identity gets only its own private key."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from pagi import IDENTITIES
from pagi.auth import TokenSigner, TokenVerifier, TrustStore

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "keys" / "distribute-keys.sh"
WAIT_SCRIPT = REPO / "deploy" / "keys" / "wait-for-keys.sh"


def distribute(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "PAGI_KEYS_ROOT": str(root),
        "HOME": str(root),
    }
    return subprocess.run(
        ["sh", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_each_identity_gets_its_own_private_key_and_every_public_key(tmp_path: Path) -> None:
    result = distribute(tmp_path)
    assert result.returncode == 0, result.stderr
    for identity in IDENTITIES:
        folder = tmp_path / identity
        private = sorted(p.name for p in folder.glob("*.key"))
        assert private == [f"{identity}.key"]
        assert sorted(p.name for p in folder.glob("*.pub")) == sorted(
            f"{name}.pub" for name in IDENTITIES
        )
        assert stat.S_IMODE((folder / f"{identity}.key").stat().st_mode) == 0o600
        assert (folder / ".complete").exists()


def test_a_distributed_key_signs_tokens_the_others_accept(tmp_path: Path) -> None:
    assert distribute(tmp_path).returncode == 0
    token = TokenSigner.from_keys_dir(tmp_path / "operator", "operator").sign("sandbox", ttl=60)
    verifier = TokenVerifier("sandbox", TrustStore.from_keys_dir(tmp_path / "sandbox"))
    assert verifier.verify(token).subject == "operator"


def test_rerun_keeps_keys_and_removes_stray_files(tmp_path: Path) -> None:
    assert distribute(tmp_path).returncode == 0
    before = (tmp_path / "all" / "agent.key").read_bytes()
    stray = tmp_path / "agent" / "sandbox.key"
    stray.write_text("not agent's")
    assert distribute(tmp_path).returncode == 0
    assert (tmp_path / "agent" / "agent.key").read_bytes() == before
    assert not stray.exists()


def test_force_rotates_every_key(tmp_path: Path) -> None:
    assert distribute(tmp_path).returncode == 0
    before = (tmp_path / "bff" / "bff.key").read_bytes()
    assert distribute(tmp_path, "--force").returncode == 0
    assert (tmp_path / "bff" / "bff.key").read_bytes() != before


def wait_for_keys(keys_dir: Path, seconds: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "PAGI_KEYS_DIR": str(keys_dir),
        "PAGI_KEYS_WAIT_SECONDS": seconds,
    }
    return subprocess.run(
        ["sh", str(WAIT_SCRIPT), "echo", "service started"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_service_starts_once_its_keys_are_complete(tmp_path: Path) -> None:
    assert distribute(tmp_path).returncode == 0
    result = wait_for_keys(tmp_path / "agent", "5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "service started"


def test_service_gives_up_without_keys(tmp_path: Path) -> None:
    result = wait_for_keys(tmp_path, "1")
    assert result.returncode == 1
    assert "service started" not in result.stdout
    assert "no keys" in result.stderr
