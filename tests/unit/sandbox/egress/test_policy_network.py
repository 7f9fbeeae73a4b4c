"""``[tools.NAME.network]`` in the policy file: every mistake is an error with key path and line."""

from __future__ import annotations

import textwrap
from ipaddress import ip_network
from pathlib import Path

import pytest

from sandbox.egress.config import EgressLimits
from sandbox.policy import MIB, PolicyError, parse_policy

SOURCE = Path("/etc/pagi/sandbox.toml")

HEAD = """\
[tools.fetch]
argv = ["/bin/true"]

[tools.fetch.network]
"""


def parse(text: str):
    return parse_policy(textwrap.dedent(text).encode(), SOURCE)


def problems(table: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises(PolicyError) as caught:
        parse(HEAD + textwrap.dedent(table))
    return [(p.key, p.line, p.message) for p in caught.value.problems]


def only(table: str) -> tuple[str, int | None, str]:
    found = problems(table)
    assert len(found) == 1, found
    return found[0]


def test_a_table_parses_into_the_rules_and_limits_the_proxy_enforces():
    snapshot = parse(
        HEAD
        + """\
allow = ["api.github.com:443", "*.pypi.org", "files.pythonhosted.org:443", "127.0.0.1:8080"]
deny = ["upload.pypi.org"]
allow_private = ["127.0.0.1/32", "fd00::/8", "10.0.0.7"]
max_connections = 4
max_transfer_bytes = "16 MiB"
connect_timeout_seconds = 2.5
idle_timeout_seconds = 20
"""
    )
    tool = snapshot.tool("fetch")
    assert tool is not None and tool.egress is not None and not tool.host_network
    egress = snapshot.egress_of("fetch")
    assert egress is not None
    assert [r.text for r in egress.rules.allow][:2] == ["api.github.com:443", "*.pypi.org"]
    assert [r.kind for r in egress.rules.allow] == ["name", "wildcard", "name", "address"]
    assert egress.rules.deny[0].ports is None  # a deny rule without a port: every port
    assert egress.allow_private == (
        ip_network("127.0.0.1/32"),
        ip_network("fd00::/8"),
        ip_network("10.0.0.7/32"),
    )
    assert egress.limits == EgressLimits(
        max_connections=4,
        max_transfer_bytes=16 * MIB,
        connect_timeout_seconds=2.5,
        idle_timeout_seconds=20.0,
    )


def test_defaults_are_the_safe_ones():
    egress = parse(HEAD + 'allow = ["example.org"]\n').egress_of("fetch")
    assert egress is not None
    assert egress.allow_private == () and egress.rules.deny == ()
    assert egress.limits == EgressLimits()
    assert egress.limits.max_connections == 16 and egress.limits.max_transfer_bytes == 64 * MIB


def test_no_network_is_the_default_and_false_means_none():
    snapshot = parse(
        '[tools.a]\nargv = ["/bin/true"]\n[tools.b]\nargv = ["/bin/true"]\nnetwork = false\n'
    )
    for name in ("a", "b"):
        tool = snapshot.tool(name)
        assert tool is not None and tool.egress is None and not tool.host_network
        assert snapshot.egress_of(name) is None


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("*", "bare '*'"),
        ("*.com", "public suffix"),
        ("*.co.uk", "public suffix"),
        ("*.github.io", "public suffix"),
        ("*.s3.amazonaws.com", "public suffix"),
        ("*.test", "public suffix"),
        ("*example.com", "whole first label"),
        ("api.*.example.com", "whole first label"),
        ("*.*.example.com", "whole first label"),
        ("example.com:0", "1 to 65535"),
        ("example.com:65536", "1 to 65535"),
        ("example.com:08", "1 to 65535"),
        ("example.com:", "1 to 65535"),
        ("example.com:http", "1 to 65535"),
        ("https://example.com/", "not a URL"),
        ("user@example.com", "not a URL"),
        ("exa mple.com", "no spaces"),
        ("a_b.example.com", "letters, digits"),
        ("-a.example.com", "letters, digits"),
        ("a..example.com", "letters, digits"),
        ("2001:db8::1", "brackets"),
        ("[2001:db8::1", "brackets"),
        ("[fe80::1%eth0]", "zone id"),
        ("127.1", "a.b.c.d"),
        ("0x7f000001", "a.b.c.d"),
        ("010.0.0.1", "a.b.c.d"),
        ("*.10.0.0.1", "not of an address"),
        ("", "non-empty"),
    ],
)
def test_malformed_allow_rules_name_the_entry_and_its_line(rule, message):
    key, line, text = only(f'allow = [\n  "ok.example.org",\n  "{rule}",\n]\n')
    assert key == "tools.fetch.network.allow[1]"
    assert line == 7  # the line of that entry, not of `allow =`
    assert message in text, text


def test_deny_rules_are_checked_the_same_way():
    key, line, text = only('allow = ["example.org"]\ndeny = ["*.org"]\n')
    assert (key, line) == ("tools.fetch.network.deny[0]", 6) and "public suffix" in text


