"""``pagi env build``: an environment from its hash-locked requirements, or nothing.

The steps are listed in :mod:`sandbox.package_envs`; a build is staged in a
hidden directory and renamed into place only once it works, so a failed
build leaves nothing behind and a run never sees a half-built one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sandbox.package_envs.checks import EnvState, check_probe, inspect, now, run_probe
from sandbox.package_envs.layout import (
    FORMAT,
    LOCK_COPY,
    MARKER,
    EnvDefinition,
    build_for,
    builds,
)

BUILD_TIMEOUT_SECONDS = 1800.0


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
        wanted = build_for(definition, envs_dir, python)
    except OSError as error:
        raise EnvBuildError(str(error)) from None
    requirements, base, key, final = wanted.requirements, wanted.python, wanted.key, wanted.root
    envs_dir.mkdir(parents=True, exist_ok=True)
    with _build_lock(envs_dir, definition.name):
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
                report = run_probe(staging, definition.preload)
                check_probe(staging, report)
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
                "built_at": now(),
                "build_seconds": seconds,
            }
            (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            os.chmod(staging / MARKER, 0o644)
            if final.exists():
                shutil.rmtree(final)
            os.rename(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        for older in builds(envs_dir, definition.name):
            if older != final:
                shutil.rmtree(older, ignore_errors=True)
        count = len(report["packages"])
        echo(f"{definition.name}: built in {seconds} s ({count} packages) at {final}")
    return inspect(definition, envs_dir, python, probe=False)


# --------------------------------------------------------------------------- service
