"""The service's handle on a warm zygote: the pre-forked process and the socket feeding it fds.

The zygote itself (what runs in the slot's cgroup) is :mod:`sandbox.jail.zygote`.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

from sandbox.host.bytecode import launcher_path
from sandbox.jail.env import DEFAULT_ENV
from sandbox.jail.protocol import RunMode

PACKAGE_ENV_ZYGOTE_ENV = {
    # A zygote must stay single-threaded to fork: no BLAS or OpenMP thread pool.
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "MPLBACKEND": "Agg",
}
"""What a package environment's zygote imports its preload modules under (then emptied),
with ``MPLCONFIGDIR``: a directory of the runner's own (made by
:func:`~sandbox.host.host_facts.find_host`)."""


class Zygote:
    """The warm path's pre-forked process, and the socket that feeds it fds."""

    def __init__(
        self,
        python: str,
        modules: Sequence[str],
        cgroup_files: list[str],
        template: tuple[str, list[str], list[str]],
        runs_root: Path,
        package_fd: int,
        package_env: str | None = None,
        cache_dir: str = "",
    ) -> None:
        self.package_fd = package_fd
        self.package_env = package_env
        self.cache_dir = cache_dir
        """Where an environment's preloaded modules keep caches (matplotlib's font list)."""
        """A package environment's directory: `python` is its interpreter, run with ``site``."""
        self.python = python
        self.modules = list(modules)
        self.cgroup_files = cgroup_files
        self.template = template  # root dir (in runs_root), read-only paths, hidden paths
        self.runs_root = runs_root
        self.process: subprocess.Popen[bytes] | None = None
        self.channel: socket.socket | None = None
        self.runs = 0

    def start(self) -> None:
        root, read_paths, hidden_paths = self.template
        if any(":" in path for path in (*read_paths, *hidden_paths)):
            root = "-"  # no shared root: each run builds its own
        # SEQPACKET: one request per message, never merged or split.
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # The zygote joins the slot's cgroup through these: no cgroup path
        # enters its memory, which every warm run inherits.
        cgroup_fds = [os.open(path, os.O_WRONLY | os.O_CLOEXEC) for path in self.cgroup_files]
        try:
            self.process = subprocess.Popen(
                [
                    self.python,
                    "-I",
                    # An environment's packages are found through site (its tools' commands
                    # run without -S): its zygote imports it too.
                    *(() if self.package_env is not None else ("-S",)),
                    launcher_path(self.package_fd),
                    "--zygote",
                    str(child_end.fileno()),
                    ",".join(str(fd) for fd in cgroup_fds) or "-",
                    root,
                    ":".join(read_paths),
                    ":".join(hidden_paths),
                    *self.modules,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(child_end.fileno(), *cgroup_fds, self.package_fd),
                # Symbols resolved once here, not lazily again in every child (each
                # resolution writes a page the child then copies). The locale most
                # tools run under: a warm run starts the way a fresh interpreter
                # would only under the locale its zygote started in (see
                # warm_prepare.prepare). The tool's own environment replaces this one.
                env={
                    "LD_BIND_NOW": "1",
                    "LANG": DEFAULT_ENV["LANG"],
                    **(
                        {**PACKAGE_ENV_ZYGOTE_ENV, "MPLCONFIGDIR": f"{self.cache_dir}/matplotlib"}
                        if self.package_env is not None
                        else {}
                    ),
                },
                # Run roots are named relative to it: the state dir's path stays out
                # of the zygote's memory.
                cwd=self.runs_root,
                start_new_session=True,  # no process group shared with the service
            )
        finally:
            child_end.close()
            for fd in cgroup_fds:
                os.close(fd)
        self.channel = parent_end
        self.runs = 0

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def submit(self, fds: list[int], warm: bool) -> None:
        assert self.channel is not None
        socket.send_fds(self.channel, [RunMode.WARM if warm else RunMode.COLD], fds)
        self.runs += 1

    def stop(self) -> None:
        if self.channel is not None:
            self.channel.close()  # the zygote exits on EOF; runs in flight go on
            self.channel = None
        if self.process is not None:
            try:
                self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
