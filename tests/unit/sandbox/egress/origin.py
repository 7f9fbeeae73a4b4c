"""Origin servers on loopback for the egress tests (HTTP, HTTPS) and a urllib client."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import ssl
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

TEST_NAMES = ["allowed.test", "other.test", "private.test", "rebind.test", "denied.allowed.test"]


@dataclass
class Origin:
    """A server on loopback that names itself in every answer and notes what it got."""

    name: str
    host: str
    port: int
    seen: list[dict[str, Any]] = field(default_factory=list)


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate (and key) for the test names, 127.0.0.1 and localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "allowed.test")])
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in [*TEST_NAMES, "localhost"]]
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _handler(origin: Origin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _handle(self) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            origin.seen.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "host": self.headers.get("Host"),
                    "proxy_authorization": self.headers.get("Proxy-Authorization"),
                    "body": body.decode("utf-8", "replace"),
                }
            )
            if url.path == "/redirect":
                self._answer(302, b"", {"Location": query["to"][0]})
            elif url.path == "/big":
                self._answer(200, b"x" * int(query["n"][0]))
            else:
                self._answer(200, f"hello from {origin.name} {url.path} {body.decode()}".encode())

        do_GET = do_POST = do_HEAD = do_PUT = _handle

    return Handler


@contextmanager
def origin_server(
    name: str, host: str = "127.0.0.1", tls: tuple[Path, Path] | None = None, port: int = 0
) -> Iterator[Origin]:
    """Serve in a thread until the block ends."""
    origin = Origin(name=name, host=host, port=0)
    server = ThreadingHTTPServer((host, port), _handler(origin))
    server.daemon_threads = True
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    origin.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield origin
    finally:
        server.shutdown()
        server.server_close()


CLIENT = r"""
import json, ssl, sys, urllib.request, urllib.error
requests = json.load(sys.stdin)
results = []
for r in requests:
    context = ssl.create_default_context(cafile=r["cafile"]) if r.get("cafile") else None
    data = r["data"].encode() if r.get("data") is not None else None
    req = urllib.request.Request(r["url"], data=data, method=r.get("method"))
    try:
        with urllib.request.urlopen(req, context=context, timeout=20) as answer:
            results.append({"status": answer.status, "body": answer.read().decode(),
                            "reason": answer.headers.get("X-PAGI-Egress-Reason")})
    except urllib.error.HTTPError as exc:
        results.append({"status": exc.code, "body": exc.read().decode(),
                        "reason": exc.headers.get("X-PAGI-Egress-Reason"),
                        "rule": exc.headers.get("X-PAGI-Egress-Rule")})
    except Exception as exc:
        results.append({"error": f"{type(exc).__name__}: {exc}"})
print(json.dumps(results))
"""


def proxy_environment(proxy_port: int) -> dict[str, str]:
    """What the jail sets: both spellings of the proxy variables, nothing bypassed."""
    url = f"http://127.0.0.1:{proxy_port}"
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "all_proxy")}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env[name] = url
    return env


async def fetch_all(
    proxy_port: int, requests: list[dict[str, Any]], argv_prefix: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Run urllib in a subprocess through the proxy, one result per request."""
    process = await asyncio.create_subprocess_exec(
        *argv_prefix,
        sys.executable,
        "-I",
        "-c",
        CLIENT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=proxy_environment(proxy_port),
    )
    out, err = await asyncio.wait_for(
        process.communicate(json.dumps(requests).encode()), timeout=120
    )
    assert process.returncode == 0, err.decode()
    return json.loads(out)
