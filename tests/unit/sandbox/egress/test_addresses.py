"""Which destinations are public; which non-public ones allow_private opens."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox.egress.addresses import (
    NON_PUBLIC_V4,
    NON_PUBLIC_V6,
    is_public,
    non_public_kind,
    permitted_private,
    public_part,
)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("10.1.2.3", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("100.64.0.1", "shared-address-space (CGNAT)"),
        ("0.0.0.0", "this-network"),
        ("224.0.0.251", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "broadcast"),
        ("192.0.2.10", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("::ffff:127.0.0.1", "ipv4-mapped"),
        ("::ffff:8.8.8.8", "ipv4-mapped"),  # a mapped address is refused whatever it maps
        ("::127.0.0.1", "ipv4-compatible"),
        ("fe80::1", "link-local"),
        ("fd00::1", "unique-local"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "documentation"),
        ("2002:7f00:1::", "6to4"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "teredo"),
        ("64:ff9b::7f00:1", "nat64 of loopback"),
        ("64:ff9b::a9fe:a9fe", "nat64 of link-local"),
        ("64:ff9b:1::1", "nat64-local"),
        ("fe80::1%eth0", "scoped"),
    ],
)
def test_non_public_destinations_are_named(address, kind):
    assert non_public_kind(ip_address(address)) == kind
    assert not is_public(ip_address(address))


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "64:ff9b::808:808"]
)
def test_public_destinations_pass(address):
    assert is_public(ip_address(address))


@given(st.integers(0, 2**32 - 1))
def test_every_address_of_the_ipv4_table_is_non_public(value):
    address = IPv4Address(value)
    listed = any(address in network for network, _ in NON_PUBLIC_V4)
    if listed:
        assert not is_public(address)
    if is_public(address):
        assert address.is_global and not address.is_multicast


@given(st.integers(0, 2**128 - 1))
def test_every_address_of_the_ipv6_table_is_non_public(value):
    address = IPv6Address(value)
    if any(address in network for network, _ in NON_PUBLIC_V6):
        assert not is_public(address)
    if address.ipv4_mapped is not None or address.sixtofour is not None:
        assert not is_public(address)


def test_allow_private_matches_by_family_and_containment():
    networks = (ip_network("127.0.0.1/32"), ip_network("fd00::/8"))
    assert permitted_private(ip_address("127.0.0.1"), networks) == networks[0]
    assert permitted_private(ip_address("127.0.0.2"), networks) is None
    assert permitted_private(ip_address("fd12::1"), networks) == networks[1]
    assert permitted_private(ip_address("::ffff:127.0.0.1"), networks) is None
    assert permitted_private(ip_address("fd00::1%eth0"), networks) is None


@pytest.mark.parametrize(
    ("network", "public"),
    [
        ("10.0.0.0/8", False),
        ("127.0.0.1/32", False),
        ("169.254.0.0/16", False),
        ("fd00::/8", False),
        ("0.0.0.0/0", True),
        ("8.8.8.8/32", True),
        ("100.0.0.0/8", True),  # 100.64/10 inside it is CGNAT, the rest is public
        ("::/0", True),
    ],
)
def test_public_part_finds_public_space_in_a_network(network, public):
    part = public_part(ip_network(network))
    assert (part is not None) == public
    if part is not None:
        assert is_public(part.network_address) or is_public(part.broadcast_address)
