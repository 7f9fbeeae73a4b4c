"""The live fuzzers' answer checks, run against fake servers that misbehave on purpose.

A fuzz test proves something only if its check fails on a broken service.
Each fake here is one way a service can fail a client: it hangs, answers
too late, answers half, closes without a word, answers 5xx, or is gone.
The checks must call each of those a failure, and still pass a good answer.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest

from tests.fuzz.live import (
    assert_grpc_answer,
    grpc_answer,
    grpc_answer_problem,
    raw_answer_problem,
    raw_exchange,
)

OK = grpc.StatusCode.OK
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
CALL_TIMEOUT = 1.0
WITHIN = 0.5
"""Small versions of the fuzzers' bounds (15 s timeout, answers within 5 s)."""
SLOW_SECONDS = 0.8
"""Between WITHIN and CALL_TIMEOUT: an answer that comes, but too late."""


# --------------------------------------------------------------------------- gRPC


def _identity(data: bytes) -> bytes:
    return data


@pytest.fixture(scope="module")
def fake_grpc() -> Iterator[grpc.Channel]:
    """A gRPC server whose methods answer well, badly, late or never."""
    release = threading.Event()

    def hang(request: bytes, context: grpc.ServicerContext) -> bytes:
        release.wait(30)
        return b""

    def slow(request: bytes, context: grpc.ServicerContext) -> bytes:
        time.sleep(SLOW_SECONDS)
        return b""

    def refuse(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(INVALID_ARGUMENT, "not a valid request")

    def wedged(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(grpc.StatusCode.UNAVAILABLE, "wedged")

    def stream_then_hang(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield b"first step"
        release.wait(30)

    def unary(handler: Callable[..., bytes]) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(handler, _identity, _identity)

    handlers = {
        "Ok": unary(lambda request, context: b"ok"),
        "Hang": unary(hang),
        "Slow": unary(slow),
        "Refuse": unary(refuse),
        "Wedged": unary(wedged),
        "StreamThenHang": grpc.unary_stream_rpc_method_handler(
            stream_then_hang, _identity, _identity
        ),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("fake.Fake", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    release.set()
    server.stop(grace=None)


def _call(channel: grpc.Channel, method: str, stream: bool = False) -> Callable[[], object]:
    make = channel.unary_stream if stream else channel.unary_unary
    call = make(
        f"/fake.Fake/{method}", request_serializer=_identity, response_deserializer=_identity
    )
    return lambda: call(b"", timeout=CALL_TIMEOUT)


def test_grpc_check_passes_a_prompt_deliberate_answer(fake_grpc):
    assert assert_grpc_answer(_call(fake_grpc, "Ok"), {OK}, WITHIN) == OK
    assert assert_grpc_answer(_call(fake_grpc, "Refuse"), {OK, INVALID_ARGUMENT}, WITHIN) == (
        INVALID_ARGUMENT
    )


def test_grpc_check_fails_a_hang(fake_grpc):
    answer = grpc_answer(_call(fake_grpc, "Hang"))
    assert answer.code == grpc.StatusCode.DEADLINE_EXCEEDED, answer
    problem = grpc_answer_problem(answer, {OK, INVALID_ARGUMENT}, WITHIN)
    assert problem is not None and "no answer within" in problem, problem
    # Even with a bound looser than the call's timeout, the hang's status fails.
    assert grpc_answer_problem(answer, {OK, INVALID_ARGUMENT}, 10 * CALL_TIMEOUT) is not None


def test_grpc_check_fails_a_stream_that_stops_half_way(fake_grpc):
    with pytest.raises(AssertionError, match="DEADLINE_EXCEEDED"):
        assert_grpc_answer(_call(fake_grpc, "StreamThenHang", stream=True), {OK}, WITHIN)


def test_grpc_check_fails_an_answer_that_comes_too_late(fake_grpc):
    answer = grpc_answer(_call(fake_grpc, "Slow"))
    assert answer.code == OK, answer
    problem = grpc_answer_problem(answer, {OK}, WITHIN)
    assert problem is not None and "no answer within" in problem, problem


def test_grpc_check_fails_a_wedged_or_absent_server(fake_grpc):
    with pytest.raises(AssertionError, match="UNAVAILABLE"):
        assert_grpc_answer(_call(fake_grpc, "Wedged"), {OK, INVALID_ARGUMENT}, WITHIN)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as nobody:
        with pytest.raises(AssertionError, match="UNAVAILABLE"):
            assert_grpc_answer(_call(nobody, "Ok"), {OK, INVALID_ARGUMENT}, WITHIN)


# --------------------------------------------------------------------------- raw HTTP

GOOD = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 17\r\n"
    b'\r\n{"error": "bad"}\n'
)
BEHAVIOURS: dict[str, Callable[[socket.socket, threading.Event], None]] = {
    "good": lambda conn, release: conn.sendall(GOOD),
    "silent": lambda conn, release: release.wait(30),
    "half": lambda conn, release: (conn.sendall(GOOD[:-8]), release.wait(30)),
    "slow": lambda conn, release: (time.sleep(SLOW_SECONDS), conn.sendall(GOOD)),
    "server error": lambda conn, release: conn.sendall(
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"
    ),
    "close": lambda conn, release: None,
}


@pytest.fixture(scope="module")
def fake_http() -> Iterator[Callable[[str], int]]:
    """``port_of(behaviour)``: a TCP server that treats every request that way."""
    release = threading.Event()
    servers: dict[str, socketserver.ThreadingTCPServer] = {}

    for name, behave in BEHAVIOURS.items():

        class Handler(socketserver.BaseRequestHandler):
            act = staticmethod(behave)

            def handle(self) -> None:
                self.request.recv(65536)
                self.act(self.request, release)

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers[name] = server
    yield lambda name: servers[name].server_address[1]
    release.set()
    for server in servers.values():
        server.shutdown()
        server.server_close()


def _exchange(port: int):
    return raw_exchange("127.0.0.1", port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", CALL_TIMEOUT)


def test_raw_check_passes_a_prompt_whole_answer(fake_http):
    answer = _exchange(fake_http("good"))
    assert answer.complete and answer.status_line == b"HTTP/1.1 400 Bad Request", answer
    assert raw_answer_problem(answer, WITHIN) is None


@pytest.mark.parametrize(
    ("behaviour", "named"),
    [
        ("silent", "stuck"),
        ("half", "stuck"),
        ("close", "no whole answer"),
        ("slow", "more than"),
        ("server error", "server error"),
    ],
)
def test_raw_check_fails_a_broken_answer(fake_http, behaviour: str, named: str):
    answer = _exchange(fake_http(behaviour))
    problem = raw_answer_problem(answer, WITHIN)
    assert problem is not None and named in problem, (answer, problem)
