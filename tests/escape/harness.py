"""The escape suite's view of a running sandbox: runs, outcomes, host-side probes.

An attack is a small Python program sent to ``POST /api/v1/execute_tool``. Its
``check`` looks at the :class:`Outcome` (the program's REACHED/RESULT lines,
the run result, and what the host sees afterwards) and returns the name of the
layer that stopped it, or raises ``AssertionError`` when the attack was not
contained or the evidence is missing.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from pagi.stack import Stack
from sandbox.denials import limit_denial
from sandbox.host.bpf import syscall_name
from sandbox.host.probe import inode_identities
from sandbox.spec import RunLimits
from tests.escape.prelude import PRELUDE

SIGSYS = int(signal.SIGSYS)

Check = Callable[["Outcome"], "str | set[str]"]
"""Returns the layer(s) that contained the attack; raises AssertionError otherwise."""


@dataclass(frozen=True)
class Attack:
    """One row of the catalogue."""

    id: str
    family: str
    program: str
    layers: tuple[str, ...]
    """Layers that may legitimately stop this attack (first: the one expected here)."""
    check: Check


class HostListeners:
    """Host-side sockets a tool must never reach: pathname unix, abstract unix, UDP.

    Each listener counts what arrives; an attack's check compares the counts
    before and after its run.
    """

    def __init__(self, directory: Path) -> None:
        self.unix_path = directory / "host.sock"
        self.abstract_name = f"pagi-escape-{uuid.uuid4().hex[:12]}"
        self.received: dict[str, int] = {"unix": 0, "abstract": 0, "udp": 0, "tcp": 0}
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unix.bind(str(self.unix_path))
        os.chmod(self.unix_path, 0o777)
        unix.listen(16)
        abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        abstract.bind("\0" + self.abstract_name)
        abstract.listen(16)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        self.udp_port: int = udp.getsockname()[1]
        tcp = _dual_stack_listener()
        tcp.listen(16)
        self.tcp_port: int = tcp.getsockname()[1]
        self._sockets = [unix, abstract, udp, tcp]
        for name, sock in (("unix", unix), ("abstract", abstract), ("tcp", tcp)):
            threading.Thread(target=self._accept, args=(name, sock), daemon=True).start()
        threading.Thread(target=self._receive, args=(udp,), daemon=True).start()

    def _count(self, name: str) -> None:
        with self._lock:
            self.received[name] += 1

    def _accept(self, name: str, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            self._count(name)
            conn.close()

    def _receive(self, sock: socket.socket) -> None:
        while True:
            try:
                sock.recv(65536)
            except OSError:
                return
            self._count("udp")

    def snapshot(self) -> dict[str, int]:
        """Counts so far."""
        with self._lock:
            return dict(self.received)

    def close(self) -> None:
        """Stop listening."""
        for sock in self._sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def _dual_stack_listener() -> socket.socket:
    """A TCP socket on every host address, IPv6 and IPv4 alike when the host has IPv6."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", 0))
    except OSError:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("0.0.0.0", 0))
    return sock


@dataclass
class HostFiles:
    """Host files planted for the attacks: a secret to read, a file to tamper with."""

    directory: Path
    secret_text: str = field(default_factory=lambda: f"host-secret-{uuid.uuid4().hex}")

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o755)
        self.secret = self.directory / "secret.txt"
        self.secret.write_text(self.secret_text)
        self.secret.chmod(0o644)
        self.writable = self.directory / "writable.txt"
        self.reset_writable()
        self.drop = self.directory / "drop"
        self.drop.mkdir(exist_ok=True)
        self.drop.chmod(0o777)

    def reset_writable(self) -> None:
        """Give the tamper target its original content, world-writable."""
        self.writable.write_text("original\n")
        self.writable.chmod(0o666)

    def writable_intact(self) -> bool:
        """True when no attack changed the tamper target."""
        return self.writable.read_text() == "original\n"


