"""Where package environments come from and where their builds live.

A policy's ``[package_envs.NAME]`` becomes an :class:`EnvDefinition`; a
build of it lives in ``<envs dir>/NAME-KEY``, where KEY (:func:`env_key`)
hashes the requirements file, the base interpreter and the build steps.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sandbox.policy import PolicySnapshot

MARKER = "pagi-env.json"
"""Written last into a built environment: what it was built from."""
LOCK_COPY = "pagi-requirements.txt"
"""The lock an environment was installed from, kept in it."""
FORMAT = 1
"""Bumped when the build steps change, so that older builds are rebuilt."""


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


def env_dir(envs_dir: Path, name: str, key: str) -> Path:
    """Where the build of ``name`` with ``key`` lives."""
    return envs_dir / f"{name}-{key}"


def read_requirements(definition: EnvDefinition) -> bytes:
    """The requirements file's bytes (``OSError`` saying which file could not be read)."""
    try:
        return definition.requirements.read_bytes()
    except OSError as error:
        raise OSError(
            f"cannot read its requirements file {definition.requirements}:"
            f" {error.strerror or error}"
        ) from None


def builds(envs_dir: Path, name: str) -> Iterator[Path]:
    """The build directories of environment ``name`` in ``envs_dir``, whatever their key."""
    pattern = re.compile(rf"^{re.escape(name)}-[0-9a-f]{{16}}$")
    try:
        entries = list(envs_dir.iterdir())
    except OSError:
        return
    for path in entries:
        if pattern.match(path.name) and path.is_dir() and not path.is_symlink():
            yield path


@dataclass(frozen=True)
class BuildTarget:
    """Which build of an environment its requirements and interpreter call for, and where."""

    requirements: bytes
    """The requirements file as read (what gets installed, and hashed into the key)."""
    python: Interpreter
    key: str
    root: Path


def build_for(definition: EnvDefinition, envs_dir: Path, python: str) -> BuildTarget:
    """The build ``definition`` calls for now (``OSError``: its file or interpreter is unusable)."""
    requirements = read_requirements(definition)
    base = interpreter(python)
    key = env_key(requirements, base)
    return BuildTarget(requirements, base, key, env_dir(envs_dir, definition.name, key))
