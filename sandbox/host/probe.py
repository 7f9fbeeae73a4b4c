"""Which layers this kernel and container really offer, shown by a jailed run.

At start the Runner's :class:`LayerProber` runs :data:`PROBE_PROGRAM`
through the real jail (with /proc readable) and :func:`evaluate_probe`
checks, from what the program saw inside, that each layer is in force — not
that some config says so. A layer the jail could not apply shows up as a
failed run naming it. The same checks hold in both of the jail's modes (see
:func:`sandbox.jail.contain`): the service as root, or unprivileged (any
other uid, no capability, as in the hardened container); which one ran is
reported with the privileges layer. Each layer's standing is a
:class:`LayerStatus`, kept in the :class:`LayerTable`.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sandbox.host.layer_status import STRUCTURAL_LAYERS, LayerStatus, LayerTable, inactive
from sandbox.host.lock_pins import LockPins
from sandbox.host.unavailable import RunnerUnavailable
from sandbox.jail.config import OPTIONAL_LAYERS
from sandbox.jail.layer import LAYERS
from sandbox.spec import RunResult, RunSpec

PROBE_WALL_SECONDS = 30
"""Generous: the probe must not fail for a machine busy at start-up."""
PROBE_ATTEMPTS = 3
PROBE_RETRY_SECONDS = 1.0
"""Wait before the second probe (doubling for later ones, up to REPROBE_MAX_SECONDS)."""
REPROBE_MAX_SECONDS = 60.0
PROBE_PROGRAM = r"""
import json, os, resource, socket, sys
facts = {"uid": os.getuid(), "pid": os.getpid(), "hostname": os.uname().nodename}
files = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
         "/etc/ld.so.cache", sys.executable, sys.base_prefix, "/usr"]
facts["inodes"] = {path: list(os.stat(path)[1:3][::-1]) for path in files if os.path.exists(path)}
facts["uid_map"] = open("/proc/self/uid_map").read().split()
facts["gid_map"] = open("/proc/self/gid_map").read().split()
facts["setgroups"] = open("/proc/self/setgroups").read().strip()
for line in open("/proc/self/mountinfo"):
    fields = line.split()
    if fields[4] == "/":  # the last mount on / wins
        fs_type = fields[fields.index("-") + 1]
        facts["root_mount"] = [fs_type, "ro" in fields[5].split(",")]