@dataclass
class Outcome:
    """What one run produced, parsed, plus the host-side context to judge it."""

    status_code: int
    body: dict[str, Any]
    marker: str
    sandbox: SandboxUnderTest
    listeners_before: dict[str, int]
    elapsed_s: float

    @property
    def result(self) -> dict[str, Any]:
        """The ``result`` object of the response."""
        result = self.body.get("result")
        assert isinstance(result, dict), f"no result object in {self.body!r}"
        return result

    @property
    def stdout(self) -> str:
        """The tool's standard output as the service returned it."""
        return str(self.result.get("stdout") or "")

    @property
    def stderr(self) -> str:
        """The tool's standard error as the service returned it."""
        return str(self.result.get("stderr") or "")

    @property
    def lines(self) -> list[str]:
        """Standard output, line by line."""
        return self.stdout.splitlines()

    def reached(self, label: str) -> bool:
        """Did the program announce it was about to try ``label``?"""
        return f"REACHED {label}" in self.lines

    def results(self) -> dict[str, dict[str, Any]]:
        """Every RESULT line by label (the last one wins)."""
        found: dict[str, dict[str, Any]] = {}
        for line in self.lines:
            if line.startswith("RESULT "):
                try:
                    record = json.loads(line[len("RESULT ") :])
                except ValueError:
                    continue
                found[str(record.get("label"))] = record
        return found

    def result_of(self, label: str) -> dict[str, Any]:
        """The RESULT of ``label``; a whole-run kill right after REACHED counts as one."""
        assert self.reached(label), f"attack never reached {label!r}: {self.describe()}"
        record = self.results().get(label)
        if record is not None:
            return record
        run_signal = self.result.get("signal")
        if run_signal is not None:
            return {"label": label, "signal": run_signal, "whole_run": True}
        raise AssertionError(f"no RESULT for {label!r} after REACHED: {self.describe()}")

    @property
    def refusals(self) -> int:
        """``result.seccomp_refusals`` of the run."""
        return int(self.result.get("seccomp_refusals") or 0)

    @property
    def refusals_counted(self) -> int:
        """Refusals beyond what an idle program of the same shape causes."""
        return self.refusals - self.sandbox.baseline_refusals

    @property
    def denials(self) -> dict[str, int]:
        """``result.seccomp_denials``: the refusals by syscall name."""
        return dict(self.result.get("seccomp_denials") or {})

    def denied_beyond_baseline(self, syscall: str) -> int:
        """Refusals of `syscall` beyond what an idle program of the same shape causes."""
        return self.denials.get(syscall, 0) - self.sandbox.baseline_denials.get(syscall, 0)

    @property
    def namespaces(self) -> dict[str, str]:
        """The run's pid and user namespace ids, as the program printed them first thing."""
        identity = self._identity()
        return {kind: str(identity[kind]) for kind in ("pid", "user") if kind in identity}

    @property
    def started_by(self) -> float:
        """The boot-time clock (seconds) when the program began: its init and tool were up."""
        return float(self._identity()["boottime"])

    def _identity(self) -> dict[str, Any]:
        for line in self.lines:
            if line.startswith("NAMESPACES "):
                value = json.loads(line[len("NAMESPACES ") :])
                assert isinstance(value, dict) and "boottime" in value, line
                return value
        raise AssertionError(f"the program never said its namespaces: {self.describe()}")

    def describe(self) -> str:
        """A compact view of the run for assertion messages."""
        result = self.body.get("result") if isinstance(self.body, dict) else None
        if not isinstance(result, dict):
            return f"HTTP {self.status_code} {json.dumps(self.body)[:1500]}"
        keys = ("exit_code", "signal", "limit_hit", "seccomp_refusals", "duration_ms", "executor")
        summary = {key: result.get(key) for key in keys}
        return (
            f"HTTP {self.status_code} tool_status={self.body.get('tool_status')} {summary} "
            f"stdout={self.stdout[-1500:]!r} stderr={self.stderr[-1500:]!r}"
        )

    def listener_delta(self, name: str) -> int:
        """Connections/datagrams a host listener received during this run."""
        return self.sandbox.listeners.snapshot()[name] - self.listeners_before[name]


