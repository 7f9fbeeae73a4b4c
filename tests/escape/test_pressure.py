"""Bombs in flight at the same time as a well-behaved run: all contained, the good run intact."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.escape.attacks import ALL_ATTACKS
from tests.escape.harness import Attack, Outcome, SandboxUnderTest, new_marker, wait_no_survivors

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
report("good", value=pairs, squares=sum(i * i for i in range(1000)))
"""


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


def test_bombs_in_parallel_with_a_good_run(sandbox: SandboxUnderTest) -> None:
    attacks: list[Attack] = [attack for attack in ALL_ATTACKS if attack.id in BOMBS]
    assert len(attacks) == len(BOMBS)
    markers = {attack.id: new_marker() for attack in attacks}
    good_markers = [new_marker() for _ in range(2)]
    with ThreadPoolExecutor(len(attacks) + 2) as pool:
        bombs = {
            attack.id: pool.submit(_run_admitted, sandbox, attack.program, markers[attack.id])
            for attack in attacks
        }
        goods = [pool.submit(_run_admitted, sandbox, GOOD, marker) for marker in good_markers]
        for good in goods:
            record = good.result().result_of("good")
            assert record["value"] == '[["a", 1], ["b", 2]]', record
            assert record["squares"] == 332833500, record
        for attack in attacks:
            outcome = bombs[attack.id].result()
            observed = attack.check(outcome)
            layers = {observed} if isinstance(observed, str) else set(observed)
            assert layers <= set(attack.layers), f"{attack.id}: {layers}, {outcome.describe()}"
    for marker in [*markers.values(), *good_markers]:
        assert not wait_no_survivors(marker), f"processes of run {marker} survive"
    assert sandbox.alive()
