"""Hostile HTTP requests against every route of every running service.

Each service's routes come from its own OpenAPI document, so a route added
later is fuzzed without touching this file. The rule under test: a 2xx or a
4xx with PAGI's JSON error, never a 5xx, never a hang, and the service
still serves afterwards.
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Callable

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pagi.request_id import accept_request_id
from pagi.stack import Stack
from tests.fuzz.conftest import HTTP_SERVICES
from tests.fuzz.hostile_http import (
    Route,
    answer_problem,
    hostile_requests,
    routes_from_openapi,
    send,
)
from tests.fuzz.live import assert_serving, http_response_complete, recent_logs

pytestmark = pytest.mark.slow

EXAMPLES_PER_SERVICE = 150
ANSWER_DEADLINE_SECONDS = 15.0

CONTRACT_ROUTES: dict[str, list[Route]] = {
    "agent": [Route("POST", "/api/v1/plan", ["prompt"])],
    "sandbox": [Route("POST", "/api/v1/execute_tool", ["tool_name", "code"])],
    "bff": [
        Route("POST", "/api/v1/echo", ["ping", "request_id"]),
        Route("GET", "/api/v1/agi/dashboard-data"),
    ],
    "memory": [Route("GET", "/memory/latest")],
}


def service_routes(base_url: str, service: str) -> list[Route]:
    """The contract routes plus whatever else the service's OpenAPI document lists."""
    routes = list(CONTRACT_ROUTES[service])
    response = httpx.get(f"{base_url}/openapi.json", timeout=5, trust_env=False)
    if response.status_code == 200:
        known = {(r.method, r.path) for r in routes}
        routes += [
            r for r in routes_from_openapi(response.json()) if (r.method, r.path) not in known
        ]
    return routes


def token_headers(token_for: Callable[..., str], audience: str) -> st.SearchStrategy[str | None]:
    """Authorization header values: absent, valid, wrong audience, garbage."""
    return st.one_of(
        st.none(),
        st.builds(lambda: f"Bearer {token_for(audience)}"),
        st.builds(lambda: f"Bearer {token_for(audience)}"),
        st.builds(lambda: f"Bearer {token_for(audience)}"),
        st.builds(lambda: f"Bearer {token_for(audience)}"),
        st.builds(lambda: f"Bearer {token_for('gateway')}"),
        st.sampled_from(["Bearer", "Bearer  x", "Basic YWRtaW46YWRtaW4=", "bearer x.y.z", "Token"]),
        st.from_regex(r"Bearer [A-Za-z0-9_\-.]{1,400}", fullmatch=True),
    )


