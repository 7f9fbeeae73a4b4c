"""Contract and hardening checks against a running compose stack.

Run by ``scripts/compose-smoke.sh`` once every container is healthy:

    python -m tests.compose.stack_checks contract --policy-dir DIR
    python -m tests.compose.stack_checks hardening --project NAME
    python -m tests.compose.stack_checks restarted
    python -m tests.compose.stack_checks image --image NAME

Published ports come from the contract variables (PY_AGENT_PORT, ...) as the
compose file maps them; operator tokens from PAGI_SMOKE_TOKEN_<AUDIENCE>.
Each check prints one line; the exit status is the number of failures
(capped at 100), so the script fails on any of them.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from proto import model_gateway_pb2, model_gateway_pb2_grpc

HTTP_SERVICES = ("agent", "sandbox", "bff", "memory")
CONTAINER_SERVICES = ("gateway", "memory", "sandbox", "agent", "bff")
PORT_VARIABLES = {
    "agent": ("PY_AGENT_PORT", 8000),
    "sandbox": ("RUST_SANDBOX_PORT", 8001),
    "bff": ("GO_BFF_PORT", 8002),
    "memory": ("MEMORY_MOCK_PORT", 8003),
    "gateway": ("MODEL_GATEWAY_GRPC_PORT", 50051),
}
GATEWAY_SERVICE = "pagi.gateway.v1.ModelGateway"
MEMORY_MARKER_KIND = "compose-smoke"
POLICY_RELOAD_SECONDS = 15.0


class CheckFailed(Exception):
    """A check whose expectation did not hold."""


def expect(condition: bool, message: str) -> None:
    """Raise :class:`CheckFailed` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise CheckFailed(message)


