"""A throwaway PostgreSQL server for the memory's tests: a real server, never a mock.

The distribution's PostgreSQL (``make test`` installs the ``postgresql``
package when it is missing) runs a fresh cluster in a temporary directory:
``initdb`` there, a server on a free loopback port (and a unix socket in the
same directory), password authentication over TCP with a generated password,
stopped and removed when the test session ends. The server runs as a
non-root user (PostgreSQL refuses root): the ``postgres`` account the package
creates, or ``nobody``, when the tests run as root. It is the tests' own
child process, with a parent-death signal: should the test process die
without cleaning up, the server goes with it instead of lingering.

One server serves the whole session (:func:`shared_server`); each test takes
a database of its own (:meth:`PostgresServer.create_database`), so tests never
see each other's rows. The fault tests restart or kill the server itself.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

SUPERUSER = "pagi_test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bin_dir() -> Path:
    """The newest installed PostgreSQL's bin directory (Debian's layout, then PATH)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(os.path.realpath(initdb)).parent
    raise RuntimeError(
        "PostgreSQL's server programs (initdb, pg_ctl) are not installed: run `make test`,"
        " which installs the distribution's `postgresql` package, or install it yourself"
    )


class PostgresServer:
    """A PostgreSQL cluster of its own in a temporary directory."""

    def __init__(self) -> None:
        self.bin = postgres_bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="pagi-postgres-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "socket"
        self.log = self.root / "server.log"
        self.port = _free_port()
        self.password = secrets.token_urlsafe(18)
        self._as_user: list[str] = []
        self._process: subprocess.Popen[bytes] | None = None
        self.started_in: float = 0.0
        self.initdb_in: float = 0.0
        if os.geteuid() == 0:
            account = self._unprivileged_account()
            self._as_user = [
                "setpriv",
                f"--reuid={account.pw_uid}",
                f"--regid={account.pw_gid}",
                "--clear-groups",
                "--pdeathsig=SIGQUIT",
                "--",
            ]
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self.root.chmod(0o700)

    @staticmethod
    def _unprivileged_account() -> pwd.struct_passwd:
        for name in ("postgres", "nobody"):
            try:
                return pwd.getpwnam(name)
            except KeyError:
                continue
        raise RuntimeError("no unprivileged account (postgres, nobody) to run PostgreSQL as")

    def _run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self._as_user, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "TZ": "UTC"},
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} failed ({result.returncode}): {result.stderr[-2000:]}"
                f"\n{self.log.read_text()[-2000:] if self.log.exists() else ''}"
            )
        return result

    def init(self) -> None:
        """Create the cluster (``initdb``): UTF-8, password auth over TCP."""
        started = time.monotonic()
        password_file = self.root / "password"
        password_file.write_text(self.password + "\n")
        if self._as_user:
            account = self._unprivileged_account()
            os.chown(password_file, account.pw_uid, account.pw_gid)
        password_file.chmod(0o600)
        self.socket_dir.mkdir(mode=0o700)
        if self._as_user:
            os.chown(self.socket_dir, account.pw_uid, account.pw_gid)
        self._run(
            str(self.bin / "initdb"),
            "--pgdata",
            str(self.data),
            "--username",
            SUPERUSER,
            "--pwfile",
            str(password_file),
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-instructions",
        )
        password_file.unlink()
        self.initdb_in = time.monotonic() - started

    def start(self, timeout: float = 60) -> None:
        """Start the server and wait until it accepts connections.

        Call it from the thread that will outlive the server (the parent-death
        signal fires when the thread that started it ends).
        """
        started = time.monotonic()
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": "200",
            "shared_buffers": "32MB",
            # A throwaway cluster: no crash-safe flush of the data files to disk
            # (a killed server still recovers from its WAL, which the kernel keeps:
            # the fault tests stop the server, not the machine).
            "fsync": "off",
            "full_page_writes": "off",
        }
        options = [
            argument for key, value in settings.items() for argument in ("-c", f"{key}={value}")
        ]
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    *(self._as_user or ["setpriv", "--pdeathsig=SIGQUIT", "--"]),
                    str(self.bin / "postgres"),
                    "-D",
                    str(self.data),
                    *options,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.root,
                env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "TZ": "UTC"},
            )
        deadline = time.monotonic() + timeout
        while not self.running():
            if self._process.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                self.stop("immediate")
                raise RuntimeError(f"postgres did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        self.started_in = time.monotonic() - started

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clean) or ``immediate`` (as a crash: recovery at start)."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGINT if mode == "fast" else signal.SIGQUIT)
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)

    def alive(self) -> bool:
        """Whether the server process runs (answering or not)."""
        return self._process is not None and self._process.poll() is None

    def running(self) -> bool:
        """Whether the server answers."""
        try:
            with psycopg.connect(self.url(), connect_timeout=2):
                return True
        except psycopg.Error:
            return False

    def url(self, database: str = "postgres") -> str:
        """A ``postgresql://`` URL for ``database`` over TCP on loopback, password included."""
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "memory") -> str:
        """A new, empty database; returns its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        """Stop the server (if it runs) and remove the cluster."""
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


_shared: PostgresServer | None = None


def shared_server() -> PostgresServer:
    """The session's server, started on first use and removed when the tests end.

    A test that stops it must start it again before it returns.
    """
    global _shared
    if _shared is None:
        server = PostgresServer()
        atexit.register(server.destroy)
        server.init()
        server.start()
        _shared = server
    elif not _shared.alive():
        _shared.start()
    return _shared
