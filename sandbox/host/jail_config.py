"""A run's jail config: what its :class:`~sandbox.jail.config.JailConfig` holds for a RunSpec."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from sandbox.egress.netns_listener import proxy_environment
from sandbox.host.bpf import compile_filter
from sandbox.host.lock_pins import LockPins
from sandbox.jail.config import JailConfig, JailLimits
from sandbox.jail.mountns import COPIED_FILE_BYTES, beneath, outermost
from sandbox.jail.netns import PROXY_PORT
from sandbox.spec import RunSpec

EGRESS_READ_PATHS: tuple[str, ...] = ("/etc/ssl/certs",)
"""Also visible to a tool with a network table: the system's public CA certificates, so
that TLS clients (urllib, curl) verify the hosts they reach (never /etc/ssl/private)."""


def jail_config(
    spec: RunSpec,
    *,
    root_dir: Path,
    base_read_paths: list[str],
    hidden_paths: list[str],
    uid: int,
    gid: int,
    pins: LockPins,
    notify: bool,
    landlock_abi: int,
    layers: list[str],
) -> JailConfig:
    """The config a jail for `spec` is built from (its run's request comes later).

    `base_read_paths` are visible through the slot's shared root already;
    the spec's own readable paths are added beside them, and those too
    large to copy per run are pinned (`pins`): the host's own inodes.
    """
    limits = spec.limits
    base = base_read_paths
    egress = spec.egress is not None and not spec.network
    readable = [*spec.readable_paths, *(_existing(EGRESS_READ_PATHS) if egress else [])]
    extra_read_paths = [
        path
        for path in outermost([os.path.realpath(p) for p in readable])
        if not beneath(path, base)  # already visible through the shared root
    ]
    # A file too large to copy per run is the host's own inode in the jail.
    pins.pin_paths(
        [path for path in extra_read_paths if _file_larger_than(path, COPIED_FILE_BYTES)]
    )
    return JailConfig(
        env={**spec.env, **proxy_environment(PROXY_PORT)} if egress else dict(spec.env),
        uid=uid,
        gid=gid,
        root_dir=root_dir.name,  # in runs_root, every jail's working dir at its start
        read_paths=[*base, *extra_read_paths],
        extra_read_paths=extra_read_paths,
        hidden_paths=hidden_paths,
        limits=JailLimits(
            wall_seconds=limits.wall_seconds,
            cpu_seconds=limits.cpu_seconds,
            memory_bytes=limits.memory_bytes,
            file_size_bytes=limits.file_size_bytes,
            open_files=limits.open_files,
            processes=limits.processes,
            stack_bytes=limits.stack_bytes,
            # Each of /tmp and /workdir; their pages count as the run's memory.
            tmp_bytes=min(limits.memory_bytes // 4, 64 * 1024 * 1024),
        ),
        network=spec.network,
        egress_port=PROXY_PORT if egress else 0,
        seccomp_bpf=compile_filter(
            spec.network,
            frozenset(spec.denied_syscalls),
            notify,
            egress,
            spec.allow_exec_written,
        ),
        seccomp_notify=notify,
        landlock_abi=landlock_abi,
        exec_written=spec.allow_exec_written,
        hostname="sandbox",
        layers=layers,
    )


def _existing(paths: Iterable[str]) -> list[str]:
    return [path for path in paths if os.path.exists(path)]


def _file_larger_than(path: str, size: int) -> bool:
    try:
        return os.path.isfile(path) and os.path.getsize(path) > size
    except OSError:
        return False
