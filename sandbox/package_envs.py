"""Package environments: read-only virtual environments that tools run with.

The policy names them (``[package_envs.NAME]``: a hash-locked requirements
file beside the policy, the modules to preload) and gives them to tools
(``package_env = "NAME"``: the tool's ``{python}`` is then the
environment's interpreter). ``pagi env build`` (and ``make run``) builds
each one into ``<envs dir>/NAME-KEY``, where KEY hashes the requirements
file and the interpreter, so a changed lock or a new interpreter is a new
directory, never an edit of one a run may be using:

1. ``PAGI_SANDBOX_PYTHON -m venv --without-pip`` (the base interpreter the
   jail runs, the one the ``python`` tool uses; the environment's
   ``bin/python`` is a link to it and its ``pyvenv.cfg`` points at it);
2. ``pip --python ENV install --require-hashes --only-binary :all:
   --no-deps -r FILE``: exactly the locked wheels, every file hash-checked,
   bytecode compiled (the jail mounts the environment read-only, so the
   cache could not be written there);
3. everything made readable by every user (the tool runs as another uid);
4. the preload modules imported by the new interpreter, in isolated mode
   with an empty environment, and its ``sys.path`` checked: the
   environment's own site-packages and the interpreter's standard library,
   nothing of the service's virtual environment or of the interpreter's
   own site-packages;
5. the lock as installed (``pagi-requirements.txt``) and a marker
   (``pagi-env.json``: what it was built from, its packages, how long it
   took) written, then the directory renamed into place (a build that fails
   leaves nothing behind), and older builds of the same environment removed.

The service checks each environment the same way (:func:`inspect`) at
start, after a policy change and whenever its files change, and keeps the
result for ``/health`` and for admission: a tool whose environment is not
``ready`` is refused with 503 naming it.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sandbox.policy import PolicySnapshot

MARKER = "pagi-env.json"
"""Written last into a built environment: what it was built from."""
LOCK_COPY = "pagi-requirements.txt"
"""The lock an environment was installed from, kept in it."""
FORMAT = 1
"""Bumped when the build steps change, so that older builds are rebuilt."""
PROBE_TIMEOUT_SECONDS = 180.0
"""Generous: the first import of matplotlib builds its font cache."""
BUILD_TIMEOUT_SECONDS = 1800.0
RECHECK_SECONDS = 5.0
"""How often the service looks for a changed (rebuilt, removed) environment."""
RETRY_SECONDS = 60.0
"""How often an environment that is not ready is checked again, changed or not."""

EnvStatus = Literal["ready", "missing", "broken", "checking"]

_PROBE_PREFIX = "PAGI-ENV-PROBE "
_PROBE = f"""
import importlib, json, sys
failed = {{}}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException as error:
        failed[name] = (type(error).__name__ + ": " + str(error))[:300]
from importlib import metadata
packages = {{d.metadata["Name"]: d.version for d in metadata.distributions()}}
print({_PROBE_PREFIX!r} + json.dumps({{
    "prefix": sys.prefix, "base_prefix": sys.base_prefix, "path": sys.path,
    "failed": failed, "packages": packages,
}}))
"""


@dataclass(frozen=True)
class EnvDefinition:
    """One ``[package_envs.NAME]`` of a policy, its paths resolved."""

    name: str
    requirements: Path
    """Absolute: the policy's relative path, beside the policy file."""
    preload: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()
    """The tools of the policy that run in it."""


def definitions(snapshot: PolicySnapshot) -> dict[str, EnvDefinition]:
    """The package environments of a policy, by name."""
    document = snapshot.document
    base = snapshot.source.parent
    return {
        name: EnvDefinition(
            name=name,
            requirements=Path(os.path.abspath(base / env.requirements)),
            preload=env.preload,
            tools=tuple(
                sorted(t for t, tool in document.tools.items() if tool.package_env == name)
            ),
        )
        for name, env in sorted(document.package_envs.items())
    }


@dataclass(frozen=True)
class Interpreter:
    """The base interpreter environments are built on (``PAGI_SANDBOX_PYTHON``)."""

    path: str
    """Resolved: no link, no version-manager shim."""
    version: str


