"""The attack catalogue against the real sandbox, on the cold and the warm path.

Each attack must reach the point of trying (it prints ``REACHED``), be
contained, and be stopped by one of the layers its row names; whatever the
family, no process of the run may outlive it (no process left in its pid or
user namespace, whatever it calls itself) and the service must survive.
"""

from __future__ import annotations

import pytest

from tests.escape.attacks import ALL_ATTACKS
from tests.escape.conftest import LAYER_LOG
from tests.escape.harness import (
    Attack,
    SandboxUnderTest,
    host_mounts_under,
    run_survivors,
    wait_no_survivors,
    wait_no_zombies,
)

pytestmark = pytest.mark.escape


@pytest.mark.parametrize("attack", ALL_ATTACKS, ids=[attack.id for attack in ALL_ATTACKS])
def test_attack_is_contained(sandbox: SandboxUnderTest, attack: Attack) -> None:
    outcome = sandbox.run(attack.program)
    observed = attack.check(outcome)
    layers = {observed} if isinstance(observed, str) else set(observed)
    LAYER_LOG.append(
        (f"{sandbox.path}-{sandbox.mode}", attack.id, attack.family, ",".join(sorted(layers)))
    )
    assert layers <= set(attack.layers), (
        f"stopped by {sorted(layers)}, expected one of {attack.layers}: {outcome.describe()}"
    )
    survivors = run_survivors(outcome) + wait_no_survivors(outcome.marker)
    assert not survivors, f"NOT CONTAINED: processes of the run survive: {survivors}"
    assert not wait_no_zombies(sandbox.service_pid), "zombies left under the sandbox service"
    assert not host_mounts_under(sandbox.state_dir), "the jail's mounts leaked into the host"
    assert sandbox.alive(), "the sandbox service died or stopped answering"
