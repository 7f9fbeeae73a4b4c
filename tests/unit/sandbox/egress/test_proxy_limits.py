"""The proxy's limits and hostile clients: each refused with its reason, other runs unaffected."""

from __future__ import annotations

import asyncio
import socket
import time

from tests.unit.sandbox.egress.conftest import egress, exchange
from tests.unit.sandbox.egress.origin import fetch_all, origin_server


async def test_the_transfer_cap_cuts_the_run_and_refuses_what_follows(run_session):
    with origin_server("plain") as plain:
        policy = egress([f"allowed.test:{plain.port}"], max_transfer_bytes=200 * 1024)
        async with run_session(policy) as (port, session):
            big = await fetch_all(
                port, [{"url": f"http://allowed.test:{plain.port}/big?n=1048576"}]
            )
            after = await exchange(
                port, f"GET http://allowed.test:{plain.port}/a HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            )
    assert "error" in big[0] or len(big[0].get("body", "")) < 1048576, big
    assert b"HTTP/1.1 403 " in after and b"X-PAGI-Egress-Reason: transfer_limit" in after
    report = session.report
    assert [d.reason for d in report.decisions] == ["allowed", "transfer_limit", "transfer_limit"]
    # What reached the client stayed under the cap (the last chunk read was not passed on).
    assert report.bytes_out + report.bytes_in <= 200 * 1024 + 64 * 1024 + 1024


async def test_connections_beyond_the_limit_are_refused_at_once(run_session):
    async with run_session(egress(["allowed.test"], max_connections=2)) as (port, session):
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await asyncio.sleep(0.1)
        answer = await exchange(port, b"", wait=2)
        assert b"HTTP/1.1 403 " in answer and b"X-PAGI-Egress-Reason: connection_limit" in answer
        for _, writer in held:
            writer.close()
        await asyncio.sleep(0.1)
        # A slot freed is a slot usable again.
        answer = await exchange(port, b"CONNECT other.test:443 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"X-PAGI-Egress-Reason: host_not_allowed" in answer
    assert session.report.denials[0]["reason"] == "connection_limit"


async def test_a_destination_that_never_answers_hits_the_connect_timeout(run_session, resolver):
    # A listener whose accept queue is full drops new SYNs: the connect hangs.
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    filler = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(blackhole.getsockname())
        filler.append(s)
    time.sleep(0.2)
    target = blackhole.getsockname()[1]
    try:
        policy = egress([f"allowed.test:{target}"], connect_timeout_seconds=0.5)
        async with run_session(policy) as (port, session):
            started = time.monotonic()
            answer = await exchange(
                port, f"CONNECT allowed.test:{target} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            )
            elapsed = time.monotonic() - started
    finally:
        for s in filler:
            s.close()
        blackhole.close()
    assert b"HTTP/1.1 504 " in answer and b"X-PAGI-Egress-Reason: connect_timeout" in answer
    assert 0.4 < elapsed < 3
    assert session.report.decisions[-1].outcome == "failed"


async def test_a_slow_resolver_hits_the_connect_timeout_too(run_session, resolver):
    async def never() -> list[str]:
        await asyncio.sleep(30)
        return []

    resolver.table["slow.test"] = never
    async with run_session(egress(["slow.test"], connect_timeout_seconds=0.3)) as (port, _):
        answer = await exchange(port, b"GET http://slow.test/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"X-PAGI-Egress-Reason: dns_failure" in answer


async def test_an_idle_tunnel_is_closed_and_a_busy_one_is_not(run_session):
    with origin_server("plain") as plain:
        policy = egress([f"allowed.test:{plain.port}"], idle_timeout_seconds=0.5)
        async with run_session(policy) as (port, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"CONNECT allowed.test:{plain.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
            # Busy for longer than the idle timeout: a request every 0.2 s.
            for n in range(4):
                writer.write(f"GET /t{n} HTTP/1.1\r\nHost: allowed.test\r\n\r\n".encode())
                await reader.readuntil(f"hello from plain /t{n} ".encode())
                await asyncio.sleep(0.2)
            started = time.monotonic()
            assert await asyncio.wait_for(reader.read(), 3) == b""
            assert 0.3 < time.monotonic() - started < 2
            writer.close()


async def test_a_slow_header_client_is_cut_at_the_header_deadline(run_session):
    async with run_session(egress(["allowed.test"], header_timeout_seconds=0.5)) as (port, s):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        answer = asyncio.create_task(reader.read())
        for byte in b"GET http://allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\nX-Slow: ":
            if answer.done():
                break
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)
        answer = await asyncio.wait_for(answer, 3)
        assert time.monotonic() - started < 2
        writer.close()
    assert b"HTTP/1.1 408 " in answer and b"X-PAGI-Egress-Reason: header_timeout" in answer


async def test_huge_or_numerous_headers_are_431(run_session):
    async with run_session(egress(["allowed.test"])) as (port, _):
        huge = b"GET http://allowed.test/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000
        answer = await exchange(port, huge)
        assert b"HTTP/1.1 431 " in answer and b"headers_too_large" in answer
        many = b"GET http://allowed.test/ HTTP/1.1\r\nHost: x\r\n" + b"X-A: 1\r\n" * 150 + b"\r\n"
        answer = await exchange(port, many)
        assert b"HTTP/1.1 431 " in answer and b"151 header fields" in answer


async def test_hostile_clients_of_one_run_do_not_hold_up_another(run_session):
    with origin_server("plain") as plain:
        hostile_policy = egress(["allowed.test"], header_timeout_seconds=5.0, max_connections=8)
        good_policy = egress([f"allowed.test:{plain.port}"])
        async with (
            run_session(hostile_policy, request_id="hostile") as (bad_port, bad),
            run_session(good_policy, request_id="good") as (good_port, good),
        ):
            stop = asyncio.Event()

            async def slowloris() -> None:
                reader, writer = await asyncio.open_connection("127.0.0.1", bad_port)
                answer = asyncio.create_task(reader.read())
                writer.write(b"GET http://allowed.test/ HTTP/1.1\r\n")
                while not stop.is_set() and not answer.done():
                    writer.write(b"X: y\r\n")
                    await asyncio.sleep(0.1)
                answer.cancel()
                writer.close()

            async def garbage() -> None:
                while not stop.is_set():
                    try:
                        await exchange(bad_port, b"\x00\xff" * 5000 + b"\r\n\r\n", wait=2)
                        await exchange(bad_port, b"GET http://x/ HTTP/1.1\r\nX: " + b"a" * 70000)
                    except OSError:
                        pass

            attackers = [asyncio.create_task(slowloris()) for _ in range(8)]
            attackers += [asyncio.create_task(garbage()) for _ in range(4)]
            await asyncio.sleep(0.3)
            started = time.monotonic()
            results = await fetch_all(
                good_port, [{"url": f"http://allowed.test:{plain.port}/ok{n}"} for n in range(5)]
            )
            elapsed = time.monotonic() - started
            stop.set()
            await asyncio.gather(*attackers, return_exceptions=True)
    assert [r.get("status") for r in results] == [200] * 5, results
    assert elapsed < 10, elapsed  # a Python start and five requests: well under
    assert good.report.denials == []
    assert {d["reason"] for d in bad.report.denials} <= {
        "connection_limit",
        "bad_request",
        "headers_too_large",
        "header_timeout",
    }
    assert bad.report.denials


async def test_closing_a_session_cuts_its_tunnels_and_its_listener(run_session, proxy):
    with origin_server("plain") as plain:
        async with run_session(egress([f"allowed.test:{plain.port}"])) as (port, session):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"CONNECT allowed.test:{plain.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
            assert proxy.stats() == {"sessions": 1, "connections": 1}
            report = await session.close()
            try:
                rest = await asyncio.wait_for(reader.read(), 2)
            except ConnectionResetError:
                rest = b""
            assert rest == b""
            assert session.closed and report.upstream_connections == 1
            assert proxy.stats() == {"sessions": 0, "connections": 0}
            try:
                await asyncio.open_connection("127.0.0.1", port)
            except ConnectionRefusedError:
                pass
            else:
                raise AssertionError("the listener still accepts after the run ended")
