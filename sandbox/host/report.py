"""The jail's report socket, read on the service's event loop.

The jail writes one line per event (its pid, a failed layer, the tool's exit
status or signal, seccomp refusals...) on a unix socket whose reader gets each
writer's credentials, and passes the descriptors it hands the service (the
egress proxy's listener, the run's working dir) on the same socket.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct

from sandbox.jail.protocol import (
    EXIT,
    JAIL,
    LAYER_FAILED,
    LISTENER_MESSAGE,
    REFUSALS,
    REFUSED,
    SIGNAL,
    WALL_TIMEOUT,
    WENT_COLD,
    WORKDIR_MESSAGE,
)

_CREDENTIALS = struct.Struct("iII")
"""struct ucred: pid, uid, gid."""
_FD = struct.Struct("i")
_CREDENTIALS_SPACE = socket.CMSG_SPACE(_CREDENTIALS.size)
_ANCILLARY_SPACE = _CREDENTIALS_SPACE + socket.CMSG_SPACE(4 * _FD.size)
"""Credentials, and room for a few descriptors (one is expected; more are closed)."""


def report_channel() -> tuple[int, int]:
    """The report's two ends: a unix socket whose reader gets each writer's credentials.

    The jail's first line comes from the process to kill to end the run;
    its pid, as the service sees it, comes with it (SO_PASSCRED): the jail
    never writes nor holds a host pid.
    """
    reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    reader.shutdown(socket.SHUT_WR)
    writer.shutdown(socket.SHUT_RD)
    return reader.detach(), writer.detach()


class Report:
    """What the jail wrote on its report socket."""

    def __init__(self) -> None:
        self.jail_pid: int | None = None
        """The process to kill to end the run: init (or, until init says so, its launcher)."""
        self.failed_layer: tuple[str, str] | None = None
        self.exit_code: int | None = None
        self.signal: int | None = None
        self.refusals = 0
        self.refused: dict[int, int] = {}
        """Refusals per syscall number (-1: syscalls beyond those init names)."""
        self.calls: dict[tuple[int, ...], int] = {}
        """Refused calls (syscall number, decisive arguments) -> count."""
        self.wall_timeout = False
        self.ran_cold = False
        self.workdir_fd: int | None = None
        """The run's working dir, from init (see :meth:`ReportReader.take_workdir`)."""

    def feed(self, line: str, sender: int | None) -> None:
        """Take one line; `sender`: the pid (as the service sees it) of its writer."""
        word, _, rest = line.partition(" ")
        if word == JAIL:
            self.jail_pid = sender  # the launcher, then init once it is up
        elif word == LAYER_FAILED and self.failed_layer is None:
            layer, _, reason = rest.partition(" ")
            self.failed_layer = (layer, reason)
        elif word == EXIT:
            self.exit_code = int(rest)
        elif word == SIGNAL:
            self.signal = int(rest)
        elif word == REFUSALS:
            total, *counts = rest.split()
            self.refusals = int(total)
            for item in counts:
                number, _, count = item.partition(":")
                self.refused[int(number)] = int(count)
        elif word == REFUSED:
            for item in rest.split():
                call, _, count = item.partition(":")
                key = tuple(int(part) for part in call.split(","))
                self.calls[key] = self.calls.get(key, 0) + int(count)
        elif word == WALL_TIMEOUT:
            self.wall_timeout = True
        elif word == WENT_COLD:
            self.ran_cold = True


class ReportReader:
    """Reads a jail's report socket on the loop, from the jail's start to its end (EOF).

    ``finished``: the tool's status arrived (or EOF). That is the last line
    that matters for the result: after it, init exits and the kernel kills
    what is left of the namespace, and the result need not wait for that
    teardown; the stdout and stderr pipes reach EOF only when the last
    process holding them has died. ``ended``: EOF, init is gone too (with
    the whole pid namespace); the slot waits for that before it is emptied (killing a jail in
    the middle of its own teardown only costs more). ``finished`` before a
    spare's payload was sent means the spare died.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self.report = Report()
        self.finished: asyncio.Future[None] = loop.create_future()
        self.ended: asyncio.Future[None] = loop.create_future()
        self._loop = loop
        self._fd = fd
        self._socket = socket.socket(fileno=fd)
        self._socket.setblocking(False)
        self._pending = bytearray()
        self.listener: socket.socket | None = None
        """The egress proxy's listener the jail made in its network namespace, once sent."""
        self.listener_arrived: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            chunk, ancillary, _, _ = self._socket.recvmsg(1 << 16, _ANCILLARY_SPACE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk, ancillary = b"", []
        self._take_fds(ancillary, chunk)
        if not chunk or len(self._pending) > 1 << 16:
            self._loop.remove_reader(self._fd)
            for future in (self.finished, self.ended):
                if not future.done():
                    future.set_result(None)
            return
        # One sender per read: the kernel does not merge writes of processes
        # with different credentials.
        sender = next(
            (
                _CREDENTIALS.unpack(data[: _CREDENTIALS.size])[0]
                for level, kind, data in ancillary
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
            ),
            None,
        )
        self._pending.extend(chunk)
        while b"\n" in self._pending:
            line, _, rest = bytes(self._pending).partition(b"\n")
            self._pending[:] = rest
            try:
                self.report.feed(line.decode("utf-8", "replace"), sender)
            except ValueError:
                continue
        if self.report.exit_code is not None or self.report.signal is not None:
            if not self.finished.done():
                self.finished.set_result(None)

    def _take_fds(self, ancillary: list[tuple[int, int, bytes]], chunk: bytes) -> None:
        """Keep the descriptors init sends with their lines; close any other.

        A read ends with the message that carried descriptors (lines written
        before it, by the same process, may come in the same read), so the
        read's last line says what they are: the egress proxy's listener, or
        the run's working dir. Only the first of each is kept.
        """
        fds = [
            fd
            for level, kind, data in ancillary
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
            for (fd,) in _FD.iter_unpack(data[: len(data) - len(data) % _FD.size])
        ]
        for fd in fds:
            if self.listener is None and chunk.endswith(LISTENER_MESSAGE):
                self.listener = socket.socket(fileno=fd)
                if not self.listener_arrived.done():
                    self.listener_arrived.set_result(None)
            elif (
                self.report.workdir_fd is None and self._fd >= 0 and chunk.endswith(WORKDIR_MESSAGE)
            ):
                self.report.workdir_fd = fd
            else:
                os.close(fd)

    def take_listener(self) -> socket.socket | None:
        """The listener, now the caller's to close (None if none came)."""
        listener, self.listener = self.listener, None
        return listener

    def take_workdir(self) -> int | None:
        """The run's working dir (the caller closes it); None if the jail sent none."""
        fd, self.report.workdir_fd = self.report.workdir_fd, None
        return fd

    def close(self) -> None:
        """Stop reading; close the socket and a listener or working dir not taken (idempotent)."""
        workdir = self.take_workdir()
        if workdir is not None:
            os.close(workdir)
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._socket.close()
            self._fd = -1
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        for future in (self.finished, self.ended, self.listener_arrived):
            if not future.done():
                future.cancel()
