"""The egress proxy against origin servers on loopback, with urllib through HTTP(S)_PROXY.

Every allowed destination here is on loopback, so the policies open
127.0.0.1 with allow_private, as an operator would for a local service;
what the tests try to reach beyond that must be refused with the right
reason, and the origins must never see it.
"""

from __future__ import annotations

from tests.unit.sandbox.egress.conftest import PointedResolver, egress, exchange
from tests.unit.sandbox.egress.origin import fetch_all, origin_server


async def test_allowed_host_and_port_work_over_http_and_https(run_session, certificate, proxy):
    with origin_server("plain") as plain, origin_server("tls", tls=certificate) as tls:
        policy = egress([f"allowed.test:{plain.port}", f"allowed.test:{tls.port}"])
        async with run_session(policy) as (port, session):
            results = await fetch_all(
                port,
                [
                    {"url": f"http://allowed.test:{plain.port}/hello"},
                    {
                        "url": f"https://allowed.test:{tls.port}/hello",
                        "cafile": str(certificate[0]),
                    },
                    {"url": f"http://allowed.test:{plain.port}/echo", "data": "ping"},
                ],
            )
        report = session.report
    assert [r.get("status") for r in results] == [200, 200, 200], results
    assert results[0]["body"] == "hello from plain /hello "
    assert results[1]["body"] == "hello from tls /hello "
    assert results[2]["body"] == "hello from plain /echo ping"
    # The origin got an origin-form request with the Host the proxy checked.
    assert plain.seen[0]["path"] == "/hello"
    assert plain.seen[0]["host"] == f"allowed.test:{plain.port}"
    allowed = [d for d in report.decisions if d.outcome == "allowed"]
    assert [(d.method, d.host, d.rule, d.address) for d in allowed] == [
        ("GET", "allowed.test", f"allowed.test:{plain.port}", "127.0.0.1"),
        ("CONNECT", "allowed.test", f"allowed.test:{tls.port}", "127.0.0.1"),
        ("POST", "allowed.test", f"allowed.test:{plain.port}", "127.0.0.1"),
    ]
    assert report.upstream_connections == 3 and report.connections >= 3
    assert report.bytes_out > 0 and report.bytes_in > 0 and report.denials == []
    # Every decision reached the audit sink, with the run's request id.
    assert [d.request_id for d in proxy.audited] == ["req-1"] * 3
    assert proxy.audited[0].audit_record()["kind"] == "egress"


async def test_everything_else_is_refused_with_its_reason(run_session, certificate, resolver):
    resolver.table["private.test"] = ["127.0.0.2"]
    resolver.table["denied.allowed.test"] = ["127.0.0.1"]
    with origin_server("plain") as plain, origin_server("tls", tls=certificate) as tls:
        policy = egress(
            [
                f"allowed.test:{plain.port}",
                f"*.allowed.test:{plain.port}",
                f"private.test:{plain.port}",
                f"allowed.test:{tls.port}",
            ],
            deny=["denied.allowed.test"],
        )
        async with run_session(policy) as (port, session):
            results = await fetch_all(
                port,
                [
                    {"url": f"http://allowed.test:{plain.port + 1}/x"},  # another port
                    {"url": f"http://other.test:{plain.port}/x"},  # another host
                    {"url": f"http://denied.allowed.test:{plain.port}/x"},  # a denied host
                    {"url": f"http://private.test:{plain.port}/x"},  # resolves to 127.0.0.2
                    {"url": f"http://127.0.0.1:{plain.port}/x"},  # an IP literal
                    {"url": f"https://other.test:{tls.port}/x", "cafile": str(certificate[0])},
                ],
            )
        report = session.report
    got = [(r.get("status"), r.get("reason"), r.get("rule")) for r in results[:5]]
    assert got == [
        (403, "port_not_allowed", "allowed.test:" + str(plain.port)),
        (403, "host_not_allowed", None),
        (403, "denied", "denied.allowed.test"),
        (403, "private_address", f"private.test:{plain.port}"),
        (403, "host_not_allowed", None),
    ], results
    assert all(r["body"].startswith("PAGI egress proxy: ") for r in results[:5])
    assert all(r["body"].count("\n") == 1 for r in results[:5])
    assert "Tunnel connection failed: 403" in results[5]["error"], results[5]
    assert plain.seen == [] and tls.seen == []
    denials = report.denials
    assert [(d["layer"], d["reason"], d["host"]) for d in denials] == [
        ("network", "port_not_allowed", "allowed.test"),
        ("network", "host_not_allowed", "other.test"),
        ("network", "denied", "denied.allowed.test"),
        ("network", "private_address", "private.test"),
        ("network", "host_not_allowed", "127.0.0.1"),
        ("network", "host_not_allowed", "other.test"),
    ]
    assert denials[3]["address"] == "127.0.0.2" and "loopback" in denials[3]["detail"]
    assert denials[5]["method"] == "CONNECT" and denials[5]["port"] == tls.port