@dataclass
class SandboxUnderTest:
    """One running sandbox service on one execution path, and the host around it."""

    path: str
    url: str
    token: Callable[[], str]
    limits: RunLimits
    keys_dir: Path
    state_dir: Path
    policy_path: Path
    repo: Path
    service_pid: int
    pagi_ports: list[int]
    sandbox_port: int
    host_files: HostFiles
    listeners: HostListeners
    client: httpx.Client
    stack: Stack
    logs: Any
    """The service's output lines (``logs.of("sandbox")``)."""
    baseline_refusals: int = 0
    baseline_denials: dict[str, int] = field(default_factory=dict)
    mode: str = "root"
    """How the jail is built: "root" (service as root) or "unprivileged" (uid 10001)."""
    interpreter: str = ""
    """The python tool's interpreter (the real path a jail's sys.executable shows)."""
    tool: str = "python"
    """The tool the attacks are sent to (``python-data``: with its package environment)."""
    cgroup_delegated: bool = False
    """The suite gave the service a cgroup hierarchy it may write (the layer must be active)."""

    def alive(self) -> bool:
        """The service process is still running and answers /health."""
        if self.stack.first_exited() is not None:
            return False
        return self.client.get(f"{self.url}/health").status_code == 200

    def health(self) -> dict[str, Any]:
        """The body of ``GET /health``."""
        response = self.client.get(f"{self.url}/health")
        assert response.status_code == 200, response.text
        body = response.json()
        assert isinstance(body, dict)
        return body

    def host_inodes(self) -> dict[str, list[int]]:
        """(device, inode) on the host of files a jail also shows at the same path."""
        paths = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"]
        paths += ["/etc/ld.so.cache", self.interpreter, "/proc/self/ns/cgroup"]
        return inode_identities([*paths, "/proc/self/ns/time"])

    def substitutions(self, marker: str) -> dict[str, str]:
        """Placeholders an attack program may use."""
        return {
            "@MARKER@": marker,
            "@KEYS_DIR@": str(self.keys_dir),
            "@STATE_DIR@": str(self.state_dir),
            "@POLICY@": str(self.policy_path),
            "@REPO@": str(self.repo),
            "@VENV_SITE@": str(self.repo / ".venv" / "lib" / "python3.11" / "site-packages"),
            "@SERVICE_PID@": str(self.service_pid),
            "@SANDBOX_PORT@": str(self.sandbox_port),
            "@PAGI_PORTS@": json.dumps(self.pagi_ports),
            "@HOST_SECRET@": str(self.host_files.secret),
            "@HOST_SECRET_TEXT@": self.host_files.secret_text,
            "@HOST_WRITABLE@": str(self.host_files.writable),
            "@HOST_DIR@": str(self.host_files.directory),
            "@UNIX_SOCKET@": str(self.listeners.unix_path),
            "@ABSTRACT_SOCKET@": self.listeners.abstract_name,
            "@UDP_PORT@": str(self.listeners.udp_port),
            "@TCP_PORT@": str(self.listeners.tcp_port),
            "@STATE_FILES@": json.dumps(state_files(self.state_dir)),
            "@HOST_HOSTNAME@": socket.gethostname(),
            "@BLOCK_DEVICES@": json.dumps(host_block_devices()),
            "@HOST_DEVICES@": json.dumps(sorted(os.listdir("/dev"))),
            "@SETUID_BINARIES@": json.dumps(host_setuid_binaries()),
            "@HOST_INTERFACES@": json.dumps(host_interfaces()),
            "@MEMORY_LIMIT@": str(self.limits.memory_bytes),
            "@HOST_ADDRESSES@": json.dumps(host_ipv4_addresses()),
            "@KERNEL_KNOBS@": json.dumps(host_kernel_knobs()),
            # Hex, so that a program can look for these paths without holding them.
            "@HOST_PATHS_HEX@": json.dumps(
                {
                    "state_dir": str(self.state_dir).encode().hex(),
                    "keys_dir": str(self.keys_dir).encode().hex(),
                    "policy": str(self.policy_path).encode().hex(),
                    "cgroup_fs": b"/sys/fs/cgroup/".hex(),
                }
            ),
        }

    def execute(self, code: str) -> httpx.Response:
        """One raw execute_tool call with an operator token."""
        body: dict[str, Any] = {"tool_name": self.tool, "code": code}
        return self.client.post(
            f"{self.url}/api/v1/execute_tool",
            json=body,
            headers={"Authorization": f"Bearer {self.token()}"},
        )

    def run(self, body: str, marker: str | None = None) -> Outcome:
        """Runs ``PRELUDE + body`` (placeholders filled) and parses what came back."""
        marker = marker or new_marker()
        code = PRELUDE + "\n" + body
        for placeholder, value in self.substitutions(marker).items():
            code = code.replace(placeholder, value)
        before = self.listeners.snapshot()
        started = time.monotonic()
        response = self.execute(code)
        elapsed = time.monotonic() - started
        try:
            payload = response.json()
        except ValueError:
            payload = {"raw": response.text[:2000]}
        outcome = Outcome(response.status_code, payload, marker, self, before, elapsed)
        assert response.status_code == 200, f"execute_tool refused the run: {outcome.describe()}"
        self.assert_path(outcome)
        self.assert_limit_named(outcome)
        return outcome

    def assert_limit_named(self, outcome: Outcome) -> None:
        """A run a limit stopped has exactly that limit, with its value, among its denials."""
        limit_hit = outcome.result.get("limit_hit")
        named = [d for d in outcome.result.get("denials") or [] if d.get("layer") == "limit"]
        expected = (
            [limit_denial(limit_hit, self.limits, self.tool).model_dump()] if limit_hit else []
        )
        assert named == expected, f"limit {limit_hit} named as {named}: {outcome.describe()}"

    def assert_path(self, outcome: Outcome) -> None:
        """The run really took the execution path this suite instance is testing."""
        reported = outcome.result.get("executor")
        assert reported == self.path, (
            f"run went through the {reported} executor, not {self.path}: {outcome.describe()}"
        )


