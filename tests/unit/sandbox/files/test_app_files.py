"""Files and package environments through the sandbox app (with a stand-in runner): input files
reach the run after the code file, every refusal is a 4xx JSON naming the file and the rule and
is audited without content, and a tool whose environment is not usable is refused with 503
naming it, hidden from the tool list, and shown at /health."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from sandbox.files_out import CollectedFile, OutputCollection
from sandbox.package_envs import definitions
from sandbox.spec import RunResult
from tests.unit.sandbox.files.envs import TINY_POLICY, build_tiny
from tests.unit.sandbox.test_app import FakeRunner

REPO = Path(__file__).resolve().parents[4]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class MountingRunner(FakeRunner):
    """A stand-in for a runner that can mount package environments."""

    def package_env_mount_problem(self, path: str) -> str | None:
        return None


async def test_input_files_reach_the_run_after_the_code_file(make_service, token_for):
    async with make_service() as svc:
        agent = token_for("sandbox", sub="agent")
        answer = await svc.execute(
            agent,
            tool_name="python",
            code="print(open('data.csv').read())",
            files=[
                {"path": "data.csv", "content": b64(b"a,b\n1,2\n")},
                {"path": "./in//raw.bin", "content": b64(bytes(range(256)))},
            ],
        )
        assert answer.status_code == 200, answer.text
        [spec] = svc.runner.specs
        assert list(spec.files) == ["main.py", "data.csv", "in/raw.bin"]
        assert spec.files["data.csv"] == b"a,b\n1,2\n"
        assert spec.files["in/raw.bin"] == bytes(range(256))


async def test_a_file_as_large_as_the_tool_takes_fits_the_body_limit(make_service, token_for):
    policy = TINY_POLICY + '\n[tools.plain.files]\ninput_bytes = "12 MiB"\n'
    async with make_service(policy) as svc:
        big = bytes(12 * 1024 * 1024)
        answer = await svc.execute(
            token_for("sandbox"),
            tool_name="plain",
            files=[{"path": "big.bin", "content": b64(big)}],
        )
        assert answer.status_code == 200, answer.text
        assert svc.runner.specs[0].files["big.bin"] == big


@pytest.mark.parametrize(
    ("files", "status", "error", "rule"),
    [
        ([{"path": "../etc/passwd", "content": ""}], 400, "invalid_file_path", "dotdot"),
        ([{"path": "/etc/passwd", "content": ""}], 400, "invalid_file_path", "absolute"),
        ([{"path": "main.py", "content": ""}], 400, "invalid_file_path", "reserved"),
        ([{"path": "out/x", "content": ""}], 400, "invalid_file_path", "reserved"),
        (
            [{"path": "a.csv", "content": ""}, {"path": "./a.csv", "content": ""}],
            400,
            "invalid_file_path",
            "duplicate",
        ),
        ([{"path": "a.csv", "content": "not base64!"}], 400, "invalid_file_content", "base64"),
        ([{"path": f"f{i}", "content": ""} for i in range(17)], 413, "too_many_files", None),
        (
            [{"path": "big", "content": b64(bytes(1024 * 1024 + 1))}],
            413,
            "files_too_large",
            None,
        ),
    ],
)
async def test_each_refusal_is_a_json_4xx_naming_file_and_rule_and_is_audited(
    make_service, token_for, files, status, error, rule
):
    async with make_service() as svc:
        answer = await svc.execute(
            token_for("sandbox"), tool_name="python", code="pass", files=files
        )
        assert answer.status_code == status, answer.text
        body = answer.json()
        assert body["error"] == error and body["request_id"]
        if rule is not None:
            assert body["rule"] == rule and "file" in body and "index" in body
        assert svc.runner.specs == []
        [record] = svc.audit_records()
        assert (record["decision"], record["status"]) == ("refused", status)
        assert record["reason"] == body["detail"]


@pytest.mark.parametrize(
    "files",
    [
        "data.csv",
        [{"path": 1, "content": ""}],
        [{"path": "a"}],
        [{"path": "a", "content": "", "mode": "0777"}],
        [["a", ""]],
    ],
)
async def test_malformed_files_are_422(make_service, token_for, files):
    async with make_service() as svc:
        answer = await svc.execute(token_for("sandbox"), tool_name="python", code="1", files=files)
        assert answer.status_code == 422 and answer.json()["error"] == "invalid_request"


async def test_the_audit_lists_files_in_by_name_size_and_hash_never_content(
    make_service, token_for
):
    content = b"confidential-column\n" + b"0123456789" * 50
    async with make_service() as svc:
        await svc.execute(
            token_for("sandbox"),
            tool_name="python",
            code="pass",
            files=[{"path": "secret/data.csv", "content": b64(content)}],
        )
        [record] = svc.audit_records()
        assert record["files_in"] == {
            "count": 1,
            "bytes": len(content),
            "files": [
                {
                    "path": "secret/data.csv",
                    "size": len(content),
                    "sha256": hashlib.sha256(content).hexdigest(),
                }
            ],
        }
        assert record["files_out"] is None  # nothing collected yet
        text = svc.settings.audit_log_path.read_text()
        assert "confidential-column" not in text and b64(content)[:40] not in text


async def test_a_tool_taking_no_files_refuses_them(make_service, token_for):
    policy = TINY_POLICY + "\n[tools.plain.files]\ninput_files = 0\n"
    async with make_service(policy) as svc:
        answer = await svc.execute(
            token_for("sandbox"), tool_name="plain", files=[{"path": "a", "content": ""}]
        )
        assert answer.status_code == 400 and answer.json()["error"] == "files_not_accepted"


# --------------------------------------------------------------------------- environments


async def test_python_data_is_refused_naming_its_environment_and_hidden_from_the_tools(
    make_service, token_for
):
    async with make_service() as svc:
        await svc.sandbox.envs.refresh()
        agent = token_for("sandbox", sub="agent")
        answer = await svc.execute(agent, tool_name="python-data", code="import pandas")
        assert answer.status_code == 503
        body = answer.json()
        assert body["error"] == "package_env_unavailable" and body["package_env"] == "data"
        assert "'data'" in body["detail"] and "python-data" in body["detail"]
        assert svc.runner.specs == []
        [record] = svc.audit_records()
        assert (record["decision"], record["status"]) == ("refused", 503)
        listed = await svc.client.get("/api/v1/tools", headers={"Authorization": f"Bearer {agent}"})
        assert [t["name"] for t in listed.json()["tools"]] == ["demo", "python"]
        health = (await svc.client.get("/health")).json()
        assert health["package_envs"]["data"]["state"] in ("missing", "broken")
        assert health["package_envs"]["data"]["tools"] == ["python-data"]


async def test_the_default_policy_copied_with_its_envs_shows_data_missing(
    make_service, token_for, tmp_path
):
    shutil.copytree(REPO / "policies" / "envs", tmp_path / "policy" / "envs")
    async with make_service() as svc:
        await svc.sandbox.envs.refresh()
        data = (await svc.client.get("/health")).json()["package_envs"]["data"]
        assert data["state"] == "missing" and "pagi env build data" in data["reason"]
        answer = await svc.execute(token_for("sandbox"), tool_name="python-data", code="1")
        assert answer.status_code == 503 and answer.json()["state"] == "missing"


async def test_a_ready_environment_runs_only_with_a_runner_that_mounts_it(
    make_service, token_for, tmp_path
):
    policy_dir = tmp_path / "policy"
    state = build_tiny(policy_dir, tmp_path / "state" / "sandbox-envs")
    assert state.ready, state.reason
    async with make_service(TINY_POLICY) as svc:
        await svc.sandbox.envs.refresh()
        assert (await svc.client.get("/health")).json()["package_envs"]["tiny"]["state"] == "ready"
        refused = await svc.execute(token_for("sandbox"), tool_name="tiny", code="1")
        assert refused.status_code == 503 and "cannot be mounted" in refused.json()["detail"]
    async with make_service(TINY_POLICY, runner=MountingRunner()) as svc:
        await svc.sandbox.envs.refresh()
        ran = await svc.execute(token_for("sandbox"), tool_name="tiny", code="1")
        assert ran.status_code == 200, ran.text
        agent = token_for("sandbox", sub="agent")
        listed = await svc.client.get("/api/v1/tools", headers={"Authorization": f"Bearer {agent}"})
        assert [t["name"] for t in listed.json()["tools"]] == ["plain", "tiny"]


async def test_the_service_notices_an_environment_built_or_removed_while_it_runs(
    make_service, tmp_path
):
    policy_dir = tmp_path / "policy"
    envs_dir = tmp_path / "state" / "sandbox-envs"
    async with make_service(TINY_POLICY, runner=MountingRunner()) as svc:
        (policy_dir / "envs").mkdir()
        (policy_dir / "envs" / "tiny.txt").write_text("# empty lock\n")
        envs = svc.sandbox.envs
        await envs.refresh(only_changed=True)
        assert envs.state("tiny").status == "missing"
        built = build_tiny(policy_dir, envs_dir)
        await envs.refresh(only_changed=True)
        assert envs.state("tiny").status == "ready" and envs.state("tiny").path == built.path
        shutil.rmtree(built.path)
        await envs.refresh(only_changed=True)
        assert envs.state("tiny").status == "missing"
        [definition] = definitions(svc.store.current).values()
        assert definition.requirements == policy_dir / "envs" / "tiny.txt"


async def test_the_files_a_run_left_are_in_the_answer_and_named_in_the_audit(
    make_service, token_for
):
    collected = OutputCollection(
        (
            CollectedFile("out/plot.png", 4, b"\x89PNG", hashlib.sha256(b"\x89PNG").hexdigest()),
            CollectedFile("out/big.csv", 10_000_000, truncated=True),
            CollectedFile("out/link", 11, skipped="symlink"),
        )
    )
    async with make_service() as svc:
        svc.runner.result = RunResult(
            stdout="", stderr="", exit_code=0, duration_ms=1.0, files=collected
        )
        answer = await svc.execute(token_for("sandbox", sub="agent"), tool_name="python", code="1")
        assert answer.status_code == 200, answer.text
        [spec] = svc.runner.specs
        assert spec.outputs is not None and spec.outputs.files == 16
        files = answer.json()["result"]["files"]
        assert [(f["path"], f["content"], f["truncated"], f["skipped"]) for f in files] == [
            ("out/plot.png", b64(b"\x89PNG"), False, None),
            ("out/big.csv", None, True, None),
            ("out/link", None, False, "symlink"),
        ]
        [record] = svc.audit_records()
        assert record["files_out"]["returned"] == 1 and record["files_out"]["count"] == 3
        assert "iVBO" not in json.dumps(record) and b64(b"\x89PNG") not in json.dumps(record)
