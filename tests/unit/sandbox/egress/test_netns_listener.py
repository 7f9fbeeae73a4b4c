"""A run in its own empty network namespace reaches the proxy through one socket, and nothing else.

Without the jail: a process in a fresh network namespace (``unshare --net``)
plays the tool. The service side makes the listener inside that namespace
(root mode: setns from a thread; any mode: the namespace's creator passes
it out with SCM_RIGHTS) and serves the proxy on it from the host.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys

import pytest

from sandbox.egress.netns_listener import (
    PROXY_PORT,
    ListenerError,
    bind_listener_here,
    check_listener,
    listen_in_netns,
    netns_cookie,
    proxy_environment,
    receive_listener,
    send_listener,
)
from tests.unit.sandbox.egress.conftest import egress
from tests.unit.sandbox.egress.origin import CLIENT, origin_server

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="makes network namespaces as root")

# The tool: urllib through the proxy, then every way around it it can think of.
TOOL = (
    CLIENT.replace("print(json.dumps(results))", "")
    + r"""
import os, socket
probe = {}
def attempt(name, family, address):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(address)
        probe[name] = "connected"
    except OSError as exc:
        probe[name] = exc.errno
    finally:
        s.close()
for name, (family, address) in json.loads(os.environ["PROBES"]).items():
    attempt(name, getattr(socket, family), tuple(address))
probe["devices"] = sorted(name for _, name in socket.if_nameindex())
probe["ipv4_routes"] = open("/proc/net/route").read().splitlines()[1:]
probe["ipv6_routes"] = [l.split()[-1] for l in open("/proc/net/ipv6_route").read().splitlines()]
print(json.dumps({"fetch": results, "probe": probe}))
"""
)


def host_address() -> str | None:
    """The host's address toward the outside world, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.254", 9))
            return probe.getsockname()[0]
        except OSError:
            return None


def probes(origin_port: int) -> dict[str, tuple[str, list]]:
    found = {
        "origin_on_loopback": ("AF_INET", ["127.0.0.1", origin_port]),
        "origin_on_ipv6_loopback": ("AF_INET6", ["::1", origin_port]),
        "another_loopback_port": ("AF_INET", ["127.0.0.1", PROXY_PORT + 1]),
        "outside_address": ("AF_INET", ["10.255.255.254", 80]),
    }
    address = host_address()
    if address is not None:
        found["host_address"] = ("AF_INET", [address, origin_port])
    return found


async def test_root_mode_a_tool_in_an_empty_namespace_reaches_the_proxy_and_only_it(
    proxy, certificate
):
    with origin_server("plain") as plain, origin_server("tls", tls=certificate) as tls:
        env = proxy_environment() | {
            "PROBES": json.dumps(probes(plain.port)),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        }
        tool = await asyncio.create_subprocess_exec(
            "unshare", "--net", "--", sys.executable, "-I", "-c", TOOL,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        ours = os.readlink("/proc/self/ns/net")
        path = f"/proc/{tool.pid}/ns/net"
        for _ in range(200):  # until unshare has moved it
            if os.readlink(path) != ours:
                break
            await asyncio.sleep(0.01)
        netns_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            listener = await listen_in_netns(netns_fd)
        finally:
            os.close(netns_fd)
        policy = egress([f"allowed.test:{plain.port}", f"allowed.test:{tls.port}"])
        async with proxy.session(
            listener, policy, request_id="ns-1", tool="fetch", policy_version="v1"
        ) as session:
            requests = [
                {"url": f"http://allowed.test:{plain.port}/inside"},
                {"url": f"https://allowed.test:{tls.port}/inside", "cafile": str(certificate[0])},
                {"url": f"http://other.test:{plain.port}/inside"},
            ]
            out, err = await asyncio.wait_for(tool.communicate(json.dumps(requests).encode()), 60)
    assert tool.returncode == 0, err.decode()
    result = json.loads(out)
    fetch, probe = result["fetch"], result["probe"]
    assert [r.get("status") for r in fetch] == [200, 200, 403], fetch
    assert fetch[0]["body"] == "hello from plain /inside "
    assert fetch[2]["reason"] == "host_not_allowed"
    assert session.report.upstream_connections == 2
    # Nothing else answers from inside: loopback is the namespace's own, and
    # there is no route anywhere.
    assert probe["origin_on_loopback"] == 111  # ECONNREFUSED: nobody there
    assert probe["origin_on_ipv6_loopback"] in (111, 99, 101)  # refused / no address / unreachable
    assert probe["another_loopback_port"] == 111
    assert probe["outside_address"] == 101  # ENETUNREACH
    if "host_address" in probe:
        assert probe["host_address"] == 101
    assert probe["devices"] == ["lo"]
    assert probe["ipv4_routes"] == []
    assert set(probe["ipv6_routes"]) <= {"lo"}
    assert plain.seen[0]["path"] == "/inside" and len(plain.seen) == 1


async def test_the_listener_is_in_the_runs_namespace_not_the_services():
    holder = await asyncio.create_subprocess_exec("unshare", "--net", "--", "sleep", "30")
    try:
        ours = os.readlink("/proc/self/ns/net")
        path = f"/proc/{holder.pid}/ns/net"
        for _ in range(200):
            if os.readlink(path) != ours:
                break
            await asyncio.sleep(0.01)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            first = await listen_in_netns(fd)
            with pytest.raises(ListenerError):  # the port is taken there, by the first
                await listen_in_netns(fd)
        finally:
            os.close(fd)
        with socket.socket() as mine:
            assert netns_cookie(first) not in (None, netns_cookie(mine))
        # The service's own thread never moved: our loopback has no such listener.
        with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
            probe.connect(("127.0.0.1", PROXY_PORT))
        first.close()
    finally:
        holder.kill()
        await holder.wait()


def test_a_listener_in_the_services_own_namespace_is_refused():
    with socket.socket() as here:
        here.bind(("127.0.0.1", 0))
        here.listen()
        with pytest.raises(ListenerError, match="own network namespace"):
            check_listener(here, here.getsockname()[1])
        with pytest.raises(ListenerError, match="not 127.0.0.1"):
            check_listener(here, 1)
    with socket.socket() as idle, pytest.raises(ListenerError, match="listening"):
        check_listener(idle)


UID = 10001


def _jail(channel: socket.socket, report: int, origin_port: int) -> None:
    """A forked child of the unprivileged service: makes the run's namespaces, then is the tool."""
    import urllib.request

    from sandbox.jail import userns
    from sandbox.jail.netns import unshare as unshare_net

    try:
        userns.enter(0, 0, UID, UID)  # root inside, the service's uid outside
        unshare_net()
        listener = bind_listener_here()
        send_listener(channel, listener)
    except Exception as exc:  # noqa: BLE001 - reported to the test
        os.write(report, json.dumps({"error": repr(exc)}).encode())
        return
    listener.close()  # the tool never holds the listener
    channel.close()
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{PROXY_PORT}"})
    )
    outcome = {}
    try:
        with opener.open(f"http://allowed.test:{origin_port}/unprivileged", timeout=10) as answer:
            outcome["body"] = answer.read().decode()
    except Exception as exc:  # noqa: BLE001 - reported to the test
        outcome["error"] = repr(exc)
    probe = socket.socket()
    probe.settimeout(2)
    outcome["direct"] = probe.connect_ex(("127.0.0.1", origin_port))
    os.write(report, json.dumps(outcome).encode())


