"""Bombs, and attacks on what runs share, in flight at the same time as well-behaved runs:
all contained, the good runs intact (their output, their priority, their time)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.escape.attacks import ALL_ATTACKS
from tests.escape.harness import (
    Attack,
    Outcome,
    SandboxUnderTest,
    new_marker,
    run_survivors,
    wait_no_survivors,
)

pytestmark = pytest.mark.escape

BOMBS = (
    "fork_bomb",
    "memory_bomb",
    "spread_memory_bomb",
    "fd_exhaustion",
    "huge_stdout",
    "thread_bomb",
)

GOOD = r"""
import json
reached("good")
pairs = json.dumps(sorted({"b": 2, "a": 1}.items()))
report("good", value=pairs, squares=sum(i * i for i in range(1000)),
       nice=os.getpriority(os.PRIO_PROCESS, 0))
"""

NEIGHBOUR_ATTACKS = (
    "reach_init",
    "renice_outside_the_run",
    "starve_the_supervisor",
    "stack_a_filter_to_hide_refusals",
    "mark_shared_files",
    "lock_shared_inodes",
)
"""Attacks on the supervision and on what runs share, run beside good runs."""


def _run_admitted(sandbox: SandboxUnderTest, program: str, marker: str) -> Outcome:
    """Runs ``program``; a 429 (queue full) is retried, as a client would after Retry-After."""
    for _ in range(20):
        try:
            return sandbox.run(program, marker)
        except AssertionError as error:
            if "HTTP 429" not in str(error):
                raise
            time.sleep(0.5)
    raise AssertionError("never admitted")


@pytest.mark.parametrize("names", [BOMBS, NEIGHBOUR_ATTACKS], ids=["bombs", "neighbours"])
def test_attacks_in_parallel_with_good_runs(
    sandbox: SandboxUnderTest, names: tuple[str, ...]
) -> None:
    attacks: list[Attack] = [attack for attack in ALL_ATTACKS if attack.id in names]
    assert len(attacks) == len(names)
    markers = {attack.id: new_marker() for attack in attacks}
    good_markers = [new_marker() for _ in range(2)]
    with ThreadPoolExecutor(len(attacks) + 2) as pool:
        bombs = {
            attack.id: pool.submit(_run_admitted, sandbox, attack.program, markers[attack.id])
            for attack in attacks
        }
        goods = [pool.submit(_run_admitted, sandbox, GOOD, marker) for marker in good_markers]
        outcomes = []
        for good in goods:
            outcome = good.result()
            record = outcome.result_of("good")
            assert record["value"] == '[["a", 1], ["b", 2]]', record
            assert record["squares"] == 332833500, record
            assert record["nice"] == 0, f"a run beside changed this one's priority: {record}"
            wall = sandbox.limits.wall_seconds
            assert outcome.result["duration_ms"] < wall * 1000, outcome.describe()
            outcomes.append(outcome)
        for attack in attacks:
            outcome = bombs[attack.id].result()
            observed = attack.check(outcome)
            layers = {observed} if isinstance(observed, str) else set(observed)
            assert layers <= set(attack.layers), f"{attack.id}: {layers}, {outcome.describe()}"
            outcomes.append(outcome)
    for outcome in outcomes:
        survivors = run_survivors(outcome) + wait_no_survivors(outcome.marker)
        assert not survivors, f"processes of run {outcome.marker} survive: {survivors}"
    assert sandbox.alive()
