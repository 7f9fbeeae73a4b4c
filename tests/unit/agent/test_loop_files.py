"""Files in agent runs: the model is told which tools take and return files, may pass text
files to a tool that takes them, sees the names and sizes of the files a call returned, and the
run's record keeps their contents within the run's file budget (and memory's size)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib

from agent.run_store import fit_document
from agent.sandbox_calls import SandboxTool
from tests.unit.agent.loop_fakes import (
    DEMO,
    LIMITS,
    FakeSandbox,
    ScriptedDecider,
    answer,
    calls,
    make_run,
    ok,
    tool_messages,
)

DATA = SandboxTool(
    "python-data",
    "Runs Python with pandas.",
    takes_code=True,
    max_code_bytes=65536,
    input_files=4,
    input_bytes=1024,
    output_files=16,
)


def returned(path: str, data: bytes) -> dict[str, object]:
    return {
        "path": path,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "content": base64.b64encode(data).decode(),
        "truncated": False,
        "skipped": None,
    }


def with_files(*entries: dict[str, object]):
    return lambda tool, code: ok("done\n", files=list(entries))


async def test_the_model_is_told_which_tools_take_and_return_files() -> None:
    decider = ScriptedDecider(lambda conversation, number: answer("nothing to do"))
    await make_run(decider, FakeSandbox(tools=[DATA, DEMO])).run.run()
    data, demo = decider.seen[0].tools
    assert "Takes up to 4 input files" in data.description
    assert "out/" in data.description and "up to 16" in data.description
    assert data.parameters["properties"]["files"]["maxItems"] == 4
    assert data.parameters["required"] == ["code"]  # files are optional
    assert "files" not in demo.parameters["properties"] and "out/" not in demo.description


async def test_files_go_in_and_the_returned_ones_are_kept_with_the_run() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(100)
    call = {"code": "plot()", "files": [{"path": "data/sales.csv", "text": "a,b\n1,2\n"}]}
    decider = ScriptedDecider(
        lambda conversation, number: calls(("python-data", call)) if number == 0 else answer("ok")
    )
    sandbox = FakeSandbox(
        tools=[DATA],
        outcome=with_files(
            returned("out/plot.png", png), {"path": "out/link", "size": 3, "skipped": "symlink"}
        ),
    )
    record = await make_run(decider, sandbox).run.run()
    [[given]] = sandbox.files
    assert (given.path, given.data) == ("data/sales.csv", b"a,b\n1,2\n")
    files = record.steps[0].calls[0].result.files
    assert [(f.path, f.skipped) for f in files] == [("out/plot.png", None), ("out/link", "symlink")]
    assert base64.b64decode(files[0].content or "") == png
    # The model sees names and sizes, never the contents.
    [seen] = tool_messages(decider.seen[1])
    assert seen["files"] == [
        {"path": "out/plot.png", "size": len(png)},
        {"path": "out/link", "size": 3, "skipped": "symlink"},
    ]


async def test_a_run_keeps_file_contents_only_within_its_budget() -> None:
    limits = dataclasses.replace(LIMITS, file_bytes=150)
    decider = ScriptedDecider(
        lambda conversation, number: (
            calls(("python-data", {"code": f"n={number}"})) if number < 2 else answer("ok")
        )
    )
    sandbox = FakeSandbox(tools=[DATA], outcome=with_files(returned("out/a", bytes(100))))
    record = await make_run(decider, sandbox, limits=limits).run.run()
    first, second = (step.calls[0].result.files[0] for step in record.steps[:2])
    assert first.content is not None and not first.truncated
    assert second.content is None and second.truncated and second.size == 100


async def test_bad_files_arguments_are_refused_and_never_run() -> None:
    bad = {"code": "x", "files": [{"path": "a", "content": "not text"}]}
    decider = ScriptedDecider(
        lambda conversation, number: (
            calls(("python-data", bad), ("python", {"code": "1", "files": []}))
            if number == 0
            else answer("ok")
        )
    )
    python = SandboxTool("python", "Runs Python.", takes_code=True, max_code_bytes=100)
    sandbox = FakeSandbox(tools=[DATA, python])
    record = await make_run(decider, sandbox).run.run()
    results = [c.result for c in record.steps[0].calls]
    assert [r.error_kind for r in results] == ["bad_arguments", "bad_arguments"]
    assert sandbox.runs == []


async def test_memory_gets_the_file_names_when_their_contents_do_not_fit() -> None:
    decider = ScriptedDecider(
        lambda conversation, number: (
            calls(("python-data", {"code": "x"})) if number == 0 else answer("ok")
        )
    )
    sandbox = FakeSandbox(tools=[DATA], outcome=with_files(returned("out/big", bytes(50_000))))
    run = await make_run(decider, sandbox).run.run()
    assert run.steps[0].calls[0].result.files[0].content is not None
    document = fit_document(run, 20_000)
    [entry] = document["steps"][0]["calls"][0]["result"]["files"]
    assert entry["content"] is None and entry["truncated"] is True
    assert entry["path"] == "out/big" and entry["size"] == 50_000 and entry["sha256"]
    assert fit_document(run, 1 << 20)["steps"][0]["calls"][0]["result"]["files"][0]["content"]
