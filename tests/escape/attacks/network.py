"""Network: reach PAGI's own ports, the host, the outside world; listen; odd socket families."""

from __future__ import annotations

import errno

from tests.escape.harness import Attack, Check, Outcome, blocked, blocked_each, layer_of

NET_LAYERS = ("seccomp", "netns")

SOCKETS = r"""
import socket

def tcp_connect(family, address):
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(2)
    try:
        sock.connect(address)
        return "connected to %r" % (address,)
    finally:
        sock.close()
"""

TCP_OWN_PORT = (
    SOCKETS
    + r"""
attempt("tcp_own_port", lambda: tcp_connect(socket.AF_INET, ("127.0.0.1", @SANDBOX_PORT@)),
        syscall="socket")
"""
)

TCP_PAGI_PORTS = (
    SOCKETS
    + r"""
ports = sorted(set(json.loads("@PAGI_PORTS@") + [8000, 8001, 8002, 8003, 50051, @TCP_PORT@]))
labels = []
for port in ports:
    labels.append(f"tcp_{port}")
    attempt(labels[-1], lambda: tcp_connect(socket.AF_INET, ("127.0.0.1", port)), syscall="socket")
report("tried", labels=labels)
"""
)

TCP_HOST_ADDRESS = (
    SOCKETS
    + r"""
labels = []
for index, address in enumerate(json.loads('@HOST_ADDRESSES@') + ["127.0.0.2", "0.0.0.0"]):
    labels.append(f"tcp_host_{index}")
    attempt(labels[-1], lambda: tcp_connect(socket.AF_INET, (address, @TCP_PORT@)),
            syscall="socket")
report("tried", labels=labels)
"""
)

TCP_INTERNET = (
    SOCKETS
    + r"""
attempt("tcp_internet", lambda: tcp_connect(socket.AF_INET, ("1.1.1.1", 443)), syscall="socket")
"""
)

TCP_IPV6_LOOPBACK = (
    SOCKETS
    + r"""
attempt("tcp_ipv6", lambda: tcp_connect(socket.AF_INET6, ("::1", @TCP_PORT@)), syscall="socket")
"""
)

UDP_TO_HOST = (
    SOCKETS
    + r"""
def send():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(3):
        sock.sendto(b"escape " + MARKER.encode(), ("127.0.0.1", @UDP_PORT@))
    return "sent"

attempt("udp_to_host", send, syscall="socket")
"""
)


def udp_not_received(outcome: Outcome) -> str:
    record = outcome.result_of("udp_to_host")
    received = outcome.listener_delta("udp")
    assert received == 0, f"NOT CONTAINED: the host received {received} datagrams"
    if record.get("ok"):
        return "netns"  # sent into an empty namespace: nothing arrived
    return layer_of(outcome, record)


DNS = (
    SOCKETS
    + r"""
reached("dns")
try:
    answer = socket.getaddrinfo("pypi.org", 443)
except OSError as exc:
    report("dns", resolved=False, error=str(exc))
else:
    report("dns", resolved=True, answer=repr(answer)[:200])

def query():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    sock.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04pypi\x03org\x00\x00\x01\x00\x01",
                ("8.8.8.8", 53))
    return sock.recv(512)

attempt("dns_udp", query, syscall="socket")
"""
)


def dns_fails(outcome: Outcome) -> str:
    record = outcome.result_of("dns")
    assert not record["resolved"], f"NOT CONTAINED: DNS resolved: {record}"
    return layer_of(outcome, outcome.result_of("dns_udp"))


BIND_HOST_PORT = (
    SOCKETS
    + r"""
def bind_and_listen():
    # The host already listens on this port: binding it only works in another namespace.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("0.0.0.0", @TCP_PORT@))
    sock.listen(8)
    return "listening"

attempt("bind_listen", bind_and_listen, syscall="socket")
"""
)


def bind_isolated(outcome: Outcome) -> str:
    record = outcome.result_of("bind_listen")
    if record.get("ok"):
        return "netns"  # the host's port was free here: a namespace of its own
    if record.get("errno") == errno.EADDRINUSE:
        raise AssertionError("NOT CONTAINED: the tool shares the host's port space")
    return layer_of(outcome, record)


RAW_SOCKET = (
    SOCKETS
    + r"""
attempt("raw_socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
        syscall="socket")
"""
)