@pytest.mark.parametrize("service", HTTP_SERVICES)
def test_hostile_requests_get_json_answers(live_stack: Stack, token_for, service: str):
    base_url = live_stack.settings.url_of(service)
    routes = service_routes(base_url, service)
    client = httpx.Client(base_url=base_url, timeout=ANSWER_DEADLINE_SECONDS, trust_env=False)
    statuses: Counter[int] = Counter()

    @settings(
        max_examples=EXAMPLES_PER_SERVICE,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(request=hostile_requests(routes, token_headers(token_for, service)))
    def attack(request):
        try:
            response = send(client, request)
        except httpx.TimeoutException:
            pytest.fail(
                f"no answer within {ANSWER_DEADLINE_SECONDS}s: {request.reproducer(base_url)}"
            )
        statuses[response.status_code] += 1
        problem = answer_problem(request, response)
        assert problem is None, (
            f"{problem}\nreproduce: {request.reproducer(base_url)}\n"
            f"service log:\n{recent_logs(live_stack, service, 15)}"
        )

    with client:
        attack()
    print(f"{service}: answers by status {dict(sorted(statuses.items()))}")
    assert_serving(base_url)
    # Guards the fuzzer itself: some hostile requests must get through to the routes.
    assert statuses[200] + statuses[201] > 0, statuses


# --------------------------------------------------------------------------- raw bytes

RAW_REQUESTS = [
    b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: \x00\x01\x02\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: \xff\xfe\xfd\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: " + b"A" * 60000 + b"\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: y\r\n" * 2000 + b"\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: a\r\nX-Request-Id: b\r\n\r\n",
    b"POST /api/v1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST /api/v1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
    b"POST /api/v1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n{}",
    b"POST /api/v1/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST /api/v1/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 3\r\n\r\n0\r\n\r\n",
    b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /health?" + b"a=1&" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET " + b"/a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"BREW /health HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"\r\n\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"A" * 70000 + b"\r\n\r\n",
]


def raw_exchange(host: str, port: int, payload: bytes, timeout: float = 5.0) -> bytes:
    """Send bytes and read one response, until it is complete, the server closes, or timeout.

    The socket is not half-closed: the server would take the end of input for
    a client gone away and drop the request. An empty result means no
    answer came (a request still incomplete in the server's eyes).
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        try:
            sock.sendall(payload)
        except OSError:
            pass  # the server may close before it has read everything
        data = b""
        deadline = time.monotonic() + timeout
        while not http_response_complete(data) and time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            data += chunk
        return data


@pytest.mark.parametrize("service", HTTP_SERVICES)
def test_malformed_http_never_gets_a_server_error(live_stack: Stack, service: str):
    """Protocol-level garbage: a 4xx or a closed connection, never a 5xx or a stuck socket."""
    settings_ = live_stack.settings
    port = settings_.port_of(service)
    failures = []
    for payload in RAW_REQUESTS:
        answer = raw_exchange("127.0.0.1", port, payload, timeout=2.0)
        status_line = answer.split(b"\r\n", 1)[0]
        if status_line.startswith(b"HTTP/1.1 5") or status_line.startswith(b"HTTP/1.0 5"):
            failures.append(f"{payload[:80]!r} -> {status_line!r}")
    assert not failures, "\n".join(failures)
    assert_serving(settings_.url_of(service))


HEADER_NAMES = st.one_of(
    st.from_regex(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,40}", fullmatch=True),
    st.binary(min_size=1, max_size=40),
    st.sampled_from([b"X-Request-Id", b"x-request-id", b"Content-Type", b"Authorization"]),
)
# Anything but the line break that would end the header line.
HEADER_VALUES = st.binary(max_size=400).map(lambda v: v.replace(b"\r", b"").replace(b"\n", b""))


def _status_and_headers(answer: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    head = answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return head[0], headers


@pytest.mark.parametrize("service", HTTP_SERVICES)
def test_raw_header_bytes(live_stack: Stack, token_for, service: str):
    """Header lines of arbitrary bytes, X-Request-Id of any length and content, on the wire."""
    port = live_stack.settings.port_of(service)
    method, path, body = {
        "agent": ("POST", "/api/v1/plan", b'{"prompt": "x"}'),
        "sandbox": ("POST", "/api/v1/execute_tool", b'{"tool_name": "demo"}'),
        "bff": ("POST", "/api/v1/echo", b'{"ping": "x"}'),
        "memory": ("GET", "/memory/latest", b""),
    }[service]
    token = token_for(service).encode()

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        extra=st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=5),
        request_id=st.one_of(HEADER_VALUES, st.binary(min_size=1000, max_size=12000)),
    )
    def attack(extra, request_id):
        request_id = request_id.replace(b"\r", b"").replace(b"\n", b"")
        lines = [b"%s: %s" % (name, value) for name, value in extra]
        payload = b"\r\n".join(
            [
                f"{method} {path} HTTP/1.1".encode(),
                b"Host: x",
                b"Authorization: Bearer " + token,
                b"Content-Type: application/json",
                b"Content-Length: %d" % len(body),
                *lines,
                b"X-Request-Id: " + request_id,
                b"",
                body,
            ]
        )
        answer = raw_exchange("127.0.0.1", port, payload)
        assert answer, f"no answer to a complete request: {payload[:300]!r}"
        status, headers = _status_and_headers(answer)
        assert not status.startswith((b"HTTP/1.1 5", b"HTTP/1.0 5")), (payload[:300], answer[:500])
        echoed = headers.get(b"x-request-id")
        if echoed is not None:
            assert accept_request_id(echoed) == echoed.decode(), (payload[:300], echoed)

    attack()
    assert_serving(live_stack.settings.url_of(service))
