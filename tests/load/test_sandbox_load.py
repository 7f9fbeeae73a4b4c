"""The sandbox under load (short CI version; ``bench/load.py`` runs the full sizes).

A burst far above capacity (100 clients at once against 4 run slots and a
queue of 64) runs at least ``MIN_RUN_SHARE`` of its requests and answers
every other one with a 429 that has Retry-After; memory stays bounded;
afterwards there are no zombies, no leftover working dirs and no more open
fds than before. Sequential runs leak nothing either. Over-limit bodies
are refused before they are read, and slow clients do not keep others
from being served.
"""

from __future__ import annotations

import asyncio
import re
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pagi.stack import Stack
from sandbox.policy import load_policy
from sandbox.service import body_limit
from testing.live import (
    http_response_complete,
    recent_logs,
    rss_bytes,
    service_pid,
    start_live_stack,
)
from testing.load_driver import (
    PeakSampler,
    ProcessSnapshot,
    burst,
    fds_of_new_jails,
    jails_built_ahead,
    sequential,
    settle,
    slow_clients,
)
from testing.stack import REPO

BURST_REQUESTS = 300
BURST_CONCURRENCY = 100
MIN_RUN_SHARE = 0.75
"""Requests of the burst that run. With the default policy (4 runs at once, a queue of
64) the burst's first wave overflows the queue by 32, so about 89 % can run; measured
on the 2-core machine 0.87-0.94, idle or with four CPU burners beside it. A queue of 32
gave 0.70, of 8 0.51, none 0.39: the bar fails a queue that lost half its places."""
SEQUENTIAL_RUNS = 150
RSS_GROWTH_LIMIT = 48 * 2**20
"""Growth of the service's own RSS a load may leave behind (allocator slack)."""
PEAK_TREE_RSS_LIMIT = 768 * 2**20
"""Peak RSS of the service and its runs above the resting figure."""
SETTLE_SECONDS = 15.0


@pytest.fixture(scope="module")
def sandbox_stack(tmp_path_factory: pytest.TempPathFactory, keys_dir: Path) -> Iterator[Stack]:
    stack = start_live_stack(tmp_path_factory.mktemp("load-state"), keys_dir, services=["sandbox"])
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def token(token_for) -> str:
    return token_for("sandbox", ttl=3600)


@pytest.fixture(scope="module")
def work_root(sandbox_stack: Stack) -> Path:
    return Path(sandbox_stack.env["PAGI_STATE_DIR"]) / "sandbox"


@pytest.fixture(scope="module")
def warmed(sandbox_stack: Stack, token: str) -> None:
    """A few runs first, so that lazily created state is not counted as a leak."""
    base_url = sandbox_stack.settings.url_of("sandbox")
    report = asyncio.run(sequential(base_url, token, 10))
    assert report.statuses == {200: 10}, report.summary()


def _footprint_report(before: ProcessSnapshot, after: ProcessSnapshot) -> str:
    return f"before: {before.describe()}\nafter:  {after.describe()}"


def test_burst_runs_to_capacity_refuses_cleanly_and_leaves_nothing(
    sandbox_stack: Stack, token: str, work_root: Path, warmed
):
    pid = service_pid(sandbox_stack, "sandbox")
    base_url = sandbox_stack.settings.url_of("sandbox")
    ahead = jails_built_ahead(base_url)
    before = ProcessSnapshot.take(pid, work_root)
    with PeakSampler(pid) as sampler:
        report = asyncio.run(burst(base_url, token, BURST_REQUESTS, BURST_CONCURRENCY))
    allowed = fds_of_new_jails(base_url, ahead)
    after = settle(pid, work_root, before, SETTLE_SECONDS, allowed)
    figures = f"{report.summary()}\npeak tree rss {sampler.peak / 2**20:.1f} MiB, " + (
        f"peak fds {sampler.peak_fds}\n{_footprint_report(before, after)}"
    )
    print(figures)

    assert report.capacity_problems(BURST_REQUESTS, MIN_RUN_SHARE) == [], figures
    assert sampler.peak - before.tree_rss < PEAK_TREE_RSS_LIMIT, figures
    assert after.rss - before.rss < RSS_GROWTH_LIMIT, figures
    assert after.zombies == 0, figures
    assert after.workdirs <= before.workdirs, figures
    assert after.fds <= before.fds + allowed(), figures
    assert sandbox_stack.processes["sandbox"].process.poll() is None, recent_logs(
        sandbox_stack, "sandbox"
    )


def test_capacity_check_fails_a_sandbox_with_an_eighth_of_its_queue(
    tmp_path: Path, keys_dir: Path, token: str
):
    """Guards the bar: with a queue of 8, not 64, too few requests run and the check says so."""
    text = (REPO / "policies" / "sandbox.toml").read_text()
    policy = tmp_path / "policy.toml"
    policy.write_text(re.sub(r"^queue_length = \d+$", "queue_length = 8", text, flags=re.M))
    assert policy.read_text() != text, "the default policy has no queue_length to shrink"
    stack = start_live_stack(
        tmp_path / "state", keys_dir, services=["sandbox"], PAGI_SANDBOX_POLICY=str(policy)
    )
    try:
        base_url = stack.settings.url_of("sandbox")
        report = asyncio.run(burst(base_url, token, BURST_REQUESTS, BURST_CONCURRENCY))
    finally:
        stack.stop()
    print(f"queue of 8: {report.summary()}")
    problems = report.capacity_problems(BURST_REQUESTS, MIN_RUN_SHARE)
    assert len(problems) == 1 and "must" in problems[0], (problems, report.summary())