async def test_a_redirect_is_never_followed_by_the_proxy_and_the_next_request_is_checked(
    run_session,
):
    with origin_server("plain") as plain:
        policy = egress([f"allowed.test:{plain.port}"])
        async with run_session(policy) as (port, session):
            base = f"http://allowed.test:{plain.port}"
            results = await fetch_all(
                port,
                [
                    {"url": f"{base}/redirect?to=http://other.test:{plain.port}/secret"},
                    {"url": f"{base}/redirect?to={base}/landed"},
                ],
            )
    assert (results[0]["status"], results[0]["reason"]) == (403, "host_not_allowed")
    assert results[1]["status"] == 200 and results[1]["body"].startswith("hello from plain /landed")
    assert [s["path"].split("?")[0] for s in plain.seen] == ["/redirect", "/redirect", "/landed"]
    assert session.report.denials[0]["host"] == "other.test"


async def test_connect_to_a_disallowed_target_gets_403_with_the_reason_header(run_session):
    async with run_session(egress(["allowed.test:443"])) as (port, _):
        answer = await exchange(port, b"CONNECT other.test:443 HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 403 ")
        assert b"\r\nX-PAGI-Egress-Reason: host_not_allowed\r\n" in head
        assert body == b"PAGI egress proxy: host_not_allowed: no allow rule matches other.test\n"
        answer = await exchange(
            port, b"CONNECT allowed.test:22 HTTP/1.1\r\nHost: allowed.test:22\r\n\r\n"
        )
        assert b"X-PAGI-Egress-Reason: port_not_allowed" in answer
        assert b"X-PAGI-Egress-Rule: allowed.test:443" in answer
        answer = await exchange(
            port, b"CONNECT allowed.test HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
        )
        assert b"X-PAGI-Egress-Reason: invalid_target" in answer


async def test_dns_rebinding_cannot_switch_the_checked_address(run_session, resolver):
    # The name answers 127.0.0.1 (allowed) first, then 127.0.0.3: a server
    # there on the same port would get the request if the proxy looked the
    # name up again to connect.
    with origin_server("checked") as checked:
        with origin_server("rebound", host="127.0.0.3", port=checked.port) as rebound:
            resolver.table["rebind.test"] = [["127.0.0.1"], ["127.0.0.3"]]
            url = f"http://rebind.test:{checked.port}/"
            async with run_session(egress([f"rebind.test:{checked.port}"])) as (port, session):
                first = await fetch_all(port, [{"url": url + "one"}])
                assert resolver.calls == ["rebind.test"]  # one lookup for one request
                second = await fetch_all(port, [{"url": url + "two"}])
                assert resolver.calls == ["rebind.test"] * 2
    assert first[0]["status"] == 200 and first[0]["body"].startswith("hello from checked /one")
    assert (second[0]["status"], second[0]["reason"]) == (403, "private_address")
    assert rebound.seen == [] and [s["path"] for s in checked.seen] == ["/one"]
    assert [d.address for d in session.report.decisions] == ["127.0.0.1", "127.0.0.3"]


