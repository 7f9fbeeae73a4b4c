"""Egress by allowlist, end to end: a real sandbox, real jails, origin servers on loopback.

A networked tool's run gets its own empty network namespace with the egress
proxy's listener on its loopback. These tests go through the service's API
as an agent would, with ``urllib`` inside the jail, against HTTP and HTTPS
(self-signed certificate made here) servers the test starts on 127.0.0.1,
which the tools' policy opens with ``allow_private``. Every way past the
proxy an attacker would try is tried: other ports, hosts, a denied host, a
name that resolves to a private address, IP literals, a redirect, a raw
CONNECT, a socket that skips the proxy, UDP. Each must fail, and each
refusal must reach the run's result and the audit log with the request id.

One sandbox per jail mode (root, and unprivileged: uid 10001 with no
capability), each with a cold and a warm networked tool.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pagi.auth import TokenSigner, generate_keys
from pagi.stack import Stack
from testing.stack import REPO, LogCollector, stack_env
from tests.escape.unprivileged import UnprivilegedLauncher, UnprivilegedStack, give_to_unprivileged
from tests.unit.sandbox.egress.origin import Origin, make_certificate, origin_server

pytestmark = pytest.mark.e2e

MODES = ("root", "unprivileged")
TOOLS = ("fetch", "fetch_warm")
"""The same networked tool on the cold and on the warm path."""

REQUIRED_LAYERS = (
    '"userns", "pidns", "netns", "mountns", "ipcns", "utsns",'
    ' "landlock", "seccomp", "rlimits", "no_new_privs", "privileges"'
)


@dataclass
class Servers:
    http: Origin
    https: Origin
    other: Origin
    """Listens too, on a port no rule allows."""
    cafile: Path


def policy_text(servers: Servers, extra_allow: tuple[str, ...] = ()) -> str:
    """The test policy: fetch (cold), fetch_warm, and fetch_public (no allow_private)."""
    allow = [
        f"127.0.0.1:{servers.http.port}",
        f"127.0.0.1:{servers.https.port}",
        f"localhost:{servers.http.port}",
        *extra_allow,
    ]
    network = f"""allow = {json.dumps(allow)}
deny = ["localhost"]
allow_private = ["127.0.0.1/32"]
max_connections = 8
"""
    tool = """argv = ["{{python}}", "-I", "-S", "main.py"]
code = "file"
code_file = "main.py"
executor = "{executor}"
env = {{ LANG = "C.UTF-8" }}
[tools.{name}.limits]
wall_seconds = 20
cpu_seconds = 10
"""
    return f"""[sandbox]
max_concurrent_runs = 2
required_layers = [{REQUIRED_LAYERS}]

[tools.fetch]
{tool.format(name="fetch", executor="cold")}
[tools.fetch.network]
{network}
[tools.fetch_warm]
{tool.format(name="fetch_warm", executor="warm")}
[tools.fetch_warm.network]
{network}
[tools.fetch_public]
{tool.format(name="fetch_public", executor="cold")}
[tools.fetch_public.network]
allow = ["localhost:{servers.http.port}"]

[tools.python]
{tool.format(name="python", executor="cold")}
[callers.operator]
tools = ["*"]
"""


CLIENT = r"""
import json, socket, ssl, urllib.request, urllib.error
REQUESTS = json.loads(__REQUESTS__)
CA = __CA__
results = []
for r in REQUESTS:
    context = ssl.create_default_context(cadata=CA) if r["url"].startswith("https") else None
    try:
        with urllib.request.urlopen(r["url"], context=context, timeout=15) as answer:
            results.append({"status": answer.status, "body": answer.read().decode()})
    except urllib.error.HTTPError as exc:
        results.append({"status": exc.code, "body": exc.read().decode(),
                        "reason": exc.headers.get("X-PAGI-Egress-Reason"),
                        "rule": exc.headers.get("X-PAGI-Egress-Rule")})
    except Exception as exc:
        results.append({"error": f"{type(exc).__name__}: {exc}"})
