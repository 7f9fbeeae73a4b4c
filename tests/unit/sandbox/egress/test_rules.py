"""Egress rules as pure code: parsing, normalisation, matching; fuzzed with Hypothesis.

The central property: a rule never matches more than its text says. It is
checked against an oracle written from the rule's text alone (string
comparisons, no parser), for generated rules and hosts that collide often.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

import publicsuffixlist
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sandbox.egress.rules import (
    DEFAULT_ALLOW_PORTS,
    RuleError,
    RuleSet,
    TargetError,
    canonical_name,
    parse_rule,
    parse_target,
)

# Few distinct labels, so generated rules and hosts share suffixes often.
LABELS = ["a", "b", "ab", "api", "pypi", "files", "example", "xn--bcher-kva", "1x", "a-b"]
BASES = ["example.org", "pagi.dev", "example.co.uk", "b.example.org"]
PORTS = [80, 443, 8080, 1, 65535]

labels = st.sampled_from(LABELS)
bases = st.sampled_from(BASES)
names = st.builds(
    lambda prefix, base: ".".join([*prefix, base]), st.lists(labels, max_size=3), bases
)
ports = st.sampled_from(PORTS)


def vary_case(draw, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if flip else c for c, flip in zip(text, flips, strict=True))


@st.composite
def host_texts(draw) -> str:
    """A name as a client might send it: any case, maybe a trailing dot."""
    name = vary_case(draw, draw(names))
    return name + "." if draw(st.booleans()) else name


@st.composite
def rule_texts(draw) -> str:
    host = draw(names)
    if draw(st.booleans()):
        host = "*." + host
    host = vary_case(draw, host)
    if draw(st.booleans()):
        host += f":{draw(ports)}"
    return host


def oracle(rule: str, host: str, port: int, deny: bool = False) -> bool:
    """Whether ``rule`` covers ``host:port``, read off the text alone."""
    rule_host, _, rule_port = rule.partition(":")
    rule_host = rule_host.lower()
    host = host.lower().removesuffix(".")
    if rule_host.startswith("*."):
        host_ok = host.endswith("." + rule_host[2:])
    else:
        host_ok = host == rule_host
    if rule_port:
        port_ok = port == int(rule_port)
    else:
        port_ok = deny or port in (80, 443)
    return host_ok and port_ok


@settings(max_examples=800)
@given(rule=rule_texts(), host=host_texts(), port=ports)
@example(rule="*.example.org", host="example.org", port=443)
@example(rule="*.example.org", host="badexample.org", port=443)
@example(rule="example.org", host="api.example.org", port=443)
@example(rule="*.b.example.org", host="b.example.org", port=80)
def test_an_allow_rule_matches_exactly_what_its_text_says(rule, host, port):
    assert parse_rule(rule).matches(parse_target(host, port)) == oracle(rule, host, port)


@settings(max_examples=400)
@given(
    allow=st.lists(rule_texts(), max_size=4),
    deny=st.lists(rule_texts(), max_size=3),
    host=host_texts(),
    port=ports,
)
def test_deny_is_checked_first_and_nothing_but_an_allow_rule_lets_through(allow, deny, host, port):
    verdict = RuleSet.parse(tuple(allow), tuple(deny)).decide(parse_target(host, port))
    denied = any(oracle(rule, host, port, deny=True) for rule in deny)
    allowed = any(oracle(rule, host, port) for rule in allow)
    assert verdict.allowed == (allowed and not denied)
    if denied:
        assert verdict.reason == "denied" and verdict.rule in deny
    elif allowed:
        assert verdict.rule in allow and oracle(verdict.rule, host, port)
    else:
        assert verdict.reason in ("host_not_allowed", "port_not_allowed")
        if verdict.reason == "port_not_allowed":
            # Some rule names the host, on other ports.
            assert any(oracle(rule.partition(":")[0] + f":{port}", host, port) for rule in allow)


@settings(max_examples=500)
@given(name=names, port=ports)
def test_a_wildcard_never_matches_its_own_domain_a_lookalike_or_an_extension(name, port):
    rule = parse_rule(f"*.{name}:{port}")
    for host in (name, "x" + name, f"{name}.evil.example.com", f"{name}x", f"x-{name}"):
        assert not rule.matches(parse_target(host, port)), host
    assert rule.matches(parse_target(f"sub.{name}", port))
    assert rule.matches(parse_target(f"a.b.{name}", port))


@given(text=st.text(max_size=40))
@example(text="*.")
@example(text="[::1]:")
@example(text="ｅｘａｍｐｌｅ.org")
@example(text="example.org\x00")
def test_any_text_is_a_rule_or_a_rule_error_never_a_crash(text):
    for deny in (False, True):
        try:
            rule = parse_rule(text, deny=deny)
        except RuleError as exc:
            assert str(exc)
            continue
        assert rule.text == text
        assert parse_rule(rule.text, deny=deny) == rule


@settings(max_examples=500)
@given(rule=st.text(max_size=30), host=st.text(max_size=30), port=st.integers(-5, 70000))
def test_matching_arbitrary_hosts_never_crashes_nor_overreaches(rule, host, port):
    try:
        parsed = parse_rule(rule)
        target = parse_target(host, port)
    except (RuleError, TargetError):
        return
    if not parsed.matches(target):
        return
    assert parsed.ports is not None and target.port in parsed.ports
    if parsed.kind == "address":
        assert target.address == parsed.address
    elif parsed.kind == "name":
        assert target.address is None and target.host == parsed.host
    else:
        assert target.address is None and target.host.endswith("." + parsed.host)
        assert target.host != parsed.host


@given(name=names)
def test_normalisation_is_idempotent_and_ignores_case_and_one_trailing_dot(name):
    canonical = canonical_name(name)
    assert canonical_name(canonical) == canonical
    assert canonical_name(name.upper() + ".") == canonical
    with pytest.raises(ValueError):
        canonical_name(name + "..")


@pytest.mark.parametrize(
    ("rule", "host"),
    [
        ("bücher.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "BÜCHER.example"),
        ("*.bücher.example", "www.xn--bcher-kva.example"),
        ("ｅｘａｍｐｌｅ.org", "example.org"),  # full-width letters map to ASCII (UTS #46)
        ("example.org", "example。org"),  # an ideographic full stop is a dot
        ("faß.de", "xn--fa-hia.de"),  # IDNA 2008: ß is kept, not mapped to ss
    ],
)
def test_idna_forms_of_one_name_are_one_name(rule, host):
    assert parse_rule(rule).matches(parse_target(host, 443))


def test_idna_2003_mapping_is_not_a_match():
    # An old client may send "fass.de" for "faß.de"; that is another name.
    assert not parse_rule("faß.de").matches(parse_target("fass.de", 443))


addresses_v4 = st.builds(IPv4Address, st.integers(0, 2**32 - 1))
addresses_v6 = st.builds(IPv6Address, st.integers(0, 2**128 - 1))


@given(
    address=st.one_of(addresses_v4, addresses_v6),
    other=st.one_of(addresses_v4, addresses_v6),
    port=ports,
)
def test_an_address_rule_matches_that_address_only_and_never_a_name(address, other, port):
    text = str(address) if address.version == 4 else f"[{address}]"
    rule = parse_rule(f"{text}:{port}")
    assert rule.matches(parse_target(text, port))
    assert rule.matches(parse_target(text, port)) and not rule.matches(
        parse_target(text, port % 65535 + 1)
    )
    other_text = str(other) if other.version == 4 else f"[{other}]"
    assert rule.matches(parse_target(other_text, port)) == (other == address)
    assert not rule.matches(parse_target("example.org", port))
    assert not parse_rule(f"example.org:{port}").matches(parse_target(text, port))


def test_an_ipv4_mapped_ipv6_address_is_not_the_ipv4_address():
    rule = parse_rule("93.184.216.34:443")
    assert not rule.matches(parse_target("[::ffff:93.184.216.34]", 443))
    assert rule.matches(parse_target("93.184.216.34", 443))


def test_ipv6_targets_are_canonical():
    rule = parse_rule("[2001:DB8:0:0::1]:443")
    assert rule.host == "2001:db8::1"
    assert rule.matches(parse_target("[2001:db8::0:1]", 443))


@pytest.mark.parametrize(
    "host",
    [
        "127.1",
        "0x7f.0.0.1",
        "2130706433",
        "0177.0.0.1",
        "1.2.3.4.5",
        "::1",
        "[::1",
        "a b",
        "a_b.example",
        "",
        "[fe80::1%25eth0]",
        "x" * 300,
    ],
)
def test_targets_that_are_not_plain_names_or_addresses_are_refused(host):
    with pytest.raises(TargetError):
        parse_target(host, 443)


def test_default_ports_and_port_parsing():
    assert parse_rule("example.org").ports == DEFAULT_ALLOW_PORTS == frozenset({80, 443})
    assert parse_rule("example.org", deny=True).ports is None
    assert parse_rule("example.org:8443").ports == frozenset({8443})
    verdict = RuleSet.parse(("example.org",)).decide(parse_target("example.org", 8443))
    assert (verdict.allowed, verdict.reason, verdict.rule) == (
        False,
        "port_not_allowed",
        "example.org",
    )


def _psl_entries() -> list[str]:
    path = Path(publicsuffixlist.__file__).with_name("public_suffix_list.dat")
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith(("//", "!", "*")):
            entries.append(line)
    return entries


PUBLIC_SUFFIXES = _psl_entries()


@settings(max_examples=300)
@given(suffix=st.sampled_from(PUBLIC_SUFFIXES))
def test_a_wildcard_over_any_public_suffix_is_refused(suffix):
    try:
        canonical_name(suffix)
    except ValueError:
        return  # not a valid host name in the first place
    with pytest.raises(RuleError, match="public suffix"):
        parse_rule(f"*.{suffix}")
    # Naming one registrable domain under it is fine, and so is the suffix itself exactly.
    assert parse_rule(f"*.pagi-example.{suffix}").kind == "wildcard"
    assert parse_rule(suffix).kind == "name"


def test_the_public_suffix_list_is_bundled_and_big():
    assert len(PUBLIC_SUFFIXES) > 5000
    assert {"com", "co.uk", "github.io"} <= set(PUBLIC_SUFFIXES)


def test_ip_address_helper_sanity():
    assert parse_target("10.0.0.1", 80).address == ip_address("10.0.0.1")