class Report:
    """Runs named checks, prints one line each, counts failures."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.passed = 0

    def check(self, name: str, run: Callable[[], str | None]) -> None:
        """Run one check; its return value is printed as a detail."""
        started = time.monotonic()
        try:
            detail = run()
        except (CheckFailed, httpx.HTTPError, grpc.RpcError, OSError, ValueError, KeyError) as exc:
            self.failures.append(name)
            print(f"FAIL {name}: {type(exc).__name__}: {exc}", flush=True)
            return
        elapsed = (time.monotonic() - started) * 1000
        self.passed += 1
        suffix = f" — {detail}" if detail else ""
        print(f"ok   {name} ({elapsed:.0f} ms){suffix}", flush=True)

    def exit_code(self) -> int:
        """0 when every check passed."""
        print(f"{self.passed} passed, {len(self.failures)} failed", flush=True)
        return min(len(self.failures), 100)


def port(service: str) -> int:
    """The host port a service is published on."""
    variable, default = PORT_VARIABLES[service]
    return int(os.environ.get(variable, default))


def url(service: str, path: str) -> str:
    """The published URL of ``path`` on an HTTP service."""
    host = os.environ.get("PAGI_PUBLISH_HOST", "127.0.0.1")
    return f"http://{host}:{port(service)}{path}"


def token(audience: str) -> str:
    """An operator token for ``audience`` handed over by the smoke script."""
    value = os.environ.get(f"PAGI_SMOKE_TOKEN_{audience.upper()}", "").strip()
    expect(bool(value), f"no operator token for {audience} in the environment")
    return value


def bearer(audience: str) -> dict[str, str]:
    """The Authorization header of an operator call to ``audience``."""
    return {"Authorization": f"Bearer {token(audience)}"}


def client() -> httpx.Client:
    """An HTTP client that ignores proxy settings (published ports are local)."""
    return httpx.Client(timeout=20.0, trust_env=False)


def grpc_channel() -> grpc.Channel:
    """A plaintext channel to the published gateway port."""
    host = os.environ.get("PAGI_PUBLISH_HOST", "127.0.0.1")
    return grpc.insecure_channel(f"{host}:{port('gateway')}")


# ----------------------------------------------------------------- contract


def check_health(http: httpx.Client, service: str) -> str:
    response = http.get(url(service, "/health"), headers={"X-Request-Id": "smoke-health"})
    expect(response.status_code == 200, f"status {response.status_code}: {response.text[:200]}")
    body = response.json()
    expect(body.get("service") == service, f"service is {body.get('service')!r}")
    expect(body.get("status") == "ok", f"status is {body.get('status')!r}")
    expect(isinstance(body.get("version"), str), "no version")
    expect(response.headers.get("X-Request-Id") == "smoke-health", "request id not echoed")
    return f"version {body['version']}"


def check_grpc_health() -> str:
    with grpc_channel() as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    expect(status == "SERVING", f"health is {status}")
    return status


def check_grpc_reflection() -> str:
    with grpc_channel() as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
    names = [s.name for r in replies for s in r.list_services_response.service]
    expect(GATEWAY_SERVICE in names, f"{GATEWAY_SERVICE} not listed: {names}")
    expect("grpc.health.v1.Health" in names, f"health service not listed: {names}")
    return ", ".join(sorted(names))


def check_grpc_get_plan() -> str:
    with grpc_channel() as channel:
        stub = model_gateway_pb2_grpc.ModelGatewayStub(channel)
        reply = stub.GetPlan(
            model_gateway_pb2.PlanRequest(prompt="check the container stack"),
            metadata=(("authorization", f"Bearer {token('gateway')}"),),
            timeout=10,
        )
        try:
            stub.GetPlan(model_gateway_pb2.PlanRequest(prompt="no token"), timeout=10)
        except grpc.RpcError as exc:
            expect(exc.code() == grpc.StatusCode.UNAUTHENTICATED, f"no token gave {exc.code()}")
        else:
            raise CheckFailed("GetPlan without a token was answered")
    expect(len(reply.steps) > 0, "empty plan")
    return f"{len(reply.steps)} steps from {reply.model}"


def check_echo(http: httpx.Client) -> str:
    body = {"ping": "pong", "request_id": "smoke-echo"}
    refused = http.post(url("bff", "/api/v1/echo"), json=body)
    expect(refused.status_code == 401, f"no token gave {refused.status_code}")
    response = http.post(url("bff", "/api/v1/echo"), json=body, headers=bearer("bff"))
    expect(response.status_code == 200, f"status {response.status_code}: {response.text[:200]}")
    answer = response.json()
    expect(answer.get("service") == "bff", f"service is {answer.get('service')!r}")
    expect(answer.get("received") == body, f"received {answer.get('received')!r}")
    expect("request_id" in answer, "no request_id")
    return "body echoed"


def check_plan(http: httpx.Client) -> str:
    unauthorised = http.post(url("agent", "/api/v1/plan"), json={"prompt": "x"})
    expect(unauthorised.status_code == 401, f"no token gave {unauthorised.status_code}")
    response = http.post(
        url("agent", "/api/v1/plan"),
        json={"prompt": "Plan a check of the container stack"},
        headers=bearer("agent"),
    )
    expect(response.status_code == 200, f"status {response.status_code}: {response.text[:300]}")
    answer = response.json()
    for field in ("service", "status", "plan", "llm_response", "bff_echo"):
        expect(field in answer, f"no {field} in {sorted(answer)}")
    expect(answer["status"] == "ok", f"plan status {answer['status']!r}: {answer}")
    return f"{len(answer['plan'])} steps"


def execute_tool(http: httpx.Client, tool: str, code: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"tool_name": tool}
    if code is not None:
        body["code"] = code
    return http.post(url("sandbox", "/api/v1/execute_tool"), json=body, headers=bearer("sandbox"))


def check_execute_tool(http: httpx.Client) -> str:
    refused = http.post(url("sandbox", "/api/v1/execute_tool"), json={"tool_name": "demo"})
    expect(refused.status_code == 401, f"no token gave {refused.status_code}")
    expect("error" in refused.json(), "401 without a JSON error body")
    response = execute_tool(http, "python", "print(2+2)")
    expect(response.status_code == 200, f"status {response.status_code}: {response.text[:300]}")
    answer = response.json()
    expect(answer.get("tool_status") == "ok", f"tool_status {answer.get('tool_status')!r}")
    result = answer.get("result")
    stdout = result.get("stdout") if isinstance(result, dict) else result
    expect(isinstance(stdout, str) and stdout.strip() == "4", f"result {result!r}")
    return "print(2+2) -> 4"


def check_tool_has_no_network(http: httpx.Client) -> str:
    # The sandbox service itself listens on 8001 in its container: a tool
    # sharing the container's network would reach it over loopback.
    code = (
        "import socket\n"
        "for family in (socket.AF_INET, socket.AF_INET6):\n"
        "    try:\n"
        "        s = socket.socket(family)\n"
        "        s.settimeout(1)\n"
        "        s.connect(('127.0.0.1' if family == socket.AF_INET else '::1', 8001))\n"
        "        print('connected')\n"
        "    except OSError as exc:\n"
        "        print('refused', exc.errno)\n"
    )
    response = execute_tool(http, "python", code)
    expect(response.status_code == 200, f"status {response.status_code}: {response.text[:300]}")
    result = response.json().get("result")
    stdout = result.get("stdout", "") if isinstance(result, dict) else str(result)
    expect("connected" not in stdout, f"a tool reached the network: {result!r}")
    return stdout.strip() or "no output"


def check_memory(http: httpx.Client) -> str:
    refused = http.get(url("memory", "/memory/latest"))
    expect(refused.status_code == 401, f"no token gave {refused.status_code}")
    marker = uuid.uuid4().hex
    written = http.post(
        url("memory", "/api/v1/memory"),
        json={"kind": MEMORY_MARKER_KIND, "content": {"marker": marker}},
        headers=bearer("memory"),
    )
    expect(written.status_code in (200, 201), f"write {written.status_code}: {written.text[:200]}")
    latest = http.get(url("memory", "/memory/latest"), headers=bearer("memory"))
    expect(latest.status_code == 200, f"read {latest.status_code}: {latest.text[:200]}")
    record = latest.json().get("record") or {}
    expect(record.get("content") == {"marker": marker}, f"latest is {record!r}")
    Path(os.environ.get("PAGI_SMOKE_MARKER_FILE", "/dev/null")).write_text(marker)
    return f"record {record.get('id')}"


def check_dashboard(http: httpx.Client) -> str:
    response = http.get(url("bff", "/api/v1/agi/dashboard-data"))
    expect(response.status_code == 200, f"status {response.status_code}: {response.text[:300]}")
    answer = response.json()
    expect(answer.get("status") == "ok", f"dashboard status {answer.get('status')!r}: {answer}")
    data = answer.get("data") or {}
    expect(sorted(data) == ["memory", "python_agent", "rust_sandbox"], f"data keys {sorted(data)}")
    return "ok"


def policy_version(http: httpx.Client) -> str:
    response = http.get(url("sandbox", "/api/v1/policy"), headers=bearer("sandbox"))
    expect(response.status_code == 200, f"policy status {response.status_code}")
    return str(response.json()["version"])


def demo_output(http: httpx.Client) -> str:
    response = execute_tool(http, "demo")
    expect(response.status_code == 200, f"demo {response.status_code}: {response.text[:200]}")
    result = response.json().get("result")
    return (result.get("stdout") if isinstance(result, dict) else str(result)).strip()


def replace_file(path: Path, text: str) -> None:
    """Save the way editors do: write a new file, rename it over the old one."""
    fresh = path.with_name(f".{path.name}.new")
    fresh.write_text(text)
    os.replace(fresh, path)


def check_policy_hot_reload(http: httpx.Client, policy_dir: Path) -> str:
    policy_file = policy_dir / "sandbox.toml"
    original = policy_file.read_text()
    marker = f"policy edited on the host {uuid.uuid4().hex[:8]}"
    old_line = 'argv = ["/bin/echo", "hello from the PAGI sandbox"]'
    expect(old_line in original, "the demo tool's argv is not where the check expects it")
    edited = original.replace(old_line, f'argv = ["/bin/echo", "{marker}"]')
    tomllib.loads(edited)  # the edit itself must be a valid file
    before = policy_version(http)
    replace_file(policy_file, edited)
    try:
        deadline = time.monotonic() + POLICY_RELOAD_SECONDS
        while demo_output(http) != marker:
            expect(time.monotonic() < deadline, "the edit was not picked up in time")
            time.sleep(0.2)
        after = policy_version(http)
        expect(after != before, f"policy version stayed {before}")
    finally:
        replace_file(policy_file, original)
    deadline = time.monotonic() + POLICY_RELOAD_SECONDS
    while demo_output(http) == marker:
        expect(time.monotonic() < deadline, "restoring the policy was not picked up")
        time.sleep(0.2)
    return f"version {before} -> {after}, restored"


def run_contract(policy_dir: Path) -> int:
    report = Report()
    with client() as http:
        for service in HTTP_SERVICES:
            report.check(f"GET /health {service}", lambda s=service: check_health(http, s))
        report.check("gRPC health Check", check_grpc_health)
        report.check("gRPC reflection list", check_grpc_reflection)
        report.check("gRPC GetPlan with a token", check_grpc_get_plan)
        report.check("POST /api/v1/echo", lambda: check_echo(http))
        report.check("POST /api/v1/plan", lambda: check_plan(http))
        report.check("POST /api/v1/execute_tool", lambda: check_execute_tool(http))
        report.check("tool has no network", lambda: check_tool_has_no_network(http))
        report.check("memory write and read", lambda: check_memory(http))
        report.check("policy edit on the host", lambda: check_policy_hot_reload(http, policy_dir))
        report.check("GET /api/v1/agi/dashboard-data", lambda: check_dashboard(http))
    return report.exit_code()


def kill_server_from_host(container: str) -> int:
    """SIGKILL the service's server process inside ``container``, from the host.

    From the host rather than with ``podman exec``: the exec session would be
    torn down with the container it just crashed, and podman then reports the
    exec as failed although the kill happened.
    """
    init_pid = int(podman("inspect", "--format", "{{.State.Pid}}", container))
    pending, killed = [init_pid], []
    while pending:
        pid = pending.pop()
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        pending.extend(int(child) for child in children)
        if pid != init_pid and b"serve" in command:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    expect(bool(killed), "no server process found to kill")
    return killed[0]


def check_crashed_service_comes_back(project: str, service: str) -> str:
    """Kill the server process inside; ``restart: unless-stopped`` brings it back."""
    container = f"{project}_{service}_1"
    before = int(podman("inspect", "--format", "{{.RestartCount}}", container))
    killed = kill_server_from_host(container)
    deadline = time.monotonic() + 60
    with client() as http:
        while True:
            restarts = int(podman("inspect", "--format", "{{.RestartCount}}", container))
            try:
                healthy = restarts > before and http.get(url(service, "/health")).status_code == 200
            except httpx.HTTPError:
                healthy = False
            if healthy:
                break
            expect(time.monotonic() < deadline, "not back within 60 s")
            time.sleep(0.5)
    return f"killed pid {killed}, restarted ({restarts} restarts), healthy again"


def run_restarted(project: str) -> int:
    """After ``down`` and ``up`` with the volumes kept: state and keys survived."""
    report = Report()

    def memory_survived() -> str:
        marker = Path(os.environ["PAGI_SMOKE_MARKER_FILE"]).read_text().strip()
        with client() as http:
            response = http.get(
                url("memory", "/api/v1/memory"),
                params={"kind": MEMORY_MARKER_KIND},
                headers=bearer("memory"),
            )
        expect(response.status_code == 200, f"status {response.status_code}")
        contents = [r.get("content") for r in response.json().get("records", [])]
        expect({"marker": marker} in contents, "the record written before the restart is gone")
        return "record kept in the memory-data volume"

    with client() as http:
        for service in HTTP_SERVICES:
            report.check(f"GET /health {service}", lambda s=service: check_health(http, s))
        report.check("gRPC health Check", check_grpc_health)
        report.check("memory record survived", memory_survived)
        report.check("POST /api/v1/execute_tool", lambda: check_execute_tool(http))
        report.check("GET /api/v1/agi/dashboard-data", lambda: check_dashboard(http))
    report.check(
        "memory killed, restarted by the engine",
        lambda: check_crashed_service_comes_back(project, "memory"),
    )
    report.check("memory record survived the crash", memory_survived)
    return report.exit_code()


# ---------------------------------------------------------------- hardening

PROBE = """
import ctypes, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
def refused(number, *arguments):
    # The profile's default answer is ENOSYS (so libc falls back); EPERM for some.
    result = libc.syscall(number, *arguments)
    return result == -1 and ctypes.get_errno() in (errno.EPERM, errno.ENOSYS)
