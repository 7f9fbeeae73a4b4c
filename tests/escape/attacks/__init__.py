"""The attack catalogue, one module per family."""

from __future__ import annotations

from tests.escape.attacks import (
    channels,
    kernel,
    network,
    persistence,
    privilege,
    resources,
    supervisor,
    theft,
)
from tests.escape.harness import Attack

ALL_ATTACKS: list[Attack] = [
    *resources.ATTACKS,
    *theft.ATTACKS,
    *network.ATTACKS,
    *kernel.ATTACKS,
    *privilege.ATTACKS,
    *persistence.ATTACKS,
    *supervisor.ATTACKS,
    *channels.ATTACKS,
]
