"""``[tools.NAME.network]``: the hosts a tool reaches through the egress proxy.

``network`` is ``false`` (no network), a table of allowed hosts, or ``true``
(the host's whole network, only with ``dangerously_allow_host_network``).
"""

from __future__ import annotations

from ipaddress import ip_network
from typing import Annotated, Any

from pydantic import AfterValidator, Discriminator, Field, Tag

from sandbox.egress import config as egress_config
from sandbox.egress.addresses import public_part
from sandbox.egress.config import EgressLimits, EgressPolicy
from sandbox.egress.rules import RuleError, RuleSet, parse_rule
from sandbox.policy.fields import PolicyModel, array_of, bounded_size


def _allow_rule(text: str) -> str:
    try:
        parse_rule(text)
    except RuleError as exc:
        raise ValueError(str(exc)) from None
    return text


def _deny_rule(text: str) -> str:
    try:
        parse_rule(text, deny=True)
    except RuleError as exc:
        raise ValueError(str(exc)) from None
    return text


def _private_network(text: str) -> str:
    if any(c.isspace() for c in text) or "%" in text:
        raise ValueError(f"{text!r}: a network is written like 10.0.0.0/8, fd00::/8 or 127.0.0.1")
    try:
        network = ip_network(text.removeprefix("[").removesuffix("]"), strict=True)
    except ValueError as exc:
        loose = None
        try:
            loose = ip_network(text, strict=False)
        except ValueError:
            pass
        if loose is not None:
            raise ValueError(
                f"{text!r} is not a network: it has host bits set (did you mean {loose}?)"
            ) from None
        raise ValueError(f"{text!r} is not an IP network ({exc})") from None
    public = public_part(network)
    if public is not None:
        raise ValueError(
            f"{text!r} covers public addresses (e.g. {public.network_address}): allow_private"
            " lists only non-public ranges; a public destination needs only an allow rule"
        )
    return text


def _egress_bound(limit: tuple[Any, Any, Any]) -> tuple[Any, Any]:
    return limit[1], limit[2]


AllowRule = Annotated[str, AfterValidator(_allow_rule)]
DenyRule = Annotated[str, AfterValidator(_deny_rule)]
PrivateNetwork = Annotated[str, AfterValidator(_private_network)]
_floor, _ceiling = _egress_bound(egress_config.MAX_CONNECTIONS)
EgressConnections = Annotated[int, Field(ge=_floor, le=_ceiling)]
_floor, _ceiling = _egress_bound(egress_config.MAX_TRANSFER_BYTES)
EgressBytes = bounded_size(_floor, _ceiling)
_floor, _ceiling = _egress_bound(egress_config.CONNECT_TIMEOUT_SECONDS)
ConnectTimeout = Annotated[float, Field(ge=_floor, le=_ceiling)]
_floor, _ceiling = _egress_bound(egress_config.IDLE_TIMEOUT_SECONDS)
IdleTimeout = Annotated[float, Field(ge=_floor, le=_ceiling)]


class NetworkPolicy(PolicyModel):
    """``[tools.NAME.network]``: the hosts a tool may reach through the egress proxy."""

    allow: array_of(AllowRule) = Field(min_length=1, max_length=256)
    """``host``, ``*.domain`` (strict subdomains), an IP literal; optional ``:port``
    (without one: 80 and 443)."""
    deny: array_of(DenyRule) = Field((), max_length=256)
    """Checked first; without a port a deny rule covers every port."""
    allow_private: array_of(PrivateNetwork) = Field((), max_length=64)
    """Non-public networks (loopback, private, link-local...) the tool may reach."""
    max_connections: EgressConnections = egress_config.MAX_CONNECTIONS[0]
    max_transfer_bytes: EgressBytes = egress_config.MAX_TRANSFER_BYTES[0]
    connect_timeout_seconds: ConnectTimeout = egress_config.CONNECT_TIMEOUT_SECONDS[0]
    idle_timeout_seconds: IdleTimeout = egress_config.IDLE_TIMEOUT_SECONDS[0]

    def egress_policy(self) -> EgressPolicy:
        """The parsed rules and limits the proxy enforces for a run of this tool."""
        return EgressPolicy(
            rules=RuleSet.parse(self.allow, self.deny),
            allow_private=tuple(
                ip_network(text.removeprefix("[").removesuffix("]")) for text in self.allow_private
            ),
            limits=EgressLimits(
                max_connections=self.max_connections,
                max_transfer_bytes=self.max_transfer_bytes,
                connect_timeout_seconds=self.connect_timeout_seconds,
                idle_timeout_seconds=self.idle_timeout_seconds,
            ),
        )


_NETWORK_SWITCH = "(switch)"
_NETWORK_TABLE = "(table)"
UNION_TAGS = frozenset({_NETWORK_SWITCH, _NETWORK_TABLE})
"""Tags pydantic puts in an error's location; never part of a key path."""


def _network_kind(value: object) -> str | None:
    if isinstance(value, bool):
        return _NETWORK_SWITCH
    if isinstance(value, dict | NetworkPolicy):
        return _NETWORK_TABLE
    return None


NetworkSetting = Annotated[
    Annotated[bool, Tag(_NETWORK_SWITCH)] | Annotated[NetworkPolicy, Tag(_NETWORK_TABLE)],
    Discriminator(
        _network_kind,
        custom_error_type="network_setting",
        custom_error_message="network is false, a [tools.NAME.network] table of allowed hosts,"
        " or true (the host's whole network, only with"
        " [sandbox] dangerously_allow_host_network = true)",
    ),
]