facts["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
NAMESPACES = ("user", "pid", "net", "mnt", "ipc", "uts")
facts["ns"] = {n: os.readlink("/proc/self/ns/" + n) for n in NAMESPACES}
facts["status"] = dict(
    line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line
)
facts["cgroup"] = open("/proc/self/cgroup").read()
net_dev = open("/proc/self/net/dev").read().splitlines()[2:]
facts["net_devices"] = [line.split(":")[0].strip() for line in net_dev]
facts["nproc"] = resource.getrlimit(resource.RLIMIT_NPROC)[0]
try:
    os.listdir("/")
    facts["root_listing"] = "allowed"
except PermissionError:
    facts["root_listing"] = "denied"
try:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    facts["inet_socket"] = "allowed"
except PermissionError:
    facts["inet_socket"] = "denied"
print(json.dumps(facts))
"""


def _facts(stdout: str) -> dict[str, Any]:
    try:
        value = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {}
    return value if isinstance(value, dict) else {}


def probe_reported(result: Any) -> bool:
    """Whether the probe program got to print what it saw (else the run proves nothing)."""
    return bool(_facts(result.stdout))


def host_inodes(interpreter: str, prefix: str) -> dict[str, list[int]]:
    """(device, inode) on the host of the files :data:`PROBE_PROGRAM` stats in the jail.

    A directory among them seen as the host's means the jail fell back to a
    bind of it (the kernel refused an overlay): its whole tree is the host's.
    """
    paths = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"]
    return inode_identities([*paths, "/etc/ld.so.cache", interpreter, prefix, "/usr"])


def inode_identities(paths: Iterable[str]) -> dict[str, list[int]]:
    """Path -> [device, inode] of those of `paths` that exist here."""
    found = {}
    for path in paths:
        try:
            status = os.stat(path)
        except OSError:
            continue
        found[path] = [status.st_dev, status.st_ino]
    return found


def host_namespaces() -> dict[str, str]:
    """This process's namespace ids, to compare with the jail's."""
    return {
        name: os.readlink(f"/proc/self/ns/{name}")
        for name in ("user", "pid", "net", "mnt", "ipc", "uts")
    }


def evaluate_probe(
    result: Any,
    host_namespaces: dict[str, str],
    jail_uid: int,
    applied_optional: list[str],
    service_source_dir: str,
    host_files: dict[str, list[int]] | None = None,
) -> dict[str, LayerStatus]:
    """Layer -> its :class:`LayerStatus`, from the probe run's result.

    `host_files`: what :func:`host_inodes` saw on the host; the mountns
    verdict then lists the jail's files that are the host's own inodes
    (``host_inodes``: a lock on one is seen outside the run).
    """
    facts = _facts(result.stdout)
    if not facts:
        reason = (
            f"probe run failed: exit={result.exit_code} signal={result.signal}"
            f" stderr (the probe's): {result.stderr[-300:]!r}"
        )
        return {name: inactive(reason) for name in LAYERS}
    status = facts.get("status", {})
    ns = facts.get("ns", {})

    def own(name: str) -> bool:
        return bool(ns.get(name)) and ns.get(name) != host_namespaces.get(name)

    uid_map = facts.get("uid_map", [])
    gid_map = facts.get("gid_map", [])
    root_mount = facts.get("root_mount", ["", False])
    checks: dict[str, tuple[bool, str]] = {
        # One uid and one gid mapped, never root outside, no way back to the
        # host's groups, no capability left (not even in the bounding set).
        "privileges": (
            facts.get("uid") == jail_uid
            and len(uid_map) == 3
            and uid_map[1] != "0"
            and len(gid_map) == 3
            and gid_map[1] != "0"
            and facts.get("setgroups") == "deny"
            and int(status.get("CapEff", "1"), 16) == 0
            and int(status.get("CapPrm", "1"), 16) == 0
            and int(status.get("CapBnd", "1"), 16) == 0,
            f"uid={facts.get('uid')} uid_map={uid_map} gid_map={gid_map} "
            f"setgroups={facts.get('setgroups')} CapEff={status.get('CapEff')}",
        ),
        "userns": (own("user"), "same user namespace as the service"),
        "pidns": (
            own("pid") and facts.get("pid") == 2 and set(facts.get("pids", [])) <= {1, 2},
            f"pid={facts.get('pid')} visible={facts.get('pids')}",
        ),
        "netns": (
            own("net") and facts.get("net_devices") == ["lo"],
            f"devices={facts.get('net_devices')}",
        ),
        # Its own namespace, and in it the jail's root, not the host's: a
        # read-only tmpfs holding only what the run may see.
        "mountns": (
            own("mnt") and root_mount == ["tmpfs", True],
            f"mount ns shared={not own('mnt')} root={root_mount}",
        ),
        "ipcns": (own("ipc"), "same IPC namespace as the service"),
        "utsns": (own("uts") and facts.get("hostname") == "sandbox", "hostname not isolated"),
        "landlock": (facts.get("root_listing") == "denied", "listing / was allowed"),
        "seccomp": (
            status.get("Seccomp", "").strip() == "2"
            and facts.get("inet_socket") == "denied"
            and result.seccomp_refusals >= 1,
            f"Seccomp={status.get('Seccomp')} inet={facts.get('inet_socket')} "
            f"refusals={result.seccomp_refusals}",
        ),
        "rlimits": (
            isinstance(facts.get("nproc"), int) and facts["nproc"] > 0 and facts["nproc"] < 1 << 20,
            f"nproc={facts.get('nproc')}",
        ),
        "cgroup": ("pagi-sandbox" in facts.get("cgroup", ""), "run not in its own cgroup"),
        "no_new_privs": (status.get("NoNewPrivs", "").strip() == "1", "NoNewPrivs not set"),
    }
    verdicts: dict[str, LayerStatus] = {}
    for name, (active, reason) in checks.items():
        if name in OPTIONAL_LAYERS and name not in applied_optional:
            verdicts[name] = inactive("not available on this host")
        elif active:
            verdicts[name] = LayerStatus(active=True)
        else:
            verdicts[name] = inactive(reason)
    verdicts["privileges"] = replace(verdicts["privileges"], launcher=launcher_mode())
    if host_files is not None:
        seen = facts.get("inodes", {})
        shared = sorted(path for path, identity in seen.items() if host_files.get(path) == identity)
        verdicts["mountns"] = replace(verdicts["mountns"], host_inodes=tuple(shared))
    return verdicts


def launcher_mode() -> str:
    """How this process's jails are built: ``root``, or ``unprivileged (uid N)``."""
    euid = os.geteuid()
    return "root" if euid == 0 else f"unprivileged (uid {euid})"


ExecuteProbe = Callable[[RunSpec, list[str]], Awaitable[RunResult]]
"""Runs a spec in the jail with the given optional layers; raises :class:`RunnerUnavailable`."""


@dataclass(frozen=True)
class ProbeTarget:
    """What a probe run is judged against: the jail's interpreter, uid, and the host's cgroups."""

    python: str
    interpreter_prefix: str
    uid: int
    has_cgroups: bool


class LayerProber:
    """Proves each layer active with a real jailed run that inspects itself from inside.

    A probe run that reports nothing (killed at its wall limit on a loaded
    machine, a process that could not start) proves nothing either way: it
    is retried a few times, then again in the background while the jail's
    structure is not shown to work. Only what a probe showed is ever
    reported active.
    """

    def __init__(
        self, layers: LayerTable, execute: ExecuteProbe, target: ProbeTarget, pins: LockPins
    ) -> None:
        self.layers = layers
        self._execute = execute
        self._target = target
        self._pins = pins
        self._reprobe: asyncio.Task[None] | None = None

    async def probe(self) -> None:
        """Probe (retrying a run that reported nothing); keep probing in the background while
        the jail's structure is not shown to work."""
        for attempt in range(PROBE_ATTEMPTS):
            if attempt:
                await asyncio.sleep(PROBE_RETRY_SECONDS * attempt)
            if await self.probe_once():
                break
        if self.layers.missing(STRUCTURAL_LAYERS) and self._reprobe is None:
            self._reprobe = asyncio.get_running_loop().create_task(self._reprobe_later())

    async def stop(self) -> None:
        """Stop probing in the background."""
        if self._reprobe is not None:
            self._reprobe.cancel()
            await asyncio.gather(self._reprobe, return_exceptions=True)

    async def _reprobe_later(self) -> None:
        """Probe again, backing off, until the jail's structure is shown to work."""
        delay = PROBE_RETRY_SECONDS
        try:
            while self.layers.missing(STRUCTURAL_LAYERS):
                await asyncio.sleep(delay)
                delay = min(delay * 2, REPROBE_MAX_SECONDS)
                await self.probe_once()
        finally:
            self._reprobe = None

    async def probe_once(self) -> bool:
        """One probe; False when its run reported nothing, so that nothing is known.

        An optional layer the jail refuses is left out and the probe run
        again without it; a structural one that refuses leaves every layer
        inactive (the jail is broken there).
        """
        target = self._target
        optional = [name for name in OPTIONAL_LAYERS if name != "cgroup" or target.has_cgroups]
        refused: dict[str, LayerStatus] = {}
        for _ in range(len(OPTIONAL_LAYERS) + 1):
            try:
                result = await self._execute(self._spec(), optional)
            except RunnerUnavailable as error:
                if error.layer is None:
                    self._nothing_proven(f"probe run failed: {error}")
                    return False
                refused[error.layer] = inactive(str(error))
                if error.layer in optional:
                    optional.remove(error.layer)
                    continue
                for name, _status in self.layers.items():
                    self.layers[name] = refused.get(name, inactive(f"jail broken at {error.layer}"))
                return True
            if not probe_reported(result):
                self._nothing_proven(
                    f"probe run reported nothing: exit={result.exit_code}"
                    f" signal={result.signal} limit={result.limit_hit}"
                    f" stderr (the probe's): {result.stderr[-300:]!r}"
                )
                return False
            self._judge(result, optional, refused)
            return True
        return True

    def _spec(self) -> RunSpec:
        return RunSpec(
            tool="probe",
            argv=(self._target.python, "-I", "-S", "-c", PROBE_PROGRAM),
            readable_paths=("/proc",),
            limits={"wall_seconds": PROBE_WALL_SECONDS},  # type: ignore[arg-type]
        )

    def _judge(
        self, result: RunResult, optional: list[str], refused: dict[str, LayerStatus]
    ) -> None:
        """Take the probe run's verdicts (a layer refused earlier keeps its refusal)."""
        target = self._target
        verdicts = evaluate_probe(
            result,
            host_namespaces(),
            target.uid,
            optional,
            str(Path(__file__).parent),
            host_inodes(target.python, target.interpreter_prefix),
        )
        for name, verdict in verdicts.items():
            self.layers[name] = verdict if verdict.active else refused.get(name, verdict)
        self._pins.pin_paths(list(verdicts["mountns"].host_inodes or ()))

    def _nothing_proven(self, reason: str) -> None:
        self.layers.set_all(inactive(reason + "; probing again"))