def _service(origin_port: int) -> dict:
    """The unprivileged service: no capability; receives the listener and serves the run."""
    from sandbox.egress.proxy import EgressProxy
    from sandbox.jail import privileges
    from sandbox.jail.libc import prctl
    from tests.unit.sandbox.egress.conftest import PointedResolver

    os.setgroups([])
    os.setresgid(UID, UID, UID)
    os.setresuid(UID, UID, UID)  # every capability gone
    # Dumpable again, as a process exec'd as that uid is (the uid change
    # reset it, which would leave /proc/self root's and the maps unwritable).
    prctl(privileges.PR_SET_DUMPABLE, 1)
    service_end, jail_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    read_report, write_report = os.pipe()
    jail = os.fork()
    if jail == 0:  # pragma: no cover - the jail
        try:
            service_end.close()
            _jail(jail_end, write_report, origin_port)
        finally:
            os._exit(0)
    jail_end.close()
    os.close(write_report)

    async def serve() -> dict:
        try:
            listener = await receive_listener(service_end)
        except ListenerError as exc:
            return {"error": repr(exc), "jail": os.read(read_report, 65536).decode()}
        # The unprivileged service cannot enter the namespace itself.
        fd = os.open(f"/proc/{jail}/ns/net", os.O_RDONLY)
        try:
            await listen_in_netns(fd, PROXY_PORT + 1)
            setns = "allowed"
        except ListenerError as exc:
            setns = f"errno {exc.errno}"
        finally:
            os.close(fd)
        proxy = EgressProxy(resolver=PointedResolver({"allowed.test": ["127.0.0.1"]}))
        policy = egress([f"allowed.test:{origin_port}"])
        async with proxy.session(
            listener, policy, request_id="u", tool="fetch", policy_version="v"
        ) as session:
            data = await asyncio.get_running_loop().run_in_executor(
                None, lambda: os.read(read_report, 65536)
            )
        await proxy.close()
        return {
            "jail": json.loads(data),
            "setns": setns,
            "allowed": [d.outcome for d in session.report.decisions],
        }

    try:
        return asyncio.run(serve())
    finally:
        os.waitpid(jail, 0)


def test_unprivileged_mode_the_jail_passes_the_listener_out():
    with origin_server("plain") as plain:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the unprivileged service
            try:
                os.close(read_end)
                outcome = _service(plain.port)
            except BaseException as exc:  # noqa: BLE001
                outcome = {"error": repr(exc)}
            os.write(write_end, json.dumps(outcome).encode())
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            outcome = json.loads(pipe.read() or b"{}")
        os.waitpid(pid, 0)
    assert "error" not in outcome, outcome
    assert outcome["jail"].get("body") == "hello from plain /unprivileged ", outcome
    assert outcome["jail"]["direct"] == 111  # the origin is not on the run's loopback
    assert outcome["setns"] == "errno 1"  # EPERM: setns needs CAP_SYS_ADMIN
    assert outcome["allowed"] == ["allowed"]
