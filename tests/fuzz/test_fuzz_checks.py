"""The live fuzzers' own checks, run against fakes that misbehave on purpose.

A fuzz test proves something only if its check fails on a broken service.
Each fake here is one way a service can fail a client: it hangs, answers
too late, answers half, closes without a word, answers 5xx, is gone, or
answers a tool run without running the code, or leaves a process behind.
The checks must call each of those a failure, and still pass a good answer.
"""

from __future__ import annotations

import json
import socket
import socketserver
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import httpx
import pytest

from testing.live import (
    assert_grpc_answer,
    grpc_answer,
    grpc_answer_problem,
    raw_answer_problem,
    raw_exchange,
)
from testing.load_driver import ProcessSnapshot
from tests.fuzz.tool_runs import (
    RunProof,
    compile_verdict,
    leftovers,
    run_problem,
    survivors,
    with_prelude,
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


# --------------------------------------------------------------------------- tool runs


def _tool_answer(status: int, body: dict, delay: float = 0.0) -> tuple[httpx.Response, float]:
    """The answer a fake sandbox gives, and how long it took."""

    def handle(request: httpx.Request) -> httpx.Response:
        time.sleep(delay)
        return httpx.Response(status, json=body)

    with httpx.Client(transport=httpx.MockTransport(handle), base_url="http://sandbox") as client:
        started = time.monotonic()
        response = client.post("/api/v1/execute_tool", json={"tool_name": "python", "code": ""})
        return response, time.monotonic() - started


def _result(stdout: str = "", stderr: str = "", status: str = "ok", exit_code: int = 0) -> dict:
    return {
        "tool_status": status,
        "result": {
            "stdout": stdout,
            "stderr": stderr,
            "exit_code": exit_code,
            "duration_ms": 12.0,
            "stdout_truncated": False,
        },
    }


def test_run_check_passes_a_run_that_happened():
    _, proof = with_prelude("print(1)")
    response, elapsed = _tool_answer(200, _result(f"{proof.ran_line}\n1\n"))
    assert run_problem(response, proof, elapsed, WITHIN) == ""
    refused = compile_verdict("x y")
    response, elapsed = _tool_answer(
        200, _result(stderr="SyntaxError: invalid syntax\n", status="error", exit_code=1)
    )
    assert run_problem(response, refused, elapsed, WITHIN) == ""
    indented = compile_verdict(" 0")
    response, elapsed = _tool_answer(
        200, _result(stderr="IndentationError: unexpected indent\n", status="error", exit_code=1)
    )
    assert run_problem(response, indented, elapsed, WITHIN) == ""


def test_run_check_fails_a_refusal_of_code_that_fits_the_policy():
    _, proof = with_prelude("print(1)")
    response, elapsed = _tool_answer(413, {"error": "code too large"})
    assert "never ran" in run_problem(response, proof, elapsed, WITHIN)


def test_run_check_fails_a_run_that_never_started_the_program():
    _, proof = with_prelude("print(1)")
    response, elapsed = _tool_answer(200, _result(""))
    assert "first line never showed" in run_problem(response, proof, elapsed, WITHIN)


def test_run_check_fails_a_verdict_the_interpreter_never_gave():
    assert compile_verdict("x y") == RunProof(syntax_error=True)
    assert compile_verdict("\ufeffprint(1)") == RunProof(syntax_error=False)
    response, elapsed = _tool_answer(200, _result(""))
    assert "no SyntaxError" in run_problem(response, compile_verdict("x y"), elapsed, WITHIN)
    silent_failure = _result(status="error", exit_code=1)
    response, elapsed = _tool_answer(200, silent_failure)
    problem = run_problem(response, compile_verdict("x"), elapsed, WITHIN)
    assert "without a traceback" in problem


def test_run_check_fails_a_late_answer():
    _, proof = with_prelude("print(1)")
    response, elapsed = _tool_answer(200, _result(f"{proof.ran_line}\n"), delay=SLOW_SECONDS)
    assert "more than" in run_problem(response, proof, elapsed, WITHIN)


REST = ProcessSnapshot(rss=0, tree_rss=0, fds=20, zombies=0, children=3, workdirs=1)


def test_leftover_check_passes_a_service_back_at_rest():
    assert leftovers(REST, REST, kept_fds=0, stray=[]) == []
    more_jails = ProcessSnapshot(rss=0, tree_rss=0, fds=25, zombies=0, children=5, workdirs=1)
    assert leftovers(REST, more_jails, kept_fds=5, stray=[]) == []


def test_leftover_check_fails_zombies_workdirs_and_fds():
    after = ProcessSnapshot(rss=0, tree_rss=0, fds=26, zombies=1, children=3, workdirs=2)
    problems = json.dumps(leftovers(REST, after, kept_fds=5, stray=[]))
    assert "zombies" in problems and "working dirs" in problems and "fds" in problems, problems


def test_survivor_check_finds_a_marked_process_left_running():
    marker = f"pagi-check-probe-{uuid.uuid4().hex[:12]}"
    left = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", marker])
    try:
        stray = survivors(marker, grace=0.2)
        assert [line for line in stray if line.startswith(f"{left.pid}:")], stray
        assert "outlived their run" in "".join(leftovers(REST, REST, 0, stray))
    finally:
        left.kill()
        left.wait()
    assert survivors(marker, grace=2.0) == []