def test_sequential_runs_do_not_leak(sandbox_stack: Stack, token: str, work_root: Path, warmed):
    pid = service_pid(sandbox_stack, "sandbox")
    base_url = sandbox_stack.settings.url_of("sandbox")
    ahead = jails_built_ahead(base_url)
    before = ProcessSnapshot.take(pid, work_root)
    report = asyncio.run(sequential(base_url, token, SEQUENTIAL_RUNS))
    allowed = fds_of_new_jails(base_url, ahead)
    after = settle(pid, work_root, before, SETTLE_SECONDS, allowed)
    figures = f"{report.summary()}\n{_footprint_report(before, after)}"
    print(figures)

    assert report.statuses == {200: SEQUENTIAL_RUNS}, figures
    assert report.tool_statuses == {"ok": SEQUENTIAL_RUNS}, figures
    assert after.rss - before.rss < RSS_GROWTH_LIMIT, figures
    assert after.zombies == 0, figures
    assert after.workdirs <= before.workdirs, figures
    assert after.fds <= before.fds + allowed(), figures


# --------------------------------------------------------------------------- size limits


def _read_answer(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while not http_response_complete(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_oversized_body_is_refused_before_it_is_sent(sandbox_stack: Stack, token: str):
    """A declared 50 MB body gets 413 while the client has sent only its headers."""
    port = sandbox_stack.settings.port_of("sandbox")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(
            b"POST /api/v1/execute_tool HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n"
            b'{"tool_name": "python", "code": "'
        )
        answer = _read_answer(sock, timeout=5)
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"application/json" in answer.lower(), answer[:300]
    assert elapsed < 2.0, f"413 took {elapsed:.2f}s"


def test_chunked_body_over_the_limit_is_cut_off(sandbox_stack: Stack, token: str):
    """Without a Content-Length the body is counted as it arrives and refused at the limit.

    The 413 must come while the client is still sending, not after the whole
    body; socket buffers on both sides let a few MiB through before it shows.
    """
    port = sandbox_stack.settings.port_of("sandbox")
    pid = service_pid(sandbox_stack, "sandbox")
    rss_before = rss_bytes(pid)
    chunk = b"A" * 65536
    sent = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST /api/v1/execute_tool HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        while sent < 64 * 2**20 and not answer:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                break  # the server answered and closed
            sent += len(chunk)
            if select.select([sock], [], [], 0)[0]:
                answer = sock.recv(65536)
        if not answer:
            answer = _read_answer(sock, timeout=5)
    print(f"chunked upload: answer after {sent / 2**20:.1f} MiB sent: {answer[:20]!r}")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    # The policy's limit (code and input files), then the socket buffers; never the whole body.
    limit = body_limit(load_policy(REPO / "policies" / "sandbox.toml"))
    assert sent < limit + 16 * 2**20, f"the answer came only after {sent} bytes"
    grown = rss_bytes(pid) - rss_before
    assert grown < limit + 16 * 2**20, "the refused body was buffered beyond the limit"


def test_code_over_the_policy_limit_gets_413(sandbox_stack: Stack, token: str):
    base_url = sandbox_stack.settings.url_of("sandbox")
    response = httpx.post(
        f"{base_url}/api/v1/execute_tool",
        json={"tool_name": "python", "code": "#" * (64 * 1024 + 1)},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
        trust_env=False,
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"], response.text


# --------------------------------------------------------------------------- slow clients

SLOW_CONNECTIONS = 150
SLOW_SECONDS = 6.0
PROBE_DEADLINE_SECONDS = 2.0


def test_slow_clients_do_not_starve_others(sandbox_stack: Stack, token: str):
    settings = sandbox_stack.settings
    base_url = settings.url_of("sandbox")
    client = httpx.Client(
        base_url=base_url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=PROBE_DEADLINE_SECONDS,
        trust_env=False,
    )

    def probe() -> float:
        started = time.monotonic()
        response = client.post("/api/v1/execute_tool", json={"tool_name": "demo"})
        assert response.status_code == 200, response.text
        return time.monotonic() - started

    with client:
        report = slow_clients(
            "127.0.0.1", settings.port_of("sandbox"), probe, SLOW_CONNECTIONS, SLOW_SECONDS
        )
    print(report.summary())
    assert not report.probe_failures, report.summary()
    assert len(report.probe_latencies) >= 10, report.summary()
    assert max(report.probe_latencies) < PROBE_DEADLINE_SECONDS, report.summary()


# --------------------------------------------------------------------------- keep-alive

CLIENT_REUSE_SECONDS = 5.0
"""How long httpx (the client every PAGI service uses) keeps an idle connection for reuse."""


def test_idle_connection_outlives_the_clients_reuse_window(sandbox_stack: Stack):
    """A connection idle as long as a client may reuse it is still served.

    If the server closed idle connections no later than clients reuse them,
    a request sent at that moment would fail with a connection error; under
    load that was 0.3 % of requests.
    """
    port = sandbox_stack.settings.port_of("sandbox")
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        assert _read_answer(sock, timeout=5).startswith(b"HTTP/1.1 200")
        time.sleep(CLIENT_REUSE_SECONDS + 0.5)
        sock.sendall(request)
        again = _read_answer(sock, timeout=5)
    assert again.startswith(b"HTTP/1.1 200"), f"idle connection was closed: {again[:100]!r}"