print(json.dumps(results))
"""


@dataclass
class Sandbox:
    mode: str
    url: str
    policy: Path
    audit: Path
    token: str
    servers: Servers
    stack: Stack

    def execute(self, tool: str, code: str, request_id: str | None = None) -> dict[str, Any]:
        response = httpx.post(
            f"{self.url}/api/v1/execute_tool",
            json={"tool_name": tool, "code": code},
            headers={
                "Authorization": f"Bearer {self.token}",
                "X-Request-Id": request_id or uuid.uuid4().hex,
            },
            timeout=60,
        )
        assert response.status_code == 200, response.text
        return response.json()

    def fetch(self, tool: str, urls: list[str], request_id: str | None = None) -> dict[str, Any]:
        """Run urllib on ``urls`` in ``tool``; the body, with ``answers`` (one per URL)."""
        code = CLIENT.replace("__REQUESTS__", repr(json.dumps([{"url": u} for u in urls])))
        code = code.replace("__CA__", repr(self.servers.cafile.read_text()))
        body = self.execute(tool, code, request_id)
        result = body["result"]
        assert result["exit_code"] == 0, result["stderr"]
        body["answers"] = json.loads(result["stdout"])
        return body

    def edit_policy(self, text: str) -> None:
        tmp = self.policy.with_name(".sandbox.toml.swp")
        tmp.write_text(text)
        os.replace(tmp, self.policy)
        version = hashlib.sha256(text.encode()).hexdigest()[:16]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status = httpx.get(
                f"{self.url}/api/v1/policy",
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=5,
            ).json()
            if status["version"] == version:
                return
            time.sleep(0.05)
        raise AssertionError(f"the policy edit never went live: {status}")

    def counted(self, name: str, **labels: str) -> float:
        """The value of one sample of the sandbox's /metrics (0 when not there yet)."""
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        return 0.0

    def network_denials_counted(self) -> float:
        return self.counted("pagi_sandbox_denials_total", layer="network")

    def audit_of(self, request_id: str, kind: str) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 5
        while True:
            records = [
                json.loads(line) for line in self.audit.read_text().splitlines() if line.strip()
            ]
            found = [r for r in records if r.get("request_id") == request_id]
            if any(r.get("kind") == "execute_tool" for r in found) or time.monotonic() > deadline:
                return [r for r in found if r.get("kind") == kind]
            time.sleep(0.05)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    tls = make_certificate(tmp_path_factory.mktemp("egress-tls"))
    with (
        origin_server("http") as http,
        origin_server("https", tls=tls) as https,
        origin_server("other") as other,
    ):
        yield Servers(http=http, https=https, other=other, cafile=tls[0])


@pytest.fixture(scope="module")
def area() -> Iterator[Path]:
    """Where the services' keys, policies and state live: readable by uid 10001 too."""
    base = Path(tempfile.mkdtemp(prefix="pagi-egress-", dir="/tmp"))
    base.chmod(0o755)
    keys = base / "keys"
    generate_keys(keys)
    keys.chmod(0o755)
    for key in keys.iterdir():
        key.chmod(0o644)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module", params=MODES)
def sandbox(request: pytest.FixtureRequest, area: Path, servers: Servers) -> Iterator[Sandbox]:
    mode = request.param
    keys_dir = area / "keys"
    root = area / mode
    root.mkdir(mode=0o755)
    policy = root / "policy" / "sandbox.toml"
    policy.parent.mkdir()
    policy.parent.chmod(0o755)
    policy.write_text(policy_text(servers))
    policy.chmod(0o644)
    state = root / "state"
    state.mkdir()
    env = stack_env(state, keys_dir, PAGI_SANDBOX_POLICY=str(policy))
    logs = LogCollector()
    launcher: UnprivilegedLauncher | None = None
    if mode == "unprivileged":
        launcher = UnprivilegedLauncher()
        give_to_unprivileged(state)
        stack: Stack = UnprivilegedStack(env=env, services=["sandbox"], cwd=REPO, sink=logs)
        stack.launcher = launcher  # type: ignore[attr-defined]
    else:
        stack = Stack(env=env, services=["sandbox"], cwd=REPO, sink=logs)
    try:
        stack.start(timeout=60)
    except BaseException:
        print("\n".join(f"{name}| {line}" for name, line in logs.lines[-100:]))
        stack.stop()
        if launcher is not None:
            launcher.close()
        raise
    token = TokenSigner.from_keys_dir(keys_dir, "operator").sign("sandbox", ttl=3600)
    try:
        yield Sandbox(
            mode=mode,
            url=stack.settings.url_of("sandbox"),
            policy=policy,
            audit=state / "sandbox-audit.jsonl",
            token=token,
            servers=servers,
            stack=stack,
        )
    finally:
        stack.stop()
        if launcher is not None:
            launcher.close()


