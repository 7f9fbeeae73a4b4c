"""The egress proxy: an HTTP forward proxy with CONNECT, one session per run, in the service's loop.

A run's session (:mod:`.session`) serves one listening socket (the only
thing the run can reach from its empty network namespace, see
:mod:`.netns_listener`) under the run's
:class:`~sandbox.egress.config.EgressPolicy`:

- ``CONNECT host:port`` opens a tunnel (:mod:`.tunnel`; HTTPS and anything
  else, no TLS interception); an absolute-form ``GET http://host/...`` is
  forwarded as plain HTTP (:mod:`.forward`), each request on a kept-alive
  connection checked again; what a request asks for is parsed in
  :mod:`.request_target`, its head read under limits in :mod:`.client`;
- every destination is checked against the rules (deny first), the name is
  resolved once by the proxy, the request is refused if any address is
  non-public and not in ``allow_private``, and the connection goes to one of
  exactly the addresses checked (:mod:`.upstream`: no second lookup, no DNS
  rebinding);
- redirects are the client's business: the proxy never follows one, and
  the follow-up request is checked like any other;
- a refusal is ``403`` (``4xx``/``5xx`` for protocol errors and network
  failures) with ``X-PAGI-Egress-Reason`` and a one-line body (:mod:`.refusal`);
- per run: connections at once, bytes in + out (:mod:`.ledger`), connect and
  idle timeouts; per request: head size, field count and a deadline for the head.

Closing the session cuts every connection of the run and closes its listener.
"""

from __future__ import annotations

import socket

from sandbox.egress.config import EgressPolicy
from sandbox.egress.ledger import DecisionSink, RunLabels
from sandbox.egress.resolver import Resolver, SystemResolver
from sandbox.egress.session import EgressSession

__all__ = ["DecisionSink", "EgressProxy", "EgressSession"]


class EgressProxy:
    """The service's egress proxy: one per service, one session per networked run."""

    def __init__(
        self, *, resolver: Resolver | None = None, on_decision: DecisionSink | None = None
    ) -> None:
        self._own_resolver = resolver is None
        self.resolver: Resolver = resolver or SystemResolver()
        self._on_decision = on_decision
        self._sessions: set[EgressSession] = set()

    def open_session(
        self,
        listener: socket.socket,
        policy: EgressPolicy,
        *,
        request_id: str,
        tool: str,
        policy_version: str,
    ) -> EgressSession:
        """Serve ``listener`` for one run under ``policy`` until the session is closed.

        Call from the service's event loop. The session owns ``listener`` from
        now on and closes it at the end.
        """
        session = EgressSession(
            listener,
            policy,
            RunLabels(request_id=request_id, tool=tool, policy_version=policy_version),
            resolver=self.resolver,
            on_decision=self._on_decision,
            on_close=self._sessions.discard,
        )
        self._sessions.add(session)
        return session

    session = open_session
    """``async with proxy.session(...) as session``: closed (and reported) on the way out."""

    def stats(self) -> dict[str, int]:
        """Open sessions and their connections (for /health)."""
        return {
            "sessions": len(self._sessions),
            "connections": sum(s.open_connections for s in self._sessions),
        }

    async def close(self) -> None:
        """Close every open session (service shutdown)."""
        for session in list(self._sessions):
            await session.close()
        if self._own_resolver and isinstance(self.resolver, SystemResolver):
            self.resolver.close()