status = dict(line.split(':', 1) for line in open('/proc/self/status') if ':' in line)
try:
    open('/hardening-probe', 'w').close()
    root_writable = True
except OSError:
    root_writable = False
print(json.dumps({
    'uid': os.getuid(), 'euid': os.geteuid(), 'gid': os.getgid(),
    'cap_eff': status['CapEff'].strip(), 'cap_prm': status['CapPrm'].strip(),
    'cap_bnd': status['CapBnd'].strip(),
    'no_new_privs': status['NoNewPrivs'].strip(), 'seccomp': status['Seccomp'].strip(),
    'root_writable': root_writable,
    # keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING): seccomp says no.
    'keyctl_refused': refused(250, 0, -3, 0),
    # unshare(CLONE_NEWUSER): allowed to any process unless seccomp says no.
    'userns_refused': refused(272, 0x10000000),
    # bpf(BPF_MAP_CREATE, NULL) and setns(-1): EFAULT/EBADF when allowed.
    'bpf_refused': refused(321, 0, 0, 0),
    'setns_refused': refused(308, -1, 0),
    'pid1': open('/proc/1/cmdline', 'rb').read().split(b'\\0')[0].decode(),
}))
"""


def podman(*args: str) -> str:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=60)
    expect(result.returncode == 0, f"podman {args[0]}: {result.stderr.strip()[:300]}")
    return result.stdout


def check_container(container: str, service: str) -> str:
    probe = json.loads(podman("exec", container, "python", "-c", PROBE))
    # Every container alike, the sandbox too: its jail runs unprivileged.
    expected_caps = 0
    expect(probe["uid"] != 0 and probe["euid"] != 0, f"runs as uid {probe['uid']}")
    expect(probe["gid"] != 0, f"runs with gid {probe['gid']}")
    expect(int(probe["cap_eff"], 16) == expected_caps, f"CapEff {probe['cap_eff']}")
    expect(int(probe["cap_prm"], 16) == expected_caps, f"CapPrm {probe['cap_prm']}")
    expect(int(probe["cap_bnd"], 16) == expected_caps, f"CapBnd {probe['cap_bnd']}")
    expect(probe["no_new_privs"] == "1", f"NoNewPrivs {probe['no_new_privs']}")
    expect(probe["seccomp"] == "2", f"seccomp mode {probe['seccomp']}")
    expect(not probe["root_writable"], "the root filesystem is writable")
    expect(probe["keyctl_refused"], "keyctl was not refused")
    expect(probe["bpf_refused"], "bpf was not refused")
    expect(probe["setns_refused"], "setns was not refused")
    if service == "sandbox":
        # The one widening of its profile: the jail builds a user namespace per run.
        expect(not probe["userns_refused"], "the jail cannot create a user namespace")
    else:
        expect(probe["userns_refused"], "a user namespace could be created")
    expect("python" not in probe["pid1"], f"pid 1 is {probe['pid1']!r}, not an init")
    (inspected,) = json.loads(podman("inspect", container))
    host_config = inspected["HostConfig"]
    expect(host_config["Privileged"] is False, "privileged")
    expect(host_config["ReadonlyRootfs"] is True, "ReadonlyRootfs is false")
    expect(not host_config.get("CapAdd"), f"CapAdd {host_config.get('CapAdd')}")
    expect(int(host_config.get("Memory") or 0) > 0, "no memory limit")
    expect(int(host_config.get("PidsLimit") or 0) > 0, "no pids limit")
    return (
        f"uid {probe['uid']} gid {probe['gid']}, CapEff {probe['cap_eff']}, NoNewPrivs 1, "
        "seccomp refuses keyctl, bpf, setns"
        + ("" if service == "sandbox" else ", unshare")
        + ", read-only root, "
        f"init {probe['pid1']}, mem {int(host_config['Memory']) // 2**20} MiB, "
        f"pids {host_config['PidsLimit']}"
    )


def check_keys_isolated(container: str, service: str) -> str:
    listing = podman("exec", container, "ls", "/etc/pagi/keys").split()
    private = sorted(name for name in listing if name.endswith(".key"))
    expect(private == [f"{service}.key"], f"private keys visible: {private}")
    return f"only {service}.key + {sum(n.endswith('.pub') for n in listing)} public keys"


TOOL_IDENTITY = """
import os
import signal
facts = {'uid': os.getuid(), 'euid': os.geteuid(), 'gid': os.getgid()}
try:
    facts['uid_map'] = open('/proc/self/uid_map').read().split()
    for line in open('/proc/self/status'):
        key, _, value = line.partition(':')
        if key in ('CapEff', 'CapBnd', 'NoNewPrivs', 'Seccomp'):
            facts[key] = value.strip()
