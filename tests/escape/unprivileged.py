"""Start a service the way the hardened container runs it: not root, no capability at all.

The test machine runs everything as root; the jail's unprivileged mode is
what runs when the service is any other uid. :func:`unprivileged_argv`
wraps a command so that it runs as :data:`UID`/:data:`GID` with no
supplementary group, empty capability sets (bounding set included) and
no_new_privs, like ``user: "10001:10001"`` + ``cap_drop: [ALL]`` +
``no-new-privileges`` in compose.yaml.

The run cgroups (the memory and pids limits of a whole run) need a cgroup
subtree the service may write: like a container engine or systemd
delegating one, the wrapper (still root) makes a group under the test's
own, hands it to that uid and moves itself in; without it the cgroup
layer would be inactive (as in the hardened container, see docs/containers.md).

That uid must reach the interpreter, the venv and the repository. Where a
host directory on the way has no search permission for others (pyenv's
interpreters live under /root, mode 0700), the wrapper first enters a
private mount namespace, still as root, and lays a world-searchable stand-in
directory over it that holds only the needed entry (bound from the real
one). The host itself is left as it is: the stand-in exists only in that
namespace, which the service's whole process tree shares.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from pagi.stack import Stack
from testing.stack import REPO, in_private_mount_namespace

UID = 10001
GID = 10001


def _needed_paths() -> list[Path]:
    """What the unprivileged service must reach: its interpreter, venv and source."""
    return [Path(os.path.realpath(sys.executable)), Path(sys.prefix), Path(sys.base_prefix), REPO]


def _blocked_steps(paths: list[Path]) -> dict[Path, set[str]]:
    """Directory -> entries under it an unprivileged uid must pass but may not search."""
    blocked: dict[Path, set[str]] = {}
    for path in paths:
        parts = path.resolve().parts
        for depth in range(1, len(parts) - 1):
            directory = Path(*parts[:depth])
            mode = directory.stat().st_mode
            if not mode & stat.S_IXOTH:
                blocked.setdefault(directory, set()).add(parts[depth])
    return blocked


def _check_reachable(argv_prefix: list[str]) -> None:
    """Fail loudly (not skip) when the unprivileged uid still cannot start Python."""
    probe = subprocess.run(
        [*argv_prefix, sys.executable, "-c", "import sandbox, pagi"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert probe.returncode == 0, (
        f"uid {UID} cannot run the venv's Python on the repository: {probe.stderr[-800:]}"
    )


class UnprivilegedLauncher:
    """Builds the wrapper and owns the stand-in directories it needs (removed by close)."""

    def __init__(self) -> None:
        if os.geteuid() != 0:
            raise AssertionError("the unprivileged-mode tests start from root (they drop to it)")
        for tool in ("setpriv", "unshare", "mount"):
            assert shutil.which(tool), f"{tool} (util-linux) is needed to drop privileges"
        self._standins: list[Path] = []
        self.cgroups = _delegated_cgroups()
        script = ["set -e", *(f"echo $$ > '{group}/cgroup.procs'" for group in self.cgroups)]
        for directory, entries in sorted(_blocked_steps(_needed_paths()).items()):
            standin = Path(tempfile.mkdtemp(prefix="pagi-standin-"))
            standin.chmod(0o755)
            self._standins.append(standin)
            for entry in sorted(entries):
                real = directory / entry
                if real.is_dir():
                    (standin / entry).mkdir()
                else:
                    (standin / entry).touch()
                script.append(f"mount --rbind '{real}' '{standin / entry}'")
            script.append(f"mount --rbind '{standin}' '{directory}'")
        drop = [
            "setpriv",
            f"--reuid={UID}",
            f"--regid={GID}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
        ]
        script.append('exec "$@"')
        self.prefix = in_private_mount_namespace("\n".join(script), *drop)
        _check_reachable(self.prefix)

    def argv(self, command: list[str]) -> list[str]:
        """`command`, run as the unprivileged uid (same pid: every wrapper execs)."""
        return [*self.prefix, *command]

    def close(self) -> None:
        """Remove the (empty) stand-in directories and the delegated cgroups."""
        for standin in self._standins:
            shutil.rmtree(standin, ignore_errors=True)
        for group in self.cgroups:
            _remove_cgroup(group)


def _delegated_cgroups() -> list[Path]:
    """A memory, a pids and (where mounted) a cpuacct group under this process's own,
    owned by :data:`UID`."""
    own = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            own[controller] = path
    root = Path("/sys/fs/cgroup")
    name = f"pagi-unprivileged-test-{os.getpid()}-{os.urandom(3).hex()}"
    if (root / "memory" / "tasks").exists() and (root / "pids" / "tasks").exists():
        controllers = ["memory", "pids"]
        if (root / "cpuacct" / "cpuacct.usage").exists():
            controllers.append("cpuacct")  # the whole run's CPU time
        groups = [root / c / own.get(c, "/").lstrip("/") / name for c in controllers]
    else:  # cgroup v2: one group, its controllers enabled by the service itself
        groups = [root / own.get("", "/").lstrip("/") / name]
    for group in groups:
        group.mkdir()
        for entry in [group, *group.iterdir()]:
            os.chown(entry, UID, GID)
    return groups


def _remove_cgroup(group: Path) -> None:
    """Remove `group` and what the service left in it, deepest first."""
    nested = [path for path in group.rglob("*") if path.is_dir()]
    for directory in sorted(nested, key=lambda path: len(path.parts), reverse=True):
        try:
            directory.rmdir()
        except OSError:
            pass
    try:
        group.rmdir()
    except OSError:
        pass


def give_to_unprivileged(path: Path) -> None:
    """Make `path` (a dir the service writes in) belong to the unprivileged uid."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, UID, GID)


class UnprivilegedStack(Stack):
    """A :class:`Stack` whose services run through an :class:`UnprivilegedLauncher`."""

    launcher: UnprivilegedLauncher | None = None

    def command_of(self, name: str) -> list[str]:
        """Run the service as the unprivileged uid."""
        assert self.launcher is not None
        return self.launcher.argv(super().command_of(name))
