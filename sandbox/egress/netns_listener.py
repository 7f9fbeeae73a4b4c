"""How a run in its own empty network namespace reaches the proxy, and nothing else.

The run's namespace has one device, ``lo``, and no route out. The service
puts one listening socket on that loopback, ``127.0.0.1:3128``, and accepts
on it from its own event loop, in the host's namespace: a socket belongs to
the namespace it was created in for its whole life, whoever holds it later.
Inside, ``HTTP_PROXY``/``HTTPS_PROXY`` point there; every other address is
either nobody (loopback) or unreachable (no route). Every connection that
arrives on the listener comes from that run, so the proxy knows whose rules
apply without any credential the tool could steal or forge.

Two ways to make that socket, one contract (:func:`listen_in_netns` or
:func:`receive_listener` hand the service a listening TCP socket on
``127.0.0.1:PORT`` of the run's namespace, verified to be in another
namespace than the service's):

- **root mode** (the service has CAP_SYS_ADMIN in its own user namespace):
  :func:`listen_in_netns` enters the namespace from a dedicated thread with
  ``setns(fd, CLONE_NEWNET)`` (the thread's namespace only, the rest of the
  service is untouched), brings ``lo`` up, binds, listens, and the thread
  ends. The kernel also wants CAP_SYS_ADMIN over the namespace's owning
  user namespace, which root has over any.
- **any mode** (an unprivileged service cannot ``setns`` at all): the jail
  process that created the namespace, while it still holds the capabilities
  its user namespace gives it and before the tool starts, calls
  :func:`bind_listener_here` and passes the socket out over a unix socket
  with ``SCM_RIGHTS`` (:func:`send_listener`; stdlib only), then closes its
  copy. The service takes it with :func:`receive_listener`.
"""

from __future__ import annotations

import asyncio
import socket
import threading

from sandbox.jail.libc import SYS_SETNS, syscall
from sandbox.jail.netns import PROXY_PORT, bind_listener_here, loopback_up

__all__ = [
    "PROXY_PORT",
    "ListenerError",
    "bind_listener_here",
    "check_listener",
    "listen_in_netns",
    "loopback_up",
    "proxy_environment",
    "receive_listener",
    "send_listener",
]

CLONE_NEWNET = 0x40000000
SO_NETNS_COOKIE = 71
_MESSAGE = b"egress-listener"


class ListenerError(OSError):
    """The listener could not be made, or what arrived is not the expected listener."""


def proxy_environment(port: int = PROXY_PORT) -> dict[str, str]:
    """The variables a networked tool gets: urllib, pip, requests and curl all read them."""
    url = f"http://127.0.0.1:{port}"
    return {
        "HTTP_PROXY": url,
        "HTTPS_PROXY": url,
        "http_proxy": url,
        "https_proxy": url,
        "NO_PROXY": "",
        "no_proxy": "",
    }


def netns_cookie(sock: socket.socket) -> int | None:
    """The kernel's id of the namespace ``sock`` lives in (Linux >= 5.14), or None."""
    try:
        return int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8), "little")
    except OSError:
        return None


def _own_netns_cookie() -> int | None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return netns_cookie(probe)


def check_listener(sock: socket.socket, port: int = PROXY_PORT) -> socket.socket:
    """``sock`` if it is a listening TCP socket on ``127.0.0.1:port`` of another namespace."""
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        kind = (sock.family, sock.type)
        where = sock.getsockname()
    except OSError as exc:
        raise ListenerError(f"not a usable socket: {exc}") from None
    if not listening or kind != (socket.AF_INET, socket.SOCK_STREAM):
        raise ListenerError("not a listening TCP/IPv4 socket")
    if where != ("127.0.0.1", port):
        raise ListenerError(f"bound to {where}, not 127.0.0.1:{port}")
    cookie = netns_cookie(sock)
    if cookie is not None and cookie == _own_netns_cookie():
        # A listener on the service's own loopback would take connections
        # from every process of the host, not from one run.
        raise ListenerError("the listener is in the service's own network namespace")
    return sock


async def listen_in_netns(netns_fd: int, port: int = PROXY_PORT) -> socket.socket:
    """Root mode: a listener on ``127.0.0.1:port`` of the namespace ``netns_fd`` refers to.

    ``netns_fd`` is an open ``/proc/PID/ns/net`` (or a bind mount of it) of
    the run. Runs ``setns`` in a thread of its own that ends right after, so
    no thread of the service is ever left in the run's namespace. Raises
    :class:`ListenerError` (EPERM without CAP_SYS_ADMIN: use the
    ``SCM_RIGHTS`` path then).
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[socket.socket] = loop.create_future()

    def deliver(sock: socket.socket | None, error: BaseException | None) -> None:
        if done.cancelled():
            if sock is not None:
                sock.close()
        elif error is not None:
            done.set_exception(error)
        else:
            done.set_result(sock)  # type: ignore[arg-type]

    def work() -> None:
        try:
            syscall(SYS_SETNS, netns_fd, CLONE_NEWNET)
            sock = bind_listener_here(port)
        except OSError as exc:
            error = ListenerError(exc.errno, f"listener in the run's namespace: {exc.strerror}")
            loop.call_soon_threadsafe(deliver, None, error)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            loop.call_soon_threadsafe(deliver, None, exc)
        else:
            loop.call_soon_threadsafe(deliver, sock, None)

    threading.Thread(target=work, name="egress-netns-listener", daemon=True).start()
    return check_listener(await done, port)


def send_listener(channel: socket.socket, listener: socket.socket) -> None:
    """Jail side (stdlib only): pass ``listener`` to the service over a unix socket."""
    socket.send_fds(channel, [_MESSAGE], [listener.fileno()])


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


async def receive_listener(channel: socket.socket, port: int = PROXY_PORT) -> socket.socket:
    """Service side: the listener a jail process sent with :func:`send_listener`, checked."""
    loop = asyncio.get_running_loop()
    channel.setblocking(False)
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(channel, len(_MESSAGE), 4)
            break
        except BlockingIOError:
            ready: asyncio.Future[None] = loop.create_future()
            loop.add_reader(channel, _wake, ready)
            try:
                await ready
            finally:
                loop.remove_reader(channel)
    received = [socket.socket(fileno=fd) for fd in fds]
    if message != _MESSAGE or len(received) != 1:
        for sock in received:
            sock.close()
        raise ListenerError("expected one listener from the jail")
    try:
        return check_listener(received[0], port)
    except ListenerError:
        received[0].close()
        raise