except OSError as exc:
    facts['status'] = str(exc)
print(facts)
"""


def check_tool_is_unprivileged() -> str:
    with client() as http:
        response = execute_tool(http, "python", TOOL_IDENTITY)
    expect(response.status_code == 200, f"status {response.status_code}: {response.text[:300]}")
    stdout = response.json()["result"]["stdout"].strip()
    facts = ast.literal_eval(stdout)
    expect(facts["uid"] != 0 and facts["euid"] != 0, f"the tool runs as uid {facts['uid']}")
    if "uid_map" in facts:
        # One id mapped, never root outside: the service's own unprivileged uid.
        uid_map = facts["uid_map"]
        expect(len(uid_map) == 3 and uid_map[1] != "0", f"the tool's uid map {uid_map}")
    if "CapEff" in facts:
        expect(int(facts["CapEff"], 16) == 0, f"the tool has CapEff {facts['CapEff']}")
        expect(facts["NoNewPrivs"] == "1", "the tool may gain privileges")
        expect(facts["Seccomp"] == "2", "no seccomp filter on the tool")
    return stdout


def check_isolation_report(policy_dir: Path) -> str:
    with client() as http:
        body = http.get(url("sandbox", "/health")).json()
    isolation = body.get("isolation")
    expect(isinstance(isolation, dict), f"no isolation report: {body}")
    required = tomllib.loads((policy_dir / "sandbox.toml").read_text())["sandbox"][
        "required_layers"
    ]
    inactive = [
        f"{layer} ({(isolation.get(layer) or {}).get('reason', 'missing')})"
        for layer in required
        if not (isinstance(isolation.get(layer), dict) and isolation[layer].get("active"))
    ]
    expect(not inactive, f"required layers not active: {', '.join(inactive)}")
    # Unprivileged in its container, the jail still has every layer but the
    # cgroup one (the service cannot write the host's cgroups there).
    jail_layers = [name for name, layer in isolation.items() if "active" in (layer or {})]
    missing = [
        f"{name} ({isolation[name].get('reason')})"
        for name in jail_layers
        if name != "cgroup" and not isolation[name]["active"]
    ]
    expect(len(jail_layers) >= 12 and not missing, f"jail layers not active: {missing}")
    active = sorted(
        name for name, layer in isolation.items() if isinstance(layer, dict) and layer.get("active")
    )
    launcher = (isolation.get("privileges") or {}).get("launcher", "not reported")
    cgroup = isolation.get("cgroup") or {}
    return (
        f"jail {launcher}; active: "
        + ", ".join(active)
        + ("" if cgroup.get("active") else f"; cgroup inactive: {cgroup.get('reason')}")
    )


def run_hardening(project: str, policy_dir: Path) -> int:
    report = Report()
    for service in CONTAINER_SERVICES:
        container = f"{project}_{service}_1"
        report.check(f"hardening {service}", lambda c=container, s=service: check_container(c, s))
        report.check(f"keys of {service}", lambda c=container, s=service: check_keys_isolated(c, s))
    report.check("sandbox isolation report", lambda: check_isolation_report(policy_dir))
    report.check("tool runs unprivileged in the jail", check_tool_is_unprivileged)
    return report.exit_code()


# What the image's venv holds, as {name: version}.
INSTALLED_DISTRIBUTIONS = (
    "import importlib.metadata as m, json; "
    "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
)


def check_image_installs_the_lock(image: str) -> str:
    """The image holds exactly requirements/runtime.txt's versions, and PAGI."""
    from packaging.utils import canonicalize_name

    from testing.lockfile import RUNTIME_LOCK, read_lock

    output = podman(
        "run", "--rm", "--entrypoint", "/opt/pagi/bin/python", image, "-c", INSTALLED_DISTRIBUTIONS
    )
    installed = {canonicalize_name(k): v for k, v in json.loads(output).items()}
    # pip and setuptools build the image and are removed from it afterwards.
    locked = {
        name: pin.version
        for name, pin in read_lock(RUNTIME_LOCK).items()
        if pin.applies() and name not in ("pip", "setuptools")
    }
    expect(installed.pop("pagi", None) is not None, "PAGI itself is not installed")
    differ = {
        name: (locked.get(name), installed.get(name))
        for name in locked.keys() | installed.keys()
        if locked.get(name) != installed.get(name)
    }
    expect(not differ, f"(locked, in the image) differ: {differ}")
    return f"{len(locked)} packages, each at its locked version, nothing else"


def run_image(image: str) -> int:
    report = Report()
    report.check("image installs the lock", lambda: check_image_installs_the_lock(image))
    return report.exit_code()


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``contract``, ``restarted``, ``hardening`` or ``image``."""
    parser = argparse.ArgumentParser(prog="stack_checks", description=__doc__)
    parser.add_argument("phase", choices=["contract", "restarted", "hardening", "image"])
    parser.add_argument("--policy-dir", type=Path, default=Path("policies"))
    parser.add_argument("--project", default="pagi")
    parser.add_argument("--image", default="localhost/pagi:local")
    args = parser.parse_args(argv)
    if args.phase == "image":
        return run_image(args.image)
    if args.phase == "contract":
        return run_contract(args.policy_dir)
    if args.phase == "restarted":
        return run_restarted(args.project)
    return run_hardening(args.project, args.policy_dir)


if __name__ == "__main__":
    sys.exit(main())
