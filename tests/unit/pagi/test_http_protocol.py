"""The HTTP protocol every service runs: JSON for unparseable requests, header deadline."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from pagi import http_protocol
from pagi.app import create_app
from pagi.http_protocol import PagiH11Protocol
from testing.stack import free_port


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.setattr(http_protocol, "HEADER_TIMEOUT_SECONDS", 0.5)
    port = free_port()
    config = uvicorn.Config(
        create_app("demo"), host="127.0.0.1", port=port, http=PagiH11Protocol, log_config=None
    )
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not running.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield port
    running.should_exit = True
    thread.join(timeout=5)


def exchange(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(raw)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nno-colon-here\r\n\r\n",
        b"NOT AN HTTP REQUEST\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_unparseable_requests_get_a_json_400(server: int, raw: bytes) -> None:
    head, _, body = exchange(server, raw).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    assert b"application/json" in head.lower()
    assert json.loads(body)["error"] == "bad_request"


def test_a_client_trickling_headers_is_cut_off(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 4:
            try:
                sock.sendall(b"X-A: b\r\n")
            except OSError:
                closed = True
                break
            sock.settimeout(0.2)
            try:
                if sock.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
    assert closed, "the server kept a connection whose headers never ended"
    assert time.monotonic() - started < 2


def test_keep_alive_connections_serve_several_requests(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=5) as sock:
        for _ in range(2):
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while b'"version"' not in answer:
                chunk = sock.recv(65536)
                assert chunk, "connection closed while idle between requests"
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200"), answer
            time.sleep(0.7)  # idle longer than the header deadline: keep-alive rules here