PACKET_SOCKET = (
    SOCKETS
    + r"""
attempt("packet_socket", lambda: socket.socket(17, socket.SOCK_RAW, 0x0300), syscall="socket")
"""
)

NETLINK_SOCKET = (
    SOCKETS
    + r"""
attempt("netlink_socket", lambda: socket.socket(16, socket.SOCK_RAW, 0), syscall="socket")
"""
)

VSOCK_SOCKET = (
    SOCKETS
    + r"""
attempt("vsock_socket", lambda: socket.socket(40, socket.SOCK_STREAM, 0), syscall="socket")
"""
)

ALG_SOCKET = (
    SOCKETS
    + r"""
attempt("alg_socket", lambda: socket.socket(38, socket.SOCK_SEQPACKET, 0), syscall="socket")
"""
)

UDP_SOCKET = (
    SOCKETS
    + r"""
attempt("udp_socket_any", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
        syscall="socket")
"""
)

UNIX_ABSTRACT_HOST = (
    SOCKETS
    + r"""
def connect():
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect("\0@ABSTRACT_SOCKET@")
    return "connected"

attempt("unix_abstract", connect)
"""
)

UNIX_PATH_HOST = (
    SOCKETS
    + r"""
def connect():
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect("@UNIX_SOCKET@")
    return "connected"

attempt("unix_path", connect, path="@UNIX_SOCKET@")
"""
)


def host_listener_untouched(label: str, listener: str, overrides: dict[int, str]) -> Check:
    def check(outcome: Outcome) -> str:
        layer = layer_of(outcome, outcome.result_of(label), overrides)
        reached_host = outcome.listener_delta(listener)
        assert reached_host == 0, f"NOT CONTAINED: the host's {listener} socket was reached"
        return layer

    return check


def tcp_listener_untouched(check_labels: Check) -> Check:
    def check(outcome: Outcome) -> str | set[str]:
        layers = check_labels(outcome)
        assert outcome.listener_delta("tcp") == 0, (
            "NOT CONTAINED: the host TCP listener was reached"
        )
        return layers

    return check


ATTACKS = [
    Attack("tcp_own_sandbox_port", "network", TCP_OWN_PORT, NET_LAYERS, blocked("tcp_own_port")),
    Attack(
        "tcp_pagi_ports",
        "network",
        TCP_PAGI_PORTS,
        NET_LAYERS,
        tcp_listener_untouched(blocked_each("tried")),
    ),
    Attack(
        "tcp_host_addresses",
        "network",
        TCP_HOST_ADDRESS,
        NET_LAYERS,
        tcp_listener_untouched(blocked_each("tried")),
    ),
    Attack("tcp_internet", "network", TCP_INTERNET, NET_LAYERS, blocked("tcp_internet")),
    Attack(
        "tcp_ipv6_loopback",
        "network",
        TCP_IPV6_LOOPBACK,
        NET_LAYERS,
        tcp_listener_untouched(blocked("tcp_ipv6")),
    ),
    Attack("udp_to_host", "network", UDP_TO_HOST, NET_LAYERS, udp_not_received),
    Attack("dns_resolution", "network", DNS, NET_LAYERS, dns_fails),
    Attack("bind_listen_host_port", "network", BIND_HOST_PORT, NET_LAYERS, bind_isolated),
    Attack("raw_icmp_socket", "network", RAW_SOCKET, ("seccomp",), blocked("raw_socket")),
    Attack("packet_socket", "network", PACKET_SOCKET, ("seccomp",), blocked("packet_socket")),
    Attack("netlink_socket", "network", NETLINK_SOCKET, ("seccomp",), blocked("netlink_socket")),
    Attack("vsock_socket", "network", VSOCK_SOCKET, ("seccomp",), blocked("vsock_socket")),
    Attack("af_alg_socket", "network", ALG_SOCKET, ("seccomp",), blocked("alg_socket")),
    Attack("inet_socket_created", "network", UDP_SOCKET, ("seccomp",), blocked("udp_socket_any")),
    Attack(
        "unix_abstract_host_socket",
        "network",
        UNIX_ABSTRACT_HOST,
        ("netns", "landlock"),
        host_listener_untouched(
            "unix_abstract", "abstract", {errno.ECONNREFUSED: "netns", errno.EPERM: "landlock"}
        ),
    ),
    Attack(
        "unix_path_host_socket",
        "network",
        UNIX_PATH_HOST,
        ("mountns", "landlock"),
        host_listener_untouched("unix_path", "unix", {}),
    ),
]