def denial_of(body: dict[str, Any], host: str, port: int) -> dict[str, Any]:
    network = body["result"]["network"]
    found = [d for d in network["denials"] if (d["host"], d["port"]) == (host, port)]
    assert found, network
    assert found[0]["layer"] == "network"
    # The same refusal in the run's denials, with the table that governs it.
    named = [d for d in body["result"]["denials"] if d["layer"] == "network"]
    assert any(d["what"].endswith(found[0]["what"]) for d in named), body["result"]["denials"]
    assert all(d["hint"].endswith(".network)") for d in named)
    if found[0]["rule"]:
        assert any(f"rule {found[0]['rule']!r}" in d["hint"] for d in named), named
    return found[0]


# --------------------------------------------------------------------------- allowed


@pytest.mark.parametrize("tool", TOOLS)
def test_allowed_hosts_answer_through_urllib(sandbox: Sandbox, tool: str) -> None:
    servers = sandbox.servers
    bytes_in_before = sandbox.counted("pagi_sandbox_egress_bytes_total", direction="in")
    allowed_before = sandbox.counted("pagi_sandbox_egress_decisions_total", outcome="allowed")
    request_id = uuid.uuid4().hex
    body = sandbox.fetch(
        tool,
        [
            f"http://127.0.0.1:{servers.http.port}/plain",
            f"https://127.0.0.1:{servers.https.port}/tls",
        ],
        request_id,
    )
    plain, tls = body["answers"]
    assert plain == {"status": 200, "body": "hello from http /plain "}
    assert tls == {"status": 200, "body": "hello from https /tls "}
    assert body["result"]["executor"] == ("warm" if tool == "fetch_warm" else "cold")
    network = body["result"]["network"]
    assert network["allowed"] == 2 and network["refused"] == 0 and network["denials"] == []
    assert network["upstream_connections"] == 2
    assert network["bytes_in"] > 0 and network["bytes_out"] > 0
    assert sandbox.counted("pagi_sandbox_egress_bytes_total", direction="in") == (
        bytes_in_before + network["bytes_in"]
    )
    assert sandbox.counted("pagi_sandbox_egress_decisions_total", outcome="allowed") == (
        allowed_before + 2
    )
    audited = sandbox.audit_of(request_id, "egress")
    assert {(r["outcome"], r["host"], r["port"]) for r in audited} == {
        ("allowed", "127.0.0.1", servers.http.port),
        ("allowed", "127.0.0.1", servers.https.port),
    }
    [run] = sandbox.audit_of(request_id, "execute_tool")
    assert run["outcome"]["network"]["allowed"] == 2


# --------------------------------------------------------------------------- refused


@pytest.mark.parametrize("tool", TOOLS)
def test_every_other_destination_is_refused_with_its_reason(sandbox: Sandbox, tool: str) -> None:
    servers = sandbox.servers
    http, other = servers.http.port, servers.other.port
    seen_before = len(servers.other.seen)
    counted_before = sandbox.network_denials_counted()
    decisions_before = sandbox.counted("pagi_sandbox_egress_decisions_total", outcome="refused")
    request_id = uuid.uuid4().hex
    cases = [
        # (url, reason, host and port the denial names)
        (f"http://127.0.0.1:{other}/", "port_not_allowed", ("127.0.0.1", other)),
        (f"http://other.test:{http}/", "host_not_allowed", ("other.test", http)),
        (f"http://localhost:{http}/", "denied", ("localhost", http)),
        (f"http://127.0.0.2:{http}/", "host_not_allowed", ("127.0.0.2", http)),
        ("http://169.254.169.254/latest/meta-data/", "host_not_allowed", ("169.254.169.254", 80)),
        (f"http://[::1]:{http}/", "host_not_allowed", ("::1", http)),
    ]
    body = sandbox.fetch(tool, [url for url, _, _ in cases], request_id)
    for (url, reason, (host, port)), answer in zip(cases, body["answers"], strict=True):
        assert answer["status"] == 403, (url, answer)
        assert answer["reason"] == reason, (url, answer)
        assert answer["body"].startswith(f"PAGI egress proxy: {reason}: "), answer
        assert answer["body"].count("\n") == 1
        denial = denial_of(body, host, port)
        assert denial["reason"] == reason
    assert denial_of(body, "localhost", http)["rule"] == "localhost"
    assert denial_of(body, "::1", http)["what"] == f"[::1]:{http}"
    assert len(servers.other.seen) == seen_before  # nothing reached the other server
    network = body["result"]["network"]
    assert network["refused"] == len(cases) and network["upstream_connections"] == 0
    audited = sandbox.audit_of(request_id, "egress")
    assert sorted(r["reason"] for r in audited) == sorted(reason for _, reason, _ in cases)
    assert all(r["tool"] == tool and r["outcome"] == "refused" for r in audited)
    assert sandbox.network_denials_counted() == counted_before + len(cases)
    assert sandbox.counted("pagi_sandbox_egress_decisions_total", outcome="refused") == (
        decisions_before + len(cases)
    )


