"""A networked run's egress proxy session, on the listener its jail sent (fail closed)."""

from __future__ import annotations

import asyncio

from sandbox.egress.netns_listener import ListenerError, check_listener
from sandbox.egress.proxy import EgressProxy, EgressSession
from sandbox.host.slots import RunPipes
from sandbox.host.unavailable import RunnerUnavailable
from sandbox.jail.netns import PROXY_PORT
from sandbox.spec import RunSpec

LISTENER_WAIT_SECONDS = 30.0
"""How long a networked run's jail may take to send its proxy listener (it does so
early in its build, before any tool code): past it the run fails closed."""


async def egress_session(proxy: EgressProxy, spec: RunSpec, jail: RunPipes) -> EgressSession:
    """The proxy session of `spec`'s run, on the listener its jail made (fail closed).

    The jail sends the listener while it builds itself, before its tool
    exists; a spare built ahead holds it until its run comes. The rules
    are the run's own (its policy version), not the spare's.
    """
    assert spec.egress is not None
    reader = jail.reader
    await asyncio.wait(
        [reader.listener_arrived, reader.finished],
        timeout=LISTENER_WAIT_SECONDS,
        return_when=asyncio.FIRST_COMPLETED,
    )
    listener = reader.take_listener()
    if listener is None:
        jail.withdraw()
        failed = reader.report.failed_layer
        reason = f"{failed[0]}: {failed[1]}" if failed else "the jail sent no listener"
        raise RunnerUnavailable(f"egress proxy listener: {reason}", layer="netns")
    try:
        check_listener(listener, PROXY_PORT)
    except ListenerError as error:
        listener.close()
        jail.withdraw()
        raise RunnerUnavailable(f"egress proxy listener: {error}", layer="netns") from None
    return proxy.open_session(
        listener,
        spec.egress,
        request_id=spec.request_id,
        tool=spec.tool,
        policy_version=spec.policy_version,
    )
