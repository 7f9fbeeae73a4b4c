"""The runner gives a networked run its proxy session: per run, its own rules, ended with it."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from sandbox.host.layer_status import inactive
from sandbox.host.report import ReportReader, report_channel
from sandbox.host.runner import Runner, RunnerUnavailable
from sandbox.jail.protocol import LISTENER_MESSAGE
from sandbox.spec import RunLimits, RunSpec
from tests.unit.sandbox.egress.conftest import egress
from tests.unit.sandbox.egress.origin import Origin, origin_server
from tests.unit.sandbox.jailed import PYTHON

pytestmark = pytest.mark.asyncio(loop_scope="module")

GET = """
import json, sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=10) as answer:
        print(answer.status, answer.read().decode())
except urllib.error.HTTPError as exc:
    print(exc.code, exc.headers.get("X-PAGI-Egress-Reason"))
"""


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def single(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Runner]:
    """One slot: each run's jail is built in the same slot, the next one ahead of its run."""
    runner = Runner(
        python_executable=PYTHON, state_dir=tmp_path_factory.mktemp("egress-runs"), slots=1
    )
    await runner.start()
    yield runner
    await runner.close()


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    with origin_server("origin") as served:
        yield served


class HoldingServer:
    """Accepts TCP connections and holds them; notes when the other side goes away."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.accepted = threading.Event()
        self.closed = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        self.accepted.set()
        conn.settimeout(30)
        try:
            while conn.recv(1024):
                pass
        except OSError:
            pass
        self.closed.set()
        conn.close()


def fetch_spec(url: str, allow: list[str], **extra: object) -> RunSpec:
    return RunSpec(
        tool="fetch",
        argv=(PYTHON, "-I", "-S", "-c", GET, url),
        egress=egress(allow),
        request_id="req-7",
        policy_version="v1",
        **extra,  # type: ignore[arg-type]
    )


async def test_a_run_takes_its_rules_from_its_own_spec_even_on_a_jail_built_ahead(
    single: Runner, origin: Origin
) -> None:
    url = f"http://127.0.0.1:{origin.port}/a"
    first = await single.run(fetch_spec(url, [f"127.0.0.1:{origin.port}"]))
    assert first.stdout == "200 hello from origin /a \n", first.stderr
    assert first.network is not None and first.network.allowed == 1
    [record] = first.egress_audit
    assert record["kind"] == "egress" and record["request_id"] == "req-7"
    assert record["tool"] == "fetch" and record["policy_version"] == "v1"
    ahead = single.isolation_report()["warm_path"]["runs_on_jails_built_ahead"]
    # Same jail shape, another policy (as after a hot edit): the jail built
    # ahead for this tool serves the run, under the new rules.
    await asyncio.sleep(0.3)
    second = await single.run(fetch_spec(url, ["127.0.0.1:1"]))
    assert single.isolation_report()["warm_path"]["runs_on_jails_built_ahead"] == ahead + 1
    assert second.stdout == "403 port_not_allowed\n", second.stderr
    assert second.network is not None
    [denial] = second.network.denials
    assert (denial.layer, denial.host, denial.port) == ("network", "127.0.0.1", origin.port)
    assert denial.rule == "127.0.0.1:1"


async def test_a_wall_clock_kill_cuts_the_runs_connections(single: Runner) -> None:
    held = HoldingServer()
    code = f"""