def test_a_name_resolving_to_a_private_address_needs_allow_private(sandbox: Sandbox) -> None:
    http = sandbox.servers.http.port
    body = sandbox.fetch("fetch_public", [f"http://localhost:{http}/"])
    [answer] = body["answers"]
    assert answer["status"] == 403 and answer["reason"] == "private_address", answer
    denial = denial_of(body, "localhost", http)
    assert denial["reason"] == "private_address"
    assert denial["address"] in ("127.0.0.1", "::1")


def test_a_redirect_to_another_host_is_checked_again(sandbox: Sandbox) -> None:
    servers = sandbox.servers
    target = f"http://other.test:{servers.other.port}/stolen"
    body = sandbox.fetch("fetch", [f"http://127.0.0.1:{servers.http.port}/redirect?to={target}"])
    [answer] = body["answers"]
    assert answer["status"] == 403 and answer["reason"] == "host_not_allowed", answer
    network = body["result"]["network"]
    assert network["allowed"] == 1 and network["refused"] == 1
    assert denial_of(body, "other.test", servers.other.port)["method"] == "GET"
    assert not any(seen["path"] == "/stolen" for seen in servers.other.seen)


def test_a_tunnel_to_a_target_not_allowed_is_refused(sandbox: Sandbox) -> None:
    servers = sandbox.servers
    code = f"""
import os, socket
proxy = os.environ["HTTPS_PROXY"].removeprefix("http://")
host, port = proxy.rsplit(":", 1)
answers = []
for target in ("127.0.0.1:{servers.other.port}", "127.0.0.1:22", "[::1]:{servers.https.port}"):
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"CONNECT {{target}} HTTP/1.1\\r\\nHost: {{target}}\\r\\n\\r\\n".encode())
        answers.append(s.recv(4096).decode().split("\\r\\n")[0])
print(proxy)
print("\\n".join(answers))
"""
    body = sandbox.execute("fetch", code)
    result = body["result"]
    assert result["exit_code"] == 0, result["stderr"]
    proxy, *answers = result["stdout"].splitlines()
    assert proxy == "127.0.0.1:3128"
    assert answers == ["HTTP/1.1 403 Forbidden"] * 3
    reasons = sorted(d["reason"] for d in result["network"]["denials"])
    assert reasons == ["host_not_allowed", "port_not_allowed", "port_not_allowed"]
    assert all(d["method"] == "CONNECT" for d in result["network"]["denials"])


