"""Network namespace: a fresh one has only a loopback device, down: no network at all.

Creating and destroying network namespaces is the costliest namespace work
of a run (~1 ms of CPU each, plus the kernel's asynchronous cleanup), so a
zygote enters one empty namespace at its start and its runs (one at a
time per slot) share it. Nothing of a run can stay in it: the namespace
belongs to the service's user namespace, so a tool can neither bring up an
interface nor change a setting in it, and its sockets die with its processes.
A launcher started per run makes a fresh one.

A run that reaches the network through the egress proxy always gets a
namespace of its own (a shared one would let one run's tool reach the
next run's listener): the jail brings its ``lo`` up, puts one listening
socket on it (:func:`bind_listener_here`) and hands that socket to the
service (:func:`pass_listener`) before the tool exists. The service accepts
on it from the host's namespace and serves the run's proxy session there.
"""

from __future__ import annotations

from sandbox.jail.libc import SYS_UNSHARE, syscall
from sandbox.jail.protocol import LISTENER_MESSAGE

CLONE_NEWNET = 0x40000000
PROXY_PORT = 3128
"""Where a run finds the proxy: ``http://127.0.0.1:3128`` inside its namespace."""
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_IFREQ = "16sH14x"


def unshare() -> None:
    """Leave the host's network stack for an empty one."""
    syscall(SYS_UNSHARE, CLONE_NEWNET)


def loopback_up() -> None:
    """Bring ``lo`` of the calling thread's network namespace up (CAP_NET_ADMIN there)."""
    # Imported here: only runs with egress pay for them (a launcher started per run pays
    # every import of the jail's modules).
    import fcntl
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack(_IFREQ, b"lo", 0)
        flags = struct.unpack(_IFREQ, fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        if not flags & IFF_UP:
            fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | IFF_UP))


def bind_listener_here(port: int = PROXY_PORT, backlog: int = 64):  # noqa: ANN201 - socket, imported lazily
    """In the calling thread's namespace: ``lo`` up, a listener on ``127.0.0.1:port``.

    No SO_REUSEPORT: nothing else in the namespace may bind the same port
    and take the proxy's connections (SO_REUSEADDR lets a new run's listener
    reuse the port past old connections in TIME_WAIT, never next to a
    listening socket).
    """
    import socket

    loopback_up()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def pass_listener(report: int, port: int) -> None:
    """Make the run's proxy listener here and send it to the service on the report socket.

    Called by the jail process that made this namespace, while its user
    namespace still gives it CAP_NET_ADMIN here and before the tool exists;
    its own copy is closed at once, so no process of the run holds it.
    """
    import socket

    listener = bind_listener_here(port)
    try:
        channel = socket.socket(fileno=report)
        try:
            socket.send_fds(channel, [LISTENER_MESSAGE], [listener.fileno()])
        finally:
            channel.detach()  # the report fd stays open for the lines after this one
    finally:
        listener.close()