def new_marker() -> str:
    """15 characters: fits in /proc/<pid>/comm, unique per run."""
    return "esc" + uuid.uuid4().hex[:12]


def state_files(state_dir: Path) -> list[str]:
    """Every file under the service's state dir right now (audit log, database...)."""
    found: list[str] = []
    for root, _dirs, files in os.walk(state_dir):
        found.extend(os.path.join(root, name) for name in files)
    return found[:50]


def host_block_devices() -> list[str]:
    """Block devices that exist on the host (raw disk reads must fail in the jail)."""
    candidates = ("/dev/vda", "/dev/sda", "/dev/nvme0n1", "/dev/xvda", "/dev/mem", "/dev/kmem")
    return [path for path in candidates if os.path.exists(path)]


def host_setuid_binaries() -> list[str]:
    """Set-user-id root binaries of the host's /usr/bin (which the jail shows read-only)."""
    found = []
    for name in ("passwd", "mount", "umount", "su", "chsh", "chfn", "newgrp", "gpasswd"):
        path = f"/usr/bin/{name}"
        try:
            status = os.stat(path)
        except OSError:
            continue
        if status.st_mode & stat.S_ISUID and status.st_uid == 0:
            found.append(path)
    return found


def host_interfaces() -> list[str]:
    """The host's network interface names."""
    try:
        return sorted(os.listdir("/sys/class/net"))
    except OSError:
        return [name for _, name in socket.if_nameindex()]


KERNEL_KNOBS = (
    "/proc/sys/kernel/core_pattern",
    "/proc/sys/kernel/hostname",
    "/proc/sys/kernel/modprobe",
    "/proc/sys/kernel/panic",
    "/proc/sys/vm/panic_on_oom",
    "/proc/sys/vm/overcommit_memory",
    "/proc/sys/fs/binfmt_misc/register",
    "/proc/sysrq-trigger",
    "/sys/kernel/uevent_helper",
    "/sys/kernel/mm/transparent_hugepage/enabled",
    "/sys/fs/cgroup/pids/cgroup.procs",
    "/sys/fs/cgroup/memory/cgroup.procs",
    "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    "/sys/fs/cgroup/unified/cgroup.procs",
    "/sys/fs/cgroup/cgroup.procs",
)
"""Host-global kernel settings and cgroup files: opening one for writing is already an escape."""


def host_kernel_knobs() -> list[str]:
    """The knobs that exist on this host (a missing one would prove nothing)."""
    return [path for path in KERNEL_KNOBS if os.path.exists(path)]