@pytest.mark.parametrize(
    ("network", "message"),
    [
        ("10.0.0.1/8", "host bits set (did you mean 10.0.0.0/8?)"),
        ("0.0.0.0/0", "covers public addresses"),
        ("8.8.8.0/24", "covers public addresses"),
        ("::/0", "covers public addresses"),
        ("10.0.0.0/33", "not an IP network"),
        ("localhost", "not an IP network"),
        ("fe80::1%eth0/128", "10.0.0.0/8"),
    ],
)
def test_allow_private_takes_only_non_public_networks(network, message):
    key, line, text = only(f'allow = ["example.org"]\nallow_private = ["{network}"]\n')
    assert (key, line) == ("tools.fetch.network.allow_private[0]", 6)
    assert message in text, text


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("max_connections", "0", "greater than or equal to 1"),
        ("max_connections", "129", "less than or equal to 128"),
        ("max_connections", '"4"', "valid integer"),
        ("max_transfer_bytes", '"2 GiB"', "less than or equal to 1073741824"),
        ("max_transfer_bytes", '"lots"', "a size is"),
        ("connect_timeout_seconds", "31", "less than or equal to 30"),
        ("connect_timeout_seconds", "0", "greater than or equal to 0.1"),
        ("idle_timeout_seconds", "61", "less than or equal to 60"),
        ("idle_timeout_seconds", "nan", "finite"),
        ("allow_everything", "true", "unknown key"),
    ],
)
def test_limits_have_floors_and_hard_ceilings(key, value, message):
    found = only(f'allow = ["example.org"]\n{key} = {value}\n')
    assert found[0] == f"tools.fetch.network.{key}" and found[1] == 6
    assert message in found[2], found


def test_an_empty_allow_list_or_a_missing_one_is_an_error():
    assert only("allow = []\n")[2].startswith("allow lists at least one host")
    key, _, text = only('deny = ["example.org"]\n')
    assert key == "tools.fetch.network.allow" and text == "required key is missing"


def test_an_allow_rule_for_a_private_address_needs_allow_private_too():
    key, line, text = only('allow = ["example.org", "10.1.2.3:5432"]\n')
    assert (key, line) == ("tools.fetch.network.allow[1]", 5)
    assert "private address: add it to allow_private" in text
    assert parse(HEAD + 'allow = ["10.1.2.3:5432"]\nallow_private = ["10.1.2.0/24"]\n').egress_of(
        "fetch"
    )


def test_network_is_false_a_table_or_true_nothing_else():
    for value in ('"yes"', "1", '["example.org"]'):
        with pytest.raises(PolicyError) as caught:
            parse(f'[tools.fetch]\nargv = ["/bin/true"]\nnetwork = {value}\n')
        [problem] = caught.value.problems
        assert problem.key == "tools.fetch.network" and problem.line == 3
        assert problem.message.startswith("network is false, a [tools.NAME.network] table")


def test_the_whole_host_network_needs_the_loudly_named_opt_in():
    legacy = '[tools.legacy]\nargv = ["/bin/true"]\nnetwork = true\n'
    with pytest.raises(PolicyError) as caught:
        parse(legacy)
    [problem] = caught.value.problems
    assert (problem.key, problem.line) == ("tools.legacy.network", 3)
    assert "dangerously_allow_host_network = true" in problem.message
    assert "[tools.legacy.network] table" in problem.message

    snapshot = parse("[sandbox]\ndangerously_allow_host_network = true\n" + legacy)
    tool = snapshot.tool("legacy")
    assert tool is not None and tool.host_network and tool.egress is None
    assert snapshot.host_network_tools == ["legacy"]
    assert snapshot.summary()["tools"]["legacy"]["host_network"] is True


def test_an_inline_table_works_like_a_table():
    snapshot = parse(
        '[tools.fetch]\nargv = ["/bin/true"]\nnetwork = { allow = ["example.org:8443"] }\n'
    )
    egress = snapshot.egress_of("fetch")
    assert egress is not None and egress.rules.allow[0].ports == frozenset({8443})


def test_policy_check_prints_the_rules_and_warns_about_host_network(tmp_path, capsys):
    from cli.policy import check_command

    path = tmp_path / "sandbox.toml"
    path.write_text(
        "[sandbox]\ndangerously_allow_host_network = true\n"
        + HEAD
        + 'allow = ["*.pypi.org"]\ndeny = ["upload.pypi.org"]\n'
        + '[tools.legacy]\nargv = ["/bin/true"]\nnetwork = true\n'
    )
    assert check_command(path) == 0
    out = capsys.readouterr().out
    assert "WARNING: dangerously_allow_host_network: the host's whole network for legacy" in out
    assert "network=egress" in out and "network=host" in out
    assert "allow: *.pypi.org" in out and "deny: upload.pypi.org" in out


def test_the_shipped_example_is_valid_and_allows_only_what_it_lists():
    from sandbox.egress.rules import parse_target
    from sandbox.policy import load_policy

    repo = Path(__file__).resolve().parents[4]
    snapshot = load_policy(repo / "policies" / "examples" / "egress.toml")
    egress = snapshot.egress_of("fetch")
    assert egress is not None and snapshot.egress_of("python") is None
    decide = egress.rules.decide
    assert decide(parse_target("files.pythonhosted.org", 443)).allowed
    assert decide(parse_target("test.pypi.org", 443)).allowed
    assert not decide(parse_target("upload.pypi.org", 443)).allowed
    assert not decide(parse_target("pypi.org", 80)).allowed
    assert not decide(parse_target("169.254.169.254", 80)).allowed
