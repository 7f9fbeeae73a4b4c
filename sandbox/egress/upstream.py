"""Deciding a destination and reaching it: the run's rules, one lookup, the exact address checked.

Every destination is checked against the rules (deny first), the name is
resolved once, the request is refused if any address is non-public and not
in ``allow_private``, and the connection goes to one of exactly the
addresses checked (no second lookup, no DNS rebinding).
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace
from ipaddress import IPv6Address

from sandbox.egress.addresses import IPAddress, non_public_kind, permitted_private
from sandbox.egress.config import READ_CHUNK, EgressPolicy
from sandbox.egress.ledger import Ledger, Ruling
from sandbox.egress.refusal import Refusal
from sandbox.egress.report import Outcome, Reason
from sandbox.egress.resolver import ResolveError, Resolver
from sandbox.egress.rules import Target

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]

_RULE_DETAIL = {
    "denied": "{target.authority} matches a deny rule",
    "port_not_allowed": "port {target.port} is not allowed for {target.host}",
    "host_not_allowed": "no allow rule matches {target.host}",
}


class Dialer:
    """Opens the connections of one run: to a destination its policy allows, or not at all."""

    def __init__(self, policy: EgressPolicy, resolver: Resolver, ledger: Ledger) -> None:
        self.policy = policy
        self.resolver = resolver
        self.ledger = ledger

    async def open(self, method: str, target: Target) -> Streams:
        """Check ``target`` and connect to it (recorded as allowed), or raise :class:`Refusal`."""
        rule: str | None = None
        try:
            if self.ledger.over_transfer:
                raise _refusal("refused", "transfer_limit", "the run used up its transfer limit")
            rule = self._allowing_rule(target)
            # Resolving counts against the connect timeout: one deadline for both.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.policy.limits.connect_timeout_seconds
            addresses = await self._resolve(target)
            self._check_addresses(target, addresses)
            address, streams = await self._connect(target, addresses, deadline)
        except Refusal as refusal:
            # Every refusal names the request, and the allow rule it got past.
            ruling = refusal.ruling
            if ruling.rule is None:
                ruling = replace(ruling, rule=rule)
            raise Refusal(replace(ruling, method=method, target=target)) from None
        self.ledger.report.upstream_connections += 1
        self.ledger.record(
            Ruling(
                "allowed",
                "allowed",
                f"{method} {target.authority} via {address}",
                method=method,
                target=target,
                rule=rule,
                address=address,
            )
        )
        return streams

    def _allowing_rule(self, target: Target) -> str | None:
        """The allow rule that lets ``target`` through, or :class:`Refusal` naming why not."""
        verdict = self.policy.rules.decide(target)
        if not verdict.allowed:
            assert verdict.reason is not None
            detail = _RULE_DETAIL[verdict.reason].format(target=target)
            raise Refusal(Ruling("refused", verdict.reason, detail, rule=verdict.rule))
        return verdict.rule

    async def _resolve(self, target: Target) -> list[IPAddress]:
        """Every address of ``target``, looked up once (an address target is its own)."""
        if target.address is not None:
            return [target.address]
        try:
            addresses = await asyncio.wait_for(
                self.resolver.resolve(target.host, target.port),
                self.policy.limits.connect_timeout_seconds,
            )
        except TimeoutError:
            raise _refusal("failed", "dns_failure", f"resolving {target.host} timed out") from None
        except ResolveError as exc:
            raise _refusal("failed", "dns_failure", str(exc)) from None
        if not addresses:
            raise _refusal("failed", "dns_failure", f"{target.host}: no address")
        return addresses

    def _check_addresses(self, target: Target, addresses: list[IPAddress]) -> None:
        """Refuse if any address is non-public and not in ``allow_private``."""
        for address in addresses:
            kind = non_public_kind(address)
            if kind is not None and permitted_private(address, self.policy.allow_private) is None:
                raise Refusal(
                    Ruling(
                        "refused",
                        "private_address",
                        f"{target.host} is {address}, a {kind} address not in allow_private",
                        address=address,
                    )
                )

    async def _connect(
        self, target: Target, addresses: list[IPAddress], deadline: float
    ) -> tuple[IPAddress, Streams]:
        """The first of ``addresses`` that answers before ``deadline``, and its streams."""
        loop = asyncio.get_running_loop()
        last_error = "no address"
        for address in addresses:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                streams = await asyncio.wait_for(connect_exactly(address, target.port), remaining)
            except TimeoutError:
                break
            except OSError as exc:
                last_error = f"{address}: {exc.strerror or exc}"
                continue
            return address, streams
        else:
            raise _refusal("failed", "connect_failed", f"connecting to {last_error}")
        raise _refusal(
            "failed",
            "connect_timeout",
            f"no connection to {target.authority} within"
            f" {self.policy.limits.connect_timeout_seconds} s",
        )


def _refusal(outcome: Outcome, reason: Reason, detail: str) -> Refusal:
    return Refusal(Ruling(outcome, reason, detail))


async def connect_exactly(address: IPAddress, port: int) -> Streams:
    """Connect to the address itself: a numeric sockaddr, never a name to look up."""
    family = socket.AF_INET6 if isinstance(address, IPv6Address) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (str(address), port))
        return await asyncio.open_connection(sock=sock, limit=READ_CHUNK)
    except BaseException:
        sock.close()
        raise