def host_ipv4_addresses() -> list[str]:
    """The host's own non-loopback IPv4 addresses (from the kernel's FIB)."""
    found: list[str] = []
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
    except OSError:
        return found
    for previous, line in zip(lines, lines[1:], strict=False):
        if "/32 host LOCAL" in line:
            address = previous.split()[-1]
            if not address.startswith("127.") and address not in found:
                found.append(address)
    return found


# --- host-side probes ---------------------------------------------------------------


def processes_with_marker(marker: str) -> list[str]:
    """Host processes whose comm or cmdline carries ``marker`` (survivors of a run)."""
    found: list[str] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            comm = Path(f"/proc/{entry}/comm").read_text().strip()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            state = _stat_fields(int(entry))[0]
        except (OSError, IndexError):
            continue
        if marker in comm or marker.encode() in cmdline:
            found.append(f"pid {entry} state {state} comm {comm!r}")
    return found


def processes_in_namespaces(namespaces: dict[str, str]) -> list[tuple[int, float, str]]:
    """Host processes in any of `namespaces` ({"pid": "pid:[N]", ...}): (pid, start, what)."""
    wanted = {f"{kind}:{value}" for kind, value in namespaces.items()}
    ticks = os.sysconf("SC_CLK_TCK")
    found: list[tuple[int, float, str]] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        for kind in ("pid", "user"):
            try:
                link = os.readlink(f"/proc/{entry}/ns/{kind}")
            except OSError:
                continue
            if f"{kind}:{link}" not in wanted:
                continue
            try:
                comm = Path(f"/proc/{entry}/comm").read_text().strip()
                fields = _stat_fields(int(entry))
            except (OSError, IndexError):
                break  # gone meanwhile
            start = int(fields[19]) / ticks  # field 22 of proc(5): start time since boot
            found.append((int(entry), start, f"pid {entry} state {fields[0]} comm {comm!r} {link}"))
            break
    return found


def run_survivors(outcome: Outcome, grace_s: float = 1.0) -> list[str]:
    """What is left on the host of the run, found by what it is, not what it is called.

    Every process in the run's pid namespace or user namespace (each run
    has its own of both), after a short grace for the kernel's teardown.
    A run that never said which namespaces it was in is no evidence.

    The kernel reuses a namespace's id once the namespace is gone: the next
    run's jail may hold it already. Any process of this run lives only as
    long as the run's init (the kernel ends the whole namespace with it),
    and that init, and the launcher in its user namespace, were up before
    the program began: processes found are this run's only if one of them
    started by then.
    """
    namespaces = outcome.namespaces
    assert set(namespaces) == {"pid", "user"}, f"no namespace ids from the run: {namespaces}"
    began = outcome.started_by + 0.02  # the start time's resolution (clock ticks)

    def this_runs() -> list[str]:
        found = processes_in_namespaces(namespaces)
        if any(start <= began for _, start, _ in found):
            return [what for _, _, what in found]
        return []

    deadline = time.monotonic() + grace_s
    survivors = this_runs()
    while survivors and time.monotonic() < deadline:
        time.sleep(0.05)
        survivors = this_runs()
    return survivors


def wait_no_survivors(marker: str, grace_s: float = 1.0) -> list[str]:
    """Survivors still there after a short grace (the tree is killed asynchronously)."""
    deadline = time.monotonic() + grace_s
    survivors = processes_with_marker(marker)
    while survivors and time.monotonic() < deadline:
        time.sleep(0.05)
        survivors = processes_with_marker(marker)
    return survivors


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name: state, ppid, ..."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rfind(")") + 2 :].split()


def descendants(root_pid: int) -> dict[int, str]:
    """Host pids below ``root_pid`` with their state letter."""
    parents: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = _stat_fields(int(entry))
            except (OSError, IndexError):
                continue
            parents[int(entry)] = (int(fields[1]), fields[0])
    found: dict[int, str] = {}
    frontier = [root_pid]
    while frontier:
        current = frontier.pop()
        for pid, (ppid, state) in parents.items():
            if ppid == current and pid not in found:
                found[pid] = state
                frontier.append(pid)
    return found


