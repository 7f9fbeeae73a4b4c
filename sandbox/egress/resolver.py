"""Name resolution for the egress proxy: the system's, off the event loop, or one a test injects.

The proxy resolves each name once per connection, checks every address it
got, and connects to one of exactly those addresses: nothing downstream
resolves the name again, so a DNS answer that changes between the check and
the connection (rebinding) cannot switch the destination.
"""

from __future__ import annotations

import asyncio
import socket
from concurrent.futures import ThreadPoolExecutor
from ipaddress import ip_address
from typing import Protocol

from sandbox.egress.addresses import IPAddress

RESOLVER_THREADS = 4
"""getaddrinfo blocks; these threads are the proxy's own, so a run whose
lookups hang cannot starve the rest of the service's executor."""


class ResolveError(Exception):
    """The name has no address (or the lookup failed)."""


class Resolver(Protocol):
    """Turns a host name into the addresses the proxy may connect to."""

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address of ``host`` (A and AAAA), in the order to try them."""
        ...


class SystemResolver:
    """The system's getaddrinfo (``/etc/hosts``, DNS...), run on the resolver's own threads."""

    def __init__(self, threads: int = RESOLVER_THREADS) -> None:
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="egress-dns")

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address getaddrinfo gives for a TCP connection to ``host``."""
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.run_in_executor(
                self._executor,
                lambda: socket.getaddrinfo(
                    host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
                ),
            )
        except (OSError, UnicodeError) as exc:
            raise ResolveError(f"{host}: {exc}") from None
        found: list[IPAddress] = []
        for family, _, _, _, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            address = ip_address(sockaddr[0])
            if address not in found:
                found.append(address)
        if not found:
            raise ResolveError(f"{host}: no address")
        return found

    def close(self) -> None:
        """Stop the resolver's threads (lookups under way finish on their own)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