import socket, time
s = socket.create_connection(("127.0.0.1", 3128))
s.sendall(b"CONNECT 127.0.0.1:{held.port} HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
print(s.recv(100).split(b"\\r\\n")[0].decode(), flush=True)
time.sleep(60)
"""
    spec = RunSpec(
        tool="fetch",
        argv=(PYTHON, "-I", "-S", "-c", code),
        egress=egress([f"127.0.0.1:{held.port}"]),
        limits=RunLimits(wall_seconds=1.5),
    )
    result = await single.run(spec)
    assert result.limit_hit == "wall_time"
    assert result.stdout == "HTTP/1.1 200 Connection established\n", result.stderr
    assert held.accepted.is_set()
    # The session ended with the run: the upstream side of its tunnel is closed.
    assert await asyncio.to_thread(held.closed.wait, 5)
    assert result.network is not None and result.network.upstream_connections == 1
    assert single.isolation_report()["egress_proxy"]["sessions"] == 0


async def test_the_proxy_environment_is_set_and_nothing_else_changes(single: Runner) -> None:
    code = "import json, os; print(json.dumps({k: v for k, v in os.environ.items()}))"
    spec = RunSpec(
        tool="fetch",
        argv=(PYTHON, "-I", "-S", "-c", code),
        env={"LANG": "C.UTF-8"},
        egress=egress(["example.org"]),
    )
    env = json.loads((await single.run(spec)).stdout)
    without = json.loads((await single.run(spec.model_copy(update={"egress": None}))).stdout)
    proxy = "http://127.0.0.1:3128"
    assert env == {
        **without,
        "HTTP_PROXY": proxy,
        "HTTPS_PROXY": proxy,
        "http_proxy": proxy,
        "https_proxy": proxy,
        "NO_PROXY": "",
        "no_proxy": "",
    }
    assert without["LANG"] == "C.UTF-8" and "HTTP_PROXY" not in without


async def test_without_its_network_namespace_a_networked_run_does_not_start(
    single: Runner, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    spec = RunSpec(
        tool="fetch",
        argv=(PYTHON, "-I", "-S", "-c", f"open({str(marker)!r}, 'w')"),
        egress=egress(["example.org"]),
    )
    saved = single._layers["netns"]
    single._layers["netns"] = inactive("not on this host")
    try:
        assert single.egress_problem() is not None
        assert single.isolation_report()["egress_proxy"]["available"] is False
        with pytest.raises(RunnerUnavailable) as refused:
            await single.run(spec)
        assert refused.value.layer == "netns"
    finally:
        single._layers["netns"] = saved
    assert not marker.exists()
    assert single.egress_problem() is None


async def test_each_networked_run_has_a_network_namespace_of_its_own(single: Runner) -> None:
    """Never the host's, nor the empty one the slot's zygote shares with its other runs."""
    code = (
        "import os; devices = [l.split(':')[0].strip() for l in open('/proc/self/net/dev')][2:];"
        " print(os.readlink('/proc/self/ns/net'), devices)"
    )
    host = os.readlink("/proc/self/ns/net")
    for warm in (False, True, True):
        zygote = single._slots[0].zygote
        assert zygote is not None and zygote.pid is not None
        shared = os.readlink(f"/proc/{zygote.pid}/ns/net")
        plain = await single.run(
            RunSpec(tool="plain", argv=(PYTHON, "-I", "-S", "-c", code), readable_paths=("/proc",))
        )
        if os.geteuid() == 0:  # a root zygote's runs share its namespace: the contrast
            assert plain.stdout.split(" ", 1)[0] == shared
        spec = RunSpec(
            tool="fetch",
            argv=(PYTHON, "-I", "-S", "-c", code),
            egress=egress(["example.org"]),
            readable_paths=("/proc",),
            warm=warm,
        )
        result = await single.run(spec)
        assert result.exit_code == 0, result.stderr
        namespace, devices = result.stdout.split(" ", 1)
        assert devices.strip() == "['lo']", result
        assert namespace not in (host, shared), (namespace, host, shared)


@pytest.mark.skipif(not os.path.isdir("/etc/ssl/certs"), reason="no system CA certificates here")
async def test_a_networked_run_verifies_tls_with_the_systems_ca_certificates(
    single: Runner,
) -> None:
    code = (
        "import os, ssl; print(ssl.create_default_context().cert_store_stats()['x509_ca'],"
        " os.path.exists('/etc/ssl/private'))"
    )
    networked = RunSpec(
        tool="fetch", argv=(PYTHON, "-I", "-S", "-c", code), egress=egress(["example.org"])
    )
    with_network = await single.run(networked)
    without = await single.run(networked.model_copy(update={"egress": None}))
    certificates, private = with_network.stdout.split()
    assert int(certificates) > 0 and private == "False", with_network
    assert without.stdout.split() == ["0", "False"], without


async def test_the_listener_is_taken_from_the_report_whatever_lines_share_its_read() -> None:
    """The jail's lines before the listener may arrive in the same read; other fds are closed."""
    loop = asyncio.get_running_loop()
    read_end, write_end = report_channel()
    reader = ReportReader(loop, read_end)
    writer = socket.socket(fileno=write_end)
    listener = socket.socket()
    stray = socket.socket()
    try:
        writer.sendall(b"jail\n")
        socket.send_fds(writer, [LISTENER_MESSAGE], [listener.fileno()])
        socket.send_fds(writer, [LISTENER_MESSAGE], [stray.fileno()])  # a second one
        await asyncio.wait_for(reader.listener_arrived, 5)
        await asyncio.sleep(0.1)
        taken = reader.take_listener()
        assert taken is not None
        assert os.path.samestat(os.fstat(taken.fileno()), os.fstat(listener.fileno()))
        assert reader.take_listener() is None
        assert reader.report.jail_pid == os.getpid()
        taken.close()
    finally:
        reader.close()
        writer.close()
        listener.close()
        stray.close()