def zombies_under(root_pid: int) -> list[int]:
    """Zombie processes anywhere below the sandbox service."""
    return [pid for pid, state in descendants(root_pid).items() if state == "Z"]


def host_mounts_under(path: Path) -> list[str]:
    """Mount points of the host's own mount namespace below ``path`` (a jail's mounts leaking)."""
    prefix = str(path.resolve()).rstrip("/") + "/"
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix):
            mounts.append(point)
    return mounts


def wait_no_zombies(root_pid: int, grace_s: float = 1.0) -> list[int]:
    """Zombies below the service still there after a short grace (reaping is asynchronous)."""
    deadline = time.monotonic() + grace_s
    zombies = zombies_under(root_pid)
    while zombies and time.monotonic() < deadline:
        time.sleep(0.05)
        zombies = zombies_under(root_pid)
    return zombies


def marker_files(marker: str, roots: Iterable[Path], deep: bool = True) -> list[str]:
    """Host files or dirs whose name contains ``marker`` (things a run left behind).

    ``deep=False`` looks at the roots' own entries only (home, repository).
    """
    found: list[str] = []
    for root in roots:
        if not root.exists():
            continue
        if not deep:
            try:
                found.extend(str(root / name) for name in os.listdir(root) if marker in name)
            except OSError:
                pass
            continue
        found.extend(_walk_for(marker, root))
    return found


def _walk_for(marker: str, root: Path) -> list[str]:
    """Iterative walk (a tool may leave trees deeper than Python's recursion limit)."""
    found: list[str] = []
    pending = [str(root)]
    while pending:
        current = pending.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            if marker in entry.name:
                found.append(entry.path)
            if entry.name in (".venv", ".git"):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
            except OSError:
                continue
    return found


# --- what /health must say ------------------------------------------------------------


def assert_layers_active(isolation: dict[str, Any], expected: set[str]) -> None:
    """Every layer of `expected` is in /health's isolation report, and active."""
    missing = expected - set(isolation)
    assert not missing, f"/health does not report {sorted(missing)}: {isolation}"
    inactive = {
        name: report
        for name, report in isolation.items()
        if name in expected and not (isinstance(report, dict) and report.get("active") is True)
    }
    assert not inactive, f"layers not active: {inactive}"


def assert_limits_bound_the_whole_run(isolation: dict[str, Any]) -> None:
    """The cgroup layer is active and every limit bounds the whole run, not each process."""
    assert_layers_active(isolation, {"cgroup"})
    scope = isolation.get("limit_scope")
    expected = {"wall_seconds", "cpu_seconds", "memory_bytes", "processes"}
    assert scope == dict.fromkeys(expected, "run"), f"limits bound less than the run: {scope}"


# --- judging evidence ---------------------------------------------------------------

ERRNO_LAYER: dict[int, str] = {
    errno.EACCES: "landlock",
    errno.EROFS: "mountns",
    errno.EXDEV: "mountns",
    errno.ESRCH: "pidns",
    errno.ENETUNREACH: "netns",
    errno.EHOSTUNREACH: "netns",
    errno.EADDRNOTAVAIL: "netns",
    errno.ECONNREFUSED: "netns",
    errno.EAGAIN: "rlimit",
    errno.ENOMEM: "rlimit",
    errno.EFBIG: "rlimit",
    errno.EMFILE: "rlimit",
    errno.ENOSPC: "disk_quota",
    errno.EDQUOT: "disk_quota",
}


def syscalls_of(record: dict[str, Any]) -> list[str]:
    """The syscall(s) a RESULT says it tried: named by the program, or the raw number it made."""
    named = record.get("syscall")
    if isinstance(named, str):
        return [named]
    if isinstance(named, list):
        return [str(name) for name in named]
    number = record.get("syscall_nr")
    if isinstance(number, int):
        return [syscall_name(number)]
    return []


def counted_by_seccomp(outcome: Outcome, record: dict[str, Any]) -> bool:
    """Whether the run's refusals by name counted the very syscall this RESULT tried."""
    return any(outcome.denied_beyond_baseline(name) > 0 for name in syscalls_of(record))