@functools.lru_cache(maxsize=8)
def interpreter(python: str) -> Interpreter:
    """``python``'s real path and version (``OSError`` if it does not run)."""
    path = os.path.realpath(python)
    try:
        done = subprocess.run(
            [path, "-I", "-S", "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
            capture_output=True,
            text=True,
            env={},
            timeout=30,
            check=True,
        )
    except (subprocess.SubprocessError, OSError) as error:
        raise OSError(f"the interpreter {path} does not run: {error}") from None
    return Interpreter(path=path, version=done.stdout.strip())


def env_key(requirements: bytes, python: Interpreter) -> str:
    """The build's identity: 16 hex digits over the lock, the interpreter and the build steps."""
    digest = hashlib.sha256(f"pagi-env/{FORMAT}\0{python.path}\0{python.version}\0".encode())
    digest.update(requirements)
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class EnvState:
    """What the service knows of one environment now."""

    name: str
    status: EnvStatus
    reason: str | None = None
    """Why it is not ready (and what to do)."""
    path: str | None = None
    """The environment's directory: what the jail mounts, read-only, at the same path."""
    python: str | None = None
    """Its interpreter (``bin/python``): run it by this name, never resolved (a link)."""
    key: str | None = None
    preload: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()
    packages: dict[str, str] = field(default_factory=dict)
    checked_at: str = ""

    @property
    def ready(self) -> bool:
        """Whether tools may run with it."""
        return self.status == "ready"

    def health(self) -> dict[str, Any]:
        """The ``/health`` view (no package list: ``pagi env status`` shows it)."""
        return {
            "state": self.status,
            "reason": self.reason,
            "path": self.path,
            "tools": list(self.tools),
            "preload": list(self.preload),
            "packages": len(self.packages),
            "checked_at": self.checked_at,
        }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _state(
    definition: EnvDefinition, status: EnvStatus, reason: str | None, **more: Any
) -> EnvState:
    return EnvState(
        name=definition.name,
        status=status,
        reason=reason,
        preload=definition.preload,
        tools=definition.tools,
        checked_at=_now(),
        **more,
    )


def env_dir(envs_dir: Path, name: str, key: str) -> Path:
    """Where the build of ``name`` with ``key`` lives."""
    return envs_dir / f"{name}-{key}"


def _read_requirements(definition: EnvDefinition) -> bytes:
    try:
        return definition.requirements.read_bytes()
    except OSError as error:
        raise OSError(
            f"cannot read its requirements file {definition.requirements}:"
            f" {error.strerror or error}"
        ) from None


def _beneath(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _probe(root: Path, preload: tuple[str, ...]) -> dict[str, Any]:
    """Import ``preload`` with the environment's interpreter; what it reports of itself."""
    python = root / "bin" / "python"
    with tempfile.TemporaryDirectory(prefix="pagi-env-probe-") as home:
        try:
            done = subprocess.run(
                [str(python), "-I", "-c", _PROBE, *preload],
                capture_output=True,
                text=True,
                cwd=home,
                env={"HOME": home, "TMPDIR": home, "LANG": "C.UTF-8"},
                timeout=PROBE_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            seconds = f"{PROBE_TIMEOUT_SECONDS:.0f} s"
            raise OSError(f"importing {', '.join(preload)} took over {seconds}") from None
        except OSError as error:
            raise OSError(f"its interpreter does not run: {error.strerror or error}") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith(_PROBE_PREFIX)]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1][:300]
        raise OSError(f"its interpreter failed (exit {done.returncode}): {tail}")
    report: dict[str, Any] = json.loads(lines[-1][len(_PROBE_PREFIX) :])
    return report


def _check_probe(root: Path, report: dict[str, Any]) -> None:
    """``OSError`` unless the interpreter imported everything and sees only what it should."""
    if report["failed"]:
        name, error = next(iter(report["failed"].items()))
        raise OSError(f"cannot import {name}: {error}")
    top = os.path.realpath(root)
    if os.path.realpath(report["prefix"]) != top:
        raise OSError(f"its interpreter runs as {report['prefix']}, not as the environment")
    base = os.path.realpath(report["base_prefix"])
    service = os.path.realpath(sys.prefix)
    for entry in report["path"]:
        real = os.path.realpath(entry)
        if _beneath(real, top):
            continue
        foreign = not _beneath(real, base) or {"site-packages", "dist-packages"} & set(
            Path(real).parts
        )
        if foreign or (service != base and _beneath(real, service)):
            raise OSError(f"its interpreter sees packages from outside it: {entry}")


def inspect(definition: EnvDefinition, envs_dir: Path, python: str, probe: bool = True) -> EnvState:
    """The state of one environment; with ``probe``, its interpreter is run (a second or two)."""
    try:
        requirements = _read_requirements(definition)
        base = interpreter(python)
    except OSError as error:
        return _state(definition, "broken", str(error))
    key = env_key(requirements, base)
    root = env_dir(envs_dir, definition.name, key)
    build_hint = f"run `pagi env build {definition.name}`"
    if not root.is_dir():
        older = sorted(p.name for p in _builds(envs_dir, definition.name))
        why = (
            "not built"
            if not older
            else f"not built for {definition.requirements.name} as it is now"
        )
        return _state(definition, "missing", f"{why}: {build_hint}", key=key)
    found = {"path": str(root), "key": key}
    try:
        marker = json.loads((root / MARKER).read_text())
        if marker.get("key") != key or marker.get("name") != definition.name:
            raise ValueError("marker of another build")
    except (OSError, ValueError):
        return _state(definition, "broken", f"an incomplete build: {build_hint} --force", **found)
    python_link = root / "bin" / "python"
    if os.path.realpath(python_link) != base.path:
        reason = f"its interpreter is not {base.path}: {build_hint} --force"
        return _state(definition, "broken", reason, **found)
    packages = dict(marker.get("packages") or {})
    if probe:
        try:
            report = _probe(root, definition.preload)
            _check_probe(root, report)
        except OSError as error:
            return _state(definition, "broken", f"{error}: {build_hint} --force", **found)
        packages = report["packages"]
    return _state(definition, "ready", None, python=str(python_link), packages=packages, **found)


def _builds(envs_dir: Path, name: str) -> Iterator[Path]:
    pattern = re.compile(rf"^{re.escape(name)}-[0-9a-f]{{16}}$")
    try:
        entries = list(envs_dir.iterdir())
    except OSError:
        return
    for path in entries:
        if pattern.match(path.name) and path.is_dir() and not path.is_symlink():
            yield path


# --------------------------------------------------------------------------- build


class EnvBuildError(Exception):
    """An environment could not be built; nothing of the attempt is left."""


@contextmanager
def _build_lock(envs_dir: Path, name: str) -> Iterator[None]:
    """One build of an environment at a time (a second ``make run`` waits)."""
    fd = os.open(envs_dir / f".{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _run_step(argv: list[str], what: str, quiet: bool) -> None:
    try:
        done = subprocess.run(
            argv,
            stdout=subprocess.PIPE if quiet else None,
            stderr=subprocess.STDOUT if quiet else None,
            text=True,
            timeout=BUILD_TIMEOUT_SECONDS,
            check=False,
        )
    except (subprocess.SubprocessError, OSError) as error:
        raise EnvBuildError(f"{what} failed: {error}") from None
    if done.returncode != 0:
        tail = "\n".join((done.stdout or "").strip().splitlines()[-15:])
        raise EnvBuildError(
            f"{what} failed (exit {done.returncode})" + (f":\n{tail}" if tail else "")
        )


def _has_requirements(lock: bytes) -> bool:
    """Whether the lock names any package (a lock of comments alone installs nothing)."""
    lines = (line.strip() for line in lock.decode("utf-8", "replace").splitlines())
    return any(line and not line.startswith("#") for line in lines)


def _open_to_everyone(root: Path) -> None:
    """Readable (and directories searchable) by every user, writable by the owner alone."""
    for directory, _, filenames in os.walk(root):  # links to directories are not followed
        os.chmod(directory, 0o755)
        for name in filenames:
            path = os.path.join(directory, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                os.chmod(path, (mode | 0o444 | (0o111 if mode & 0o100 else 0)) & 0o755)


def build(
    definition: EnvDefinition,
    envs_dir: Path,
    python: str,
    *,
    force: bool = False,
    quiet: bool = False,
    echo: Callable[[str], None] = print,
) -> EnvState:
    """Build ``definition`` unless a good build is there (or ``force``); its state when done.

    Needs the package index (PyPI, or what pip is configured with).
    Raises :class:`EnvBuildError` with what failed.
    """
    try:
        requirements = _read_requirements(definition)
        base = interpreter(python)
    except OSError as error:
        raise EnvBuildError(str(error)) from None
    key = env_key(requirements, base)
    envs_dir.mkdir(parents=True, exist_ok=True)
    with _build_lock(envs_dir, definition.name):
        final = env_dir(envs_dir, definition.name, key)
        if final.is_dir() and not force:
            state = inspect(definition, envs_dir, python)
            if state.ready:
                return state
            echo(f"{definition.name}: rebuilding ({state.reason})")
        started = time.monotonic()
        staging = envs_dir / f".{definition.name}-{key}.building"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            _run_step([base.path, "-m", "venv", "--without-pip", str(staging)], "venv", quiet)
            # The lock as read (and hashed into the key) is what gets installed, and stays.
            locked = staging / LOCK_COPY
            locked.write_bytes(requirements)
            if _has_requirements(requirements):
                _run_step(
                    [
                        sys.executable,
                        "-m",
                        "pip",
                        "--python",
                        str(staging / "bin" / "python"),
                        "install",
                        "--quiet",
                        "--require-hashes",
                        "--only-binary",
                        ":all:",
                        "--no-deps",
                        "--no-input",
                        "--disable-pip-version-check",
                        "--progress-bar",
                        "off",
                        "-r",
                        str(locked),
                    ],
                    "pip install",
                    quiet,
                )
            _open_to_everyone(staging)
            try:
                report = _probe(staging, definition.preload)
                _check_probe(staging, report)
            except OSError as error:
                raise EnvBuildError(f"the new environment does not work: {error}") from None
            seconds = round(time.monotonic() - started, 1)
            marker = {
                "format": FORMAT,
                "name": definition.name,
                "key": key,
                "requirements": str(definition.requirements),
                "requirements_sha256": hashlib.sha256(requirements).hexdigest(),
                "python": base.path,
                "python_version": base.version,
                "preload": list(definition.preload),
                "packages": report["packages"],
                "built_at": _now(),
                "build_seconds": seconds,
            }
            (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            os.chmod(staging / MARKER, 0o644)
            if final.exists():
                shutil.rmtree(final)
            os.rename(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        for older in _builds(envs_dir, definition.name):
            if older != final:
                shutil.rmtree(older, ignore_errors=True)
        count = len(report["packages"])
        echo(f"{definition.name}: built in {seconds} s ({count} packages) at {final}")
    return inspect(definition, envs_dir, python, probe=False)


# --------------------------------------------------------------------------- service


class EnvRegistry:
    """The service's view of its policy's environments, kept current in the background."""

    def __init__(self, envs_dir: Path, python: str) -> None:
        self.envs_dir = envs_dir
        self.python = python
        self._definitions: dict[str, EnvDefinition] = {}
        self._states: dict[str, EnvState] = {}
        self._fingerprints: dict[str, tuple[object, ...]] = {}
        self._checked: dict[str, float] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

    def configure(self, snapshot: PolicySnapshot) -> None:
        """Follow a (new) policy: its environments, each ``checking`` until checked."""
        previous = self._definitions
        self._definitions = definitions(snapshot)
        states = {}
        for name, definition in self._definitions.items():
            known = self._states.get(name)
            before = previous.get(name)
            same = before is not None and (before.requirements, before.preload) == (
                definition.requirements,
                definition.preload,
            )
            if (
                known is not None
                and same
                and self._fingerprints.get(name) == self._fingerprint(definition)
            ):
                states[name] = replace(known, tools=definition.tools, preload=definition.preload)
            else:
                states[name] = _state(definition, "checking", "being checked")
                self._fingerprints.pop(name, None)
        self._states = states
        self._wake.set()  # check the new ones now, not at the next round

    def state(self, name: str) -> EnvState | None:
        """The last known state of environment ``name`` (None: the policy has none)."""
        return self._states.get(name)

    def health(self) -> dict[str, Any]:
        """``/health``'s ``package_envs``: each environment's state."""
        return {name: state.health() for name, state in sorted(self._states.items())}

    def _fingerprint(self, definition: EnvDefinition) -> tuple[object, ...]:
        """What changes when the environment's files do (cheap: a few stats)."""
        parts: list[object] = []
        for path in (definition.requirements, *_builds(self.envs_dir, definition.name)):
            try:
                status = path.stat()
                parts.append((str(path), status.st_ino, status.st_mtime_ns, status.st_size))
            except OSError:
                parts.append((str(path), None))
        for build_dir in _builds(self.envs_dir, definition.name):
            try:
                marker = (build_dir / MARKER).stat()
                parts.append((marker.st_ino, marker.st_mtime_ns))
            except OSError:
                parts.append(None)
        return tuple(parts)

    async def refresh(self, only_changed: bool = False) -> None:
        """Check every environment again (``only_changed``: those whose files changed)."""
        async with self._lock:
            for name, definition in list(self._definitions.items()):
                fingerprint = await asyncio.to_thread(self._fingerprint, definition)
                known = self._states.get(name)
                retry = known is None or (
                    not known.ready
                    and time.monotonic() - self._checked.get(name, 0.0) >= RETRY_SECONDS
                )
                if only_changed and self._fingerprints.get(name) == fingerprint and not retry:
                    continue
                state = await asyncio.to_thread(inspect, definition, self.envs_dir, self.python)
                if self._definitions.get(name) is definition:
                    self._states[name] = state
                    self._fingerprints[name] = fingerprint
                    self._checked[name] = time.monotonic()

    async def watch(self, stop: asyncio.Event, interval: float = RECHECK_SECONDS) -> None:
        """Check now, then again whenever an environment's files change, until ``stop``."""
        while not stop.is_set():
            self._wake.clear()
            await self.refresh(only_changed=True)
            stopped = asyncio.ensure_future(stop.wait())
            woken = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait(
                    {stopped, woken}, timeout=interval, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                stopped.cancel()
                woken.cancel()
