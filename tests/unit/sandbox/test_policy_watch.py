"""The live policy: atomic swaps, last good kept, file watching."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from sandbox.policy import PolicyError, PolicySnapshot
from sandbox.policy.watch import PolicyStore

GOOD = """
[tools.demo]
argv = ["/bin/echo", "hi"]

[callers.bff]
tools = ["demo"]
"""

WITH_EXTRA_TOOL = (
    GOOD
    + """
[tools.date]
argv = ["/bin/date"]
"""
)


def replace_file(path: Path, text: str) -> None:
    """Write the way editors do: a new file renamed over the old one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policies" / "sandbox.toml"
    path.parent.mkdir()
    path.write_text(GOOD)
    return path


def test_open_refuses_an_invalid_policy(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[defaults]\nwall_seconds = -1\n")
    with pytest.raises(PolicyError):
        PolicyStore.open(path)


def test_valid_edit_swaps_the_snapshot(policy_file):
    store = PolicyStore.open(policy_file)
    before = store.current
    assert store.refresh() is None  # unchanged content: nothing to do
    replace_file(policy_file, WITH_EXTRA_TOOL)
    after = store.refresh()
    assert after is not None and store.current is after
    assert after.version != before.version
    assert "date" in after.document.tools
    # The old snapshot is untouched: a run that holds it keeps its rules.
    assert "date" not in before.document.tools


def test_invalid_edit_keeps_last_good_and_records_the_error(policy_file):
    store = PolicyStore.open(policy_file)
    good = store.current
    replace_file(policy_file, GOOD + "\n[defaults]\nmemory_bytes = -1\n")
    assert store.refresh() is None
    assert store.current is good
    assert store.last_error is not None
    assert "defaults.memory_bytes" in store.last_error and ":9:" in store.last_error
    replace_file(policy_file, WITH_EXTRA_TOOL)
    assert store.refresh() is not None
    assert store.last_error is None


def test_deleted_or_unreadable_file_keeps_last_good(policy_file):
    store = PolicyStore.open(policy_file)
    good = store.current
    policy_file.unlink()
    assert store.refresh() is None
    assert store.current is good and "file not found" in (store.last_error or "")
    policy_file.mkdir()  # unreadable as a file
    assert store.refresh() is None
    assert store.current is good and "directory" in (store.last_error or "")
    policy_file.rmdir()
    policy_file.write_text(GOOD)  # the same content comes back: error cleared
    assert store.refresh() is None
    assert store.last_error is None and store.current is good


def test_revoking_a_right_takes_effect_for_the_next_request(policy_file):
    store = PolicyStore.open(policy_file)
    assert store.current.caller_may_run("bff", "demo")
    replace_file(policy_file, GOOD.replace('tools = ["demo"]', "tools = []"))
    store.refresh()
    assert not store.current.caller_may_run("bff", "demo")


async def wait_for_version(store: PolicyStore, old: str, within: float) -> float:
    started = time.monotonic()
    while store.current.version == old:
        if time.monotonic() - started > within:
            raise AssertionError(f"policy not reloaded within {within} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_watcher_applies_an_edit_within_a_second_and_notifies(policy_file):
    store = PolicyStore.open(policy_file)
    seen: list[PolicySnapshot] = []

    async def listener(snapshot: PolicySnapshot) -> None:
        seen.append(snapshot)

    store.subscribe(listener)
    stop = asyncio.Event()
    watcher = asyncio.create_task(store.watch(stop))
    try:
        await asyncio.sleep(0.2)  # let the watch start
        old = store.current.version
        replace_file(policy_file, WITH_EXTRA_TOOL)
        await wait_for_version(store, old, within=1.0)
        assert [s.version for s in seen] == [store.current.version]
        # An in-place write (not a rename) is seen too.
        old = store.current.version
        policy_file.write_text(GOOD)
        await wait_for_version(store, old, within=1.0)
    finally:
        stop.set()
        await asyncio.wait_for(watcher, timeout=5)


async def test_watcher_survives_its_directory_disappearing(policy_file):
    store = PolicyStore.open(policy_file)
    stop = asyncio.Event()
    watcher = asyncio.create_task(store.watch(stop))
    try:
        await asyncio.sleep(0.2)
        directory = policy_file.parent
        policy_file.unlink()
        directory.rmdir()
        for _ in range(100):
            if store.last_error:
                break
            await asyncio.sleep(0.05)
        assert store.last_error and "file not found" in store.last_error
        old = store.current.version
        directory.mkdir()
        policy_file.write_text(WITH_EXTRA_TOOL)
        await wait_for_version(store, old, within=5.0)
        assert store.last_error is None
    finally:
        stop.set()
        await asyncio.wait_for(watcher, timeout=5)


async def test_a_failing_listener_does_not_stop_the_watcher(policy_file):
    store = PolicyStore.open(policy_file)

    async def broken(_: PolicySnapshot) -> None:
        raise RuntimeError("listener bug")

    store.subscribe(broken)
    stop = asyncio.Event()
    watcher = asyncio.create_task(store.watch(stop))
    try:
        await asyncio.sleep(0.2)
        old = store.current.version
        replace_file(policy_file, WITH_EXTRA_TOOL)
        await wait_for_version(store, old, within=1.0)
        old = store.current.version
        replace_file(policy_file, GOOD)
        await wait_for_version(store, old, within=1.0)
    finally:
        stop.set()
        await asyncio.wait_for(watcher, timeout=5)


async def test_a_slow_listener_delays_no_swap_and_ends_on_the_newest_version(policy_file):
    store = PolicyStore.open(policy_file)
    seen: list[str] = []
    busy = asyncio.Event()

    async def slow(snapshot: PolicySnapshot) -> None:
        seen.append(snapshot.version)
        busy.set()
        await asyncio.sleep(1.5)

    store.subscribe(slow)
    stop = asyncio.Event()
    watcher = asyncio.create_task(store.watch(stop))
    try:
        await asyncio.sleep(0.2)
        old = store.current.version
        replace_file(policy_file, WITH_EXTRA_TOOL)
        await wait_for_version(store, old, within=1.0)
        await asyncio.wait_for(busy.wait(), timeout=1)
        # The listener is still busy with the first edit: the next ones go live anyway.
        old = store.current.version
        replace_file(policy_file, GOOD + "# second\n")
        await wait_for_version(store, old, within=1.0)
        old = store.current.version
        replace_file(policy_file, GOOD + "# third\n")
        await wait_for_version(store, old, within=1.0)
        newest = store.current.version
        for _ in range(100):
            if seen[-1] == newest:
                break
            await asyncio.sleep(0.05)
        assert seen[-1] == newest and len(seen) == 2  # the second edit was skipped over
    finally:
        stop.set()
        await asyncio.wait_for(watcher, timeout=10)


def test_events_reach_sinks_and_a_failing_sink_changes_nothing(policy_file):
    store = PolicyStore.open(policy_file)
    events: list[dict] = []

    def broken(_: dict) -> None:
        raise RuntimeError("sink bug")

    store.on_event(broken)
    store.on_event(events.append)
    replace_file(policy_file, "[defaults]\nwall_seconds = -1\n")
    store.refresh()
    store.refresh()  # the same error again: not a new event
    replace_file(policy_file, GOOD)
    store.refresh()  # back to the version in force: the error clears
    replace_file(policy_file, WITH_EXTRA_TOOL)
    store.refresh()
    assert [e["action"] for e in events] == [
        "policy_rejected",
        "policy_error_cleared",
        "policy_reloaded",
    ]
    assert events[2]["tools"] == ["date", "demo"]
    assert store.current.tool("date") is not None
