"""Which IP addresses are public, and which non-public ones a tool's policy lets it reach.

A name an allow rule lets through can still resolve to the cloud metadata
service, the operator's LAN or the service's own loopback. The proxy
refuses any destination this module calls non-public unless the tool's
``allow_private`` lists a network that contains it.

The table below follows the IANA special-purpose registries, widened where
an address family reaches somewhere else: IPv4-mapped and IPv4-compatible
IPv6, 6to4 and Teredo are refused whole (they carry an IPv4 destination
the table cannot vouch for); NAT64's well-known prefix is judged by the
IPv4 address it embeds. Python's own ``is_global`` is consulted as well, so
an address either source calls non-global is refused.
"""

from __future__ import annotations

from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_network,
)

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network


def _table(*rows: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ip_network(cidr), kind) for cidr, kind in rows)


NON_PUBLIC_V4 = _table(
    ("0.0.0.0/8", "this-network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared-address-space (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "protocol-assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4-relay"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("255.255.255.255/32", "broadcast"),
)
NON_PUBLIC_V6 = _table(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "ipv4-compatible"),
    ("::ffff:0:0/96", "ipv4-mapped"),
    ("64:ff9b:1::/48", "nat64-local"),
    ("100::/64", "discard"),
    ("2001::/23", "protocol-assignments"),
    ("2001::/32", "teredo"),
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "segment-routing"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
)
NAT64_WELL_KNOWN = IPv6Network("64:ff9b::/96")


def non_public_kind(address: IPAddress) -> str | None:
    """Why ``address`` is not a public destination (``"loopback"``, ``"private"``...), or None."""
    if isinstance(address, IPv6Address):
        if address.scope_id:
            return "scoped"
        if address in NAT64_WELL_KNOWN:
            embedded = IPv4Address(int(address) & 0xFFFFFFFF)
            inner = non_public_kind(embedded)
            return f"nat64 of {inner}" if inner else None
        table = NON_PUBLIC_V6
    else:
        table = NON_PUBLIC_V4
    # The most specific match names the kind (2001::/32 is teredo, not just
    # a protocol assignment).
    best: tuple[int, str] | None = None
    for network, kind in table:
        if address in network and (best is None or network.prefixlen > best[0]):
            best = (network.prefixlen, kind)
    if best is not None:
        return best[1]
    if not address.is_global:
        return "not-global"
    return None


def is_public(address: IPAddress) -> bool:
    """Whether ``address`` is an ordinary public unicast destination."""
    return non_public_kind(address) is None


def permitted_private(address: IPAddress, allow_private: tuple[IPNetwork, ...]) -> IPNetwork | None:
    """The ``allow_private`` network that contains ``address``, if any."""
    if isinstance(address, IPv6Address) and address.scope_id:
        return None  # a link-local address with a zone is never a listed network's member
    for network in allow_private:
        if network.version == address.version and address in network:
            return network
    return None


def public_part(network: IPNetwork) -> IPNetwork | None:
    """Some public sub-network of ``network``, or None when all of it is non-public.

    ``allow_private`` may only open non-public space: an entry such as
    ``0.0.0.0/0`` would also cover the whole internet, bypassing the allow
    rules' meaning of "non-public destinations".
    """
    table = NON_PUBLIC_V4 if network.version == 4 else NON_PUBLIC_V6
    remaining: list[IPNetwork] = [network]
    for excluded, _ in table:
        kept: list[IPNetwork] = []
        for part in remaining:
            if part.subnet_of(excluded):  # type: ignore[arg-type]
                continue
            if excluded.subnet_of(part):  # type: ignore[arg-type]
                kept.extend(part.address_exclude(excluded))  # type: ignore[arg-type]
            else:
                kept.append(part)
        remaining = kept
    for part in remaining:
        # What the table leaves may still be non-global by Python's reckoning
        # (or NAT64 of a private address): only a truly public first address counts.
        if is_public(part.network_address) or is_public(part.broadcast_address):
            return part
    return None