def test_nothing_but_the_proxy_is_reachable_from_the_run(sandbox: Sandbox) -> None:
    """A socket that skips the proxy: direct TCP, UDP, raw, another family, a listener."""
    servers = sandbox.servers
    seen_before = len(servers.http.seen)
    code = f"""
import errno, socket
def attempt(name, make, use):
    try:
        s = make()
    except OSError as e:
        print(name, "socket", errno.errorcode.get(e.errno, e.errno)); return
    try:
        use(s); print(name, "REACHED")
    except OSError as e:
        print(name, "use", errno.errorcode.get(e.errno, e.errno))
    finally:
        s.close()
tcp = lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM)
attempt("direct", tcp, lambda s: s.connect(("127.0.0.1", {servers.http.port})))
attempt("direct6", lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM),
        lambda s: s.connect(("::1", {servers.http.port})))
attempt("metadata", tcp, lambda s: s.connect(("169.254.169.254", 80)))
attempt("public", tcp, lambda s: s.connect(("93.184.216.34", 443)))
attempt("udp", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
        lambda s: s.sendto(b"x", ("127.0.0.1", 53)))
attempt("raw", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
        lambda s: s.sendto(b"x", ("127.0.0.1", 0)))
attempt("sctp", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM, 132),
        lambda s: s.connect(("127.0.0.1", 1)))
attempt("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW), lambda s: None)
attempt("netlink", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0),
        lambda s: s.bind((0, 0)))
attempt("listen", tcp, lambda s: s.bind(("127.0.0.1", 8080)))
attempt("proxy", tcp, lambda s: s.connect(("127.0.0.1", 3128)))
"""
    body = sandbox.execute("fetch", code)
    result = body["result"]
    assert result["exit_code"] == 0, result["stderr"]
    lines = dict(line.split(" ", 1) for line in result["stdout"].splitlines())
    assert lines.pop("proxy") == "REACHED", result["stdout"]  # the one way out
    assert "REACHED" not in " ".join(lines.values()), result["stdout"]
    # Landlock (ABI >= 4) refuses a TCP connect to any port but the proxy's
    # and every bind: shown active here. Without it the empty namespace
    # still has nowhere to go (refused on its loopback, no route elsewhere).
    landlock = httpx.get(f"{sandbox.url}/health", timeout=5).json()["isolation"]["landlock"]
    net_rules = landlock["active"] and landlock["abi"] >= 4
    expected = {"EACCES"} if net_rules else {"ECONNREFUSED", "ENETUNREACH", "EADDRNOTAVAIL"}
    for name in ("direct", "direct6", "metadata", "public"):
        assert lines[name].startswith("use "), (name, lines[name])
        assert lines[name].split()[1] in expected, (name, lines[name])
    # The seccomp filter lets a networked run make TCP sockets only.
    for name in ("udp", "raw", "sctp", "packet", "netlink"):
        assert lines[name] == "socket EPERM", (name, lines[name])
    if net_rules:
        assert lines["listen"] == "use EACCES", lines["listen"]
    assert len(servers.http.seen) == seen_before
    assert {"socket"} <= set(result["seccomp_denials"])


# --------------------------------------------------------------------------- policy


def test_a_policy_edit_governs_the_next_run(sandbox: Sandbox) -> None:
    servers = sandbox.servers
    url = f"http://127.0.0.1:{servers.other.port}/now"
    before = sandbox.fetch("fetch", [url])
    assert before["answers"][0]["reason"] == "port_not_allowed"
    sandbox.edit_policy(policy_text(servers, (f"127.0.0.1:{servers.other.port}",)))
    try:
        after = sandbox.fetch("fetch", [url])
        assert after["answers"][0] == {"status": 200, "body": "hello from other /now "}
        assert after["result"]["policy_version"] != before["result"]["policy_version"]
        warm = sandbox.fetch("fetch_warm", [url])
        assert warm["answers"][0]["status"] == 200
    finally:
        sandbox.edit_policy(policy_text(servers))
    again = sandbox.fetch("fetch", [url])
    assert again["answers"][0]["reason"] == "port_not_allowed"


def test_a_tool_without_a_network_table_has_no_proxy(sandbox: Sandbox) -> None:
    code = """
import errno, os, socket
print(sorted(k for k in os.environ if "proxy" in k.lower()))
for family in (socket.AF_INET, socket.AF_INET6):
    try:
        socket.socket(family, socket.SOCK_STREAM)
        print("socket made")
    except OSError as e:
        print(errno.errorcode[e.errno])
"""
    result = sandbox.execute("python", code)["result"]
    assert result["stdout"].splitlines() == ["[]", "EPERM", "EPERM"], result
    assert result["network"] is None


def test_health_reports_the_egress_proxy(sandbox: Sandbox) -> None:
    health = httpx.get(f"{sandbox.url}/health", timeout=5).json()
    proxy = health["isolation"]["egress_proxy"]
    assert proxy["available"] is True, proxy
    assert proxy["sessions"] == 0  # every run's session closed with it