async def test_any_non_public_answer_refuses_the_name(run_session, resolver):
    resolver.table["mixed.test"] = ["127.0.0.1", "10.0.0.1"]
    resolver.table["public-and-private.test"] = ["93.184.216.34", "169.254.169.254"]
    policy = egress(["mixed.test", "public-and-private.test"])
    async with run_session(policy) as (port, session):
        for name in ("mixed.test", "public-and-private.test"):
            answer = await exchange(
                port, f"GET http://{name}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            )
            assert b"X-PAGI-Egress-Reason: private_address" in answer
    details = [d.detail for d in session.report.decisions]
    assert "10.0.0.1, a private address" in details[0]
    assert "169.254.169.254, a link-local address" in details[1]


async def test_each_request_on_a_kept_alive_connection_is_checked(run_session):
    with origin_server("plain") as plain:
        async with run_session(egress([f"allowed.test:{plain.port}"])) as (port, session):
            first = f"GET http://allowed.test:{plain.port}/a HTTP/1.1\r\nHost: x\r\n\r\n"
            second = f"GET http://other.test:{plain.port}/b HTTP/1.1\r\nHost: x\r\n\r\n"
            answer = await exchange(port, (first + second).encode())
    assert answer.count(b"HTTP/1.1 200 ") == 1 and b"hello from plain /a" in answer
    assert b"HTTP/1.1 403 " in answer and b"X-PAGI-Egress-Reason: host_not_allowed" in answer
    assert [s["path"] for s in plain.seen] == ["/a"]
    assert session.report.connections == 1


async def test_the_origin_sees_the_checked_host_and_no_proxy_credentials(run_session):
    with origin_server("plain") as plain:
        async with run_session(egress([f"allowed.test:{plain.port}"])) as (port, _):
            await exchange(
                port,
                f"GET http://allowed.test:{plain.port}/h HTTP/1.1\r\nHost: internal.corp\r\n"
                "Proxy-Authorization: Basic c2VjcmV0\r\nConnection: close\r\n\r\n".encode(),
            )
    assert plain.seen[0]["host"] == f"allowed.test:{plain.port}"
    assert plain.seen[0]["proxy_authorization"] is None


async def test_requests_that_are_not_proxy_requests_are_400(run_session):
    async with run_session(egress(["allowed.test"])) as (port, session):
        for request, reason in [
            (b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n", b"unsupported_request"),
            (b"GET https://allowed.test/ HTTP/1.1\r\nHost: x\r\n\r\n", b"unsupported_request"),
            (b"GET ftp://allowed.test/ HTTP/1.1\r\nHost: x\r\n\r\n", b"unsupported_request"),
            (b"GET http://u:p@allowed.test/ HTTP/1.1\r\nHost: x\r\n\r\n", b"invalid_target"),
            (b"GET http://127.1/ HTTP/1.1\r\nHost: x\r\n\r\n", b"invalid_target"),
            (b"\x16\x03\x01\x02\x00garbage\r\n\r\n", b"bad_request"),
        ]:
            answer = await exchange(port, request)
            assert b"X-PAGI-Egress-Reason: " + reason in answer, (request, answer)
    assert all(d.outcome == "refused" for d in session.report.decisions)


async def test_a_resolver_failure_is_a_failure_not_a_refusal(run_session):
    async with run_session(egress(["nowhere.test"])) as (port, session):
        answer = await exchange(port, b"GET http://nowhere.test/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 502 ") and b"X-PAGI-Egress-Reason: dns_failure" in answer
    [decision] = session.report.decisions
    assert decision.outcome == "failed" and session.report.denials == []


async def test_the_system_resolver_runs_off_the_loop():
    from sandbox.egress.resolver import ResolveError, SystemResolver

    resolver = SystemResolver()
    try:
        addresses = await resolver.resolve("localhost", 80)
        assert addresses and all(a.is_loopback for a in addresses)
        import pytest

        with pytest.raises(ResolveError):
            await resolver.resolve("name.invalid", 80)
    finally:
        resolver.close()


def test_pointed_resolver_is_what_it_says():
    assert PointedResolver({}).table == {}