def missing_on_the_jail_side(record: dict[str, Any]) -> bool:
    """ENOENT is the mount layer's work only if what was aimed at exists on the host."""
    path = record.get("path")
    return isinstance(path, str) and os.path.lexists(path)


def layer_of(
    outcome: Outcome, record: dict[str, Any], overrides: dict[int, str] | None = None
) -> str:
    """The layer a RESULT record points at; AssertionError when it escaped.

    EPERM names seccomp only when the run's refusals counted the syscall this
    RESULT tried (by name); otherwise it is the kernel's own privilege check
    ("privileges"). A SIGSYS kill is seccomp. ENOENT names the mount layer
    only when the RESULT's host path exists on the host (else nothing was
    hidden: no evidence of any layer).
    """
    if record.get("signal") == SIGSYS:
        return "seccomp"
    if record.get("ok"):
        raise AssertionError(
            f"NOT CONTAINED: {record['label']} succeeded ({record.get('value')}); "
            f"{outcome.describe()}"
        )
    code = record.get("errno")
    if overrides and code in overrides:
        return overrides[code]
    if code == errno.EPERM:
        return "seccomp" if counted_by_seccomp(outcome, record) else "privileges"
    if code == errno.ENOENT:
        assert missing_on_the_jail_side(record), (
            f"{record['label']}: ENOENT for {record.get('path')!r}, which the host lacks too"
            f" (or the program did not say what it aimed at): no evidence of a layer; {record}"
        )
        return "mountns"
    if code == errno.ENOSYS:
        return "kernel"  # not implemented here; PAGI's filter answers EPERM (clone3 aside)
    if isinstance(code, int) and code in ERRNO_LAYER:
        return ERRNO_LAYER[code]
    raise AssertionError(
        f"unexpected evidence for {record['label']}: {record}; {outcome.describe()}"
    )


def blocked(label: str, overrides: dict[int, str] | None = None) -> Check:
    """Check: ``label`` was reached and refused; the layer comes from its errno."""

    def check(outcome: Outcome) -> str:
        return layer_of(outcome, outcome.result_of(label), overrides)

    check.__name__ = f"blocked_{label}"
    return check


def all_blocked(*labels: str, overrides: dict[int, str] | None = None) -> Check:
    """Check: every label was reached and refused; the layers that did it."""

    def check(outcome: Outcome) -> set[str]:
        return {layer_of(outcome, outcome.result_of(label), overrides) for label in labels}

    return check


def blocked_each(key: str, overrides: dict[int, str] | None = None) -> Check:
    """Check: the program reported ``key`` with the list of labels it tried; all refused."""

    def check(outcome: Outcome) -> set[str]:
        labels = outcome.results().get(key, {}).get("labels")
        assert labels, f"the program never said what it tried: {outcome.describe()}"
        return {layer_of(outcome, outcome.result_of(label), overrides) for label in labels}

    return check


def seccomp_refused(label: str) -> Check:
    """Check: a syscall refused by seccomp: EPERM counted as a refusal, or a SIGSYS kill."""

    def check(outcome: Outcome) -> str:
        record = outcome.result_of(label)
        layer = layer_of(outcome, record)
        if layer == "privileges":
            raise AssertionError(
                f"{label}: EPERM, but seccomp_denials={outcome.denials} "
                f"(baseline {outcome.sandbox.baseline_denials}) did not count"
                f" {syscalls_of(record)}: {outcome.describe()}"
            )
        return layer

    check.__name__ = f"seccomp_refused_{label}"
    return check


def no_survivors(label: str, ready_word: str = "SURVIVOR_READY") -> Check:
    """Check: the program set up a would-be survivor; nothing of it lives on the host."""

    def check(outcome: Outcome) -> str:
        record = outcome.result_of(label)
        assert record.get("ok"), f"the would-be survivor was never created: {record}"
        assert ready_word in outcome.stdout, f"survivor never got ready: {outcome.describe()}"
        survivors = run_survivors(outcome) + wait_no_survivors(outcome.marker)
        assert not survivors, f"NOT CONTAINED: processes outlived the run: {survivors}"
        zombies = wait_no_zombies(outcome.sandbox.service_pid)
        assert not zombies, f"zombies left under the sandbox service: {zombies}"
        return "teardown"

    return check
