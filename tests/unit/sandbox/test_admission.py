"""Admission: bounded concurrency, bounded FIFO queue, no slot ever leaked."""

from __future__ import annotations

import asyncio

import pytest

from sandbox.admission import Admission, AdmissionRefused


async def hold(admission: Admission, release: asyncio.Event, log: list[str], name: str) -> None:
    async with admission.slot():
        log.append(name)
        await release.wait()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_runs_up_to_the_limit_then_queue_in_order_then_refuse():
    admission = Admission(max_running=2, queue_length=2, queue_wait_seconds=5)
    release = asyncio.Event()
    started: list[str] = []
    tasks = [asyncio.create_task(hold(admission, release, started, f"r{i}")) for i in range(4)]
    await settle()
    assert started == ["r0", "r1"]
    assert admission.running == 2 and admission.queued == 2
    with pytest.raises(AdmissionRefused) as refused:
        async with admission.slot():
            pass
    assert refused.value.retry_after >= 1
    assert "queue" in refused.value.reason
    release.set()
    await asyncio.gather(*tasks)
    assert started == ["r0", "r1", "r2", "r3"]  # first come, first served
    assert admission.running == 0 and admission.queued == 0


async def test_no_queue_means_immediate_refusal():
    admission = Admission(max_running=1, queue_length=0, queue_wait_seconds=5)
    release = asyncio.Event()
    task = asyncio.create_task(hold(admission, release, [], "r0"))
    await settle()
    with pytest.raises(AdmissionRefused):
        async with admission.slot():
            pass
    release.set()
    await task


async def test_waiting_too_long_is_refused_and_frees_the_queue_place():
    admission = Admission(max_running=1, queue_length=1, queue_wait_seconds=0.05)
    release = asyncio.Event()
    task = asyncio.create_task(hold(admission, release, [], "r0"))
    await settle()
    with pytest.raises(AdmissionRefused) as refused:
        async with admission.slot():
            pass
    assert "0.05" in refused.value.reason
    assert admission.queued == 0 and admission.running == 1
    release.set()
    await task
    assert admission.running == 0


async def test_cancelled_waiter_leaks_nothing():
    admission = Admission(max_running=1, queue_length=4, queue_wait_seconds=5)
    release = asyncio.Event()
    log: list[str] = []
    first = asyncio.create_task(hold(admission, release, log, "first"))
    await settle()
    waiting = asyncio.create_task(hold(admission, release, log, "cancelled"))
    after = asyncio.create_task(hold(admission, release, log, "after"))
    await settle()
    waiting.cancel()
    await settle()
    assert admission.queued == 1
    release.set()
    await asyncio.gather(first, after)
    assert log == ["first", "after"]
    assert admission.running == 0


async def test_slot_handed_to_a_cancelled_waiter_is_passed_on():
    admission = Admission(max_running=1, queue_length=4, queue_wait_seconds=5)
    release = asyncio.Event()
    log: list[str] = []
    first = asyncio.create_task(hold(admission, release, log, "first"))
    await settle()
    second = asyncio.create_task(hold(admission, release, log, "second"))
    third = asyncio.create_task(hold(admission, release, log, "third"))
    await settle()
    release.set()
    # Cancel `second` in the same step its slot is handed over.
    await asyncio.sleep(0)
    assert log == ["first"] and admission.queued == 1  # handed over, not yet resumed
    second.cancel()
    await asyncio.gather(first, third, second, return_exceptions=True)
    assert "third" in log
    assert admission.running == 0 and admission.queued == 0


async def test_exception_inside_the_slot_releases_it():
    admission = Admission(max_running=1, queue_length=0, queue_wait_seconds=1)
    with pytest.raises(RuntimeError):
        async with admission.slot():
            raise RuntimeError("run failed")
    assert admission.running == 0
    async with admission.slot():
        assert admission.running == 1


async def test_more_capacity_wakes_waiters_at_once():
    admission = Admission(max_running=1, queue_length=4, queue_wait_seconds=5)
    release = asyncio.Event()
    log: list[str] = []
    tasks = [asyncio.create_task(hold(admission, release, log, f"r{i}")) for i in range(3)]
    await settle()
    assert log == ["r0"]
    admission.configure(max_running=3, queue_length=4, queue_wait_seconds=5)
    await settle()
    assert log == ["r0", "r1", "r2"] and admission.running == 3
    release.set()
    await asyncio.gather(*tasks)
    assert admission.running == 0


async def test_less_capacity_drains_to_the_new_limit():
    admission = Admission(max_running=3, queue_length=4, queue_wait_seconds=5)
    releases = [asyncio.Event() for _ in range(4)]
    log: list[str] = []
    tasks = [asyncio.create_task(hold(admission, releases[i], log, f"r{i}")) for i in range(4)]
    await settle()
    assert log == ["r0", "r1", "r2"]
    admission.configure(max_running=1, queue_length=4, queue_wait_seconds=5)
    releases[0].set()
    releases[1].set()
    await settle()
    assert log == ["r0", "r1", "r2"]  # still 1 running (r2), the new limit: r3 waits
    releases[2].set()
    await settle()
    assert log == ["r0", "r1", "r2", "r3"] and admission.running == 1
    releases[3].set()
    await asyncio.gather(*tasks)
    assert admission.running == 0


async def test_retry_after_grows_with_the_queue_and_is_bounded():
    admission = Admission(max_running=1, queue_length=100, queue_wait_seconds=5)
    admission._mean_hold_seconds = 2.0
    empty = admission.retry_after()
    release = asyncio.Event()
    tasks = [asyncio.create_task(hold(admission, release, [], str(i))) for i in range(50)]
    await settle()
    busy = admission.retry_after()
    assert 1 <= empty < busy <= 60
    release.set()
    await asyncio.gather(*tasks)
