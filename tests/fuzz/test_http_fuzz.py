"""Hostile HTTP requests against every route of every running service.

Each service's routes come from its own OpenAPI document, so a route added
later is fuzzed without touching this file. The rule under test: a 2xx or a
4xx with PAGI's JSON error, never a 5xx, never a hang, and the service
still serves afterwards.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pagi.request_id import accept_request_id
from pagi.stack import Stack
from testing.live import (
    HTTP_SERVICES,
    assert_serving,
    raw_answer_problem,
    raw_exchange,
    recent_logs,
)
from tests.fuzz.hostile_http import (
    Route,
    answer_problem,
    hostile_requests,
    routes_from_openapi,
    send,
)

pytestmark = pytest.mark.slow

EXAMPLES_PER_SERVICE = 150
CLIENT_TIMEOUT = 15.0
ANSWER_WITHIN = 8.0
"""Above the longest wait a request may cause downstream (FUZZ_ENV: 2 s HTTP, 3 s gRPC,
one after the other), well inside the client's timeout."""
RAW_TIMEOUT = 5.0
"""How long a raw exchange waits before calling the socket stuck."""
RAW_ANSWER_WITHIN = 2.0
"""Garbage is refused by the HTTP parser in milliseconds; 2 s is for a loaded machine."""

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
    client = httpx.Client(base_url=base_url, timeout=CLIENT_TIMEOUT, trust_env=False)
    statuses: Counter[int] = Counter()
    slowest = [0.0]

    @settings(
        max_examples=EXAMPLES_PER_SERVICE,
        deadline=None,
    )
    @given(request=hostile_requests(routes, token_headers(token_for, service)))
    def attack(request):
        started = time.monotonic()
        try:
            response = send(client, request)
        except httpx.TimeoutException:
            pytest.fail(f"no answer within {CLIENT_TIMEOUT}s: {request.reproducer(base_url)}")
        elapsed = time.monotonic() - started
        slowest[0] = max(slowest[0], elapsed)
        assert elapsed <= ANSWER_WITHIN, (
            f"answered after {elapsed:.2f}s, more than {ANSWER_WITHIN}s: "
            f"{request.reproducer(base_url)}"
        )
        statuses[response.status_code] += 1
        problem = answer_problem(request, response)
        assert problem is None, (
            f"{problem}\nreproduce: {request.reproducer(base_url)}\n"
            f"service log:\n{recent_logs(live_stack, service, 15)}"
        )

    with client:
        if service == "bff":
            # The console's API answers a signed-in browser: the fuzzer signs in as one
            # (a sign-in link is an operator-signed token for the "console" audience).
            signed_in = client.post("/console/api/session", json={"token": token_for("console")})
            assert signed_in.status_code == 200, signed_in.text
        attack()
    print(
        f"{service}: answers by status {dict(sorted(statuses.items()))}, slowest {slowest[0]:.2f}s"
    )
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


@pytest.mark.parametrize("service", HTTP_SERVICES)
def test_malformed_http_never_gets_a_server_error(live_stack: Stack, service: str):
    """Protocol-level garbage: a whole answer that is not a 5xx, at once; never a stuck socket."""
    settings_ = live_stack.settings
    port = settings_.port_of(service)
    failures = []
    for payload in RAW_REQUESTS:
        answer = raw_exchange("127.0.0.1", port, payload, timeout=RAW_TIMEOUT)
        problem = raw_answer_problem(answer, RAW_ANSWER_WITHIN)
        if problem is not None:
            failures.append(f"{payload[:80]!r} -> {problem}")
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

    @settings(max_examples=60, deadline=None)
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
        answer = raw_exchange("127.0.0.1", port, payload, timeout=RAW_TIMEOUT)
        problem = raw_answer_problem(answer, RAW_ANSWER_WITHIN)
        assert problem is None, f"{problem}\nsent: {payload[:300]!r}"
        _, headers = _status_and_headers(answer.data)
        echoed = headers.get(b"x-request-id")
        if echoed is not None:
            assert accept_request_id(echoed) == echoed.decode(), (payload[:300], echoed)

    attack()
    assert_serving(live_stack.settings.url_of(service))
