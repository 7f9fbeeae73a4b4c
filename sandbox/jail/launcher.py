"""The single-threaded entry of one run: read the config, :func:`contain`, wait for the
request's payload (:func:`receive`), then run the tool warm or cold (:class:`RunMode`).

A launcher per run: ``python -I -S /proc/self/fd/N/sandbox/jail/launch.py
CONFIG_FD REPORT_FD`` (that script only calls :func:`main` here; N is an fd
the service passes, open on the dir holding the package: no process of the
jail names where PAGI's code lives on the host) is started by the service
when the slot's zygote is down or cannot serve the run, with the config
pipe and the report socket on those fds (stdin, stdout and stderr are the
run's pipes). A zygote: ``launch.py --zygote`` starts a slot's pre-forked
zygote (:mod:`sandbox.jail.zygote`), whose children call :func:`run_one`
with the same fds.

``-I`` ignores PYTHONPATH and the script's dir, so the package's root (as
that fd) is put on sys.path by the script, then removed again before any
tool code runs; the fd itself is closed with every other before it. Only
the stdlib is imported: no pydantic, no json.
"""

from __future__ import annotations

import os
import sys

from sandbox.jail import NOTHING_PREPARED, JailConfig, Prepared, contain, receive
from sandbox.jail.config import WORKDIR_IN_JAIL
from sandbox.jail.env import tool_environment
from sandbox.jail.inprocess import prepare as prepare_python
from sandbox.jail.inprocess import run as run_python
from sandbox.jail.inprocess import set_repo_prefixes
from sandbox.jail.protocol import CONFIG_FD, LAYER_FAILED, REPORT_FD, WENT_COLD, RunMode, read_frame

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
"""The dir holding the `sandbox` package, as launch.py put it on sys.path (through an fd)."""


def run_one(
    config_fd: int,
    report_fd: int,
    prepared: Prepared = NOTHING_PREPARED,
    mode: bytes = RunMode.WARM,
) -> None:
    """Jail this process for one run and become the tool (never returns).

    Reads the jail's config frame, builds the whole jail, and only then
    waits (as the jailed tool) for the request's payload frame on the same
    fd. `mode` (:class:`RunMode`): warm, a Python tool's code runs in this
    interpreter; cold, like any other tool, its command is exec'd inside
    the jail.
    """
    try:
        config = JailConfig.from_bytes(read_frame(config_fd))
    except (ValueError, KeyError, TypeError, EOFError) as error:
        os.write(report_fd, f"{LAYER_FAILED} config {error}\n".encode())
        os._exit(126)
    channel = contain(config, report=report_fd, source=config_fd, prepared=prepared)
    # Jailed, and no request yet: get everything ready that does not depend on one.
    environment = tool_environment(config.env, WORKDIR_IN_JAIL)
    warm = mode == RunMode.WARM
    if warm and not prepare_python(environment):
        # This interpreter cannot stand in for a fresh one here (the tool's
        # locale): go cold, exec one, and say so.
        warm = False
        os.write(report_fd, f"{WENT_COLD}\n".encode())
    payload = receive(config, channel)
    # The jail's config names host paths (the slot's root, its cgroup): a
    # tool run in this interpreter could reach it from its caller's frame.
    del config, channel
    if payload.python is not None and warm:
        run_python(payload.python, payload.argv)
    try:
        os.execvpe(payload.argv[0], payload.argv, environment)
    except OSError as error:
        os.write(2, f"cannot execute {payload.argv[0]}: {error.strerror}\n".encode())
    os._exit(127)


def main() -> None:
    """A launcher per run: ``CONFIG_FD REPORT_FD``; or a zygote:
    ``--zygote SOCKET CGROUPS ROOT READ HIDDEN MODULE...``.

    CGROUPS: comma-separated fds open on cgroup.procs files, or ``-``. ROOT:
    where to build the slot's shared root, relative to the working dir
    (``-``: none); READ and HIDDEN: its
    colon-separated read-only and hidden paths. MODULE: to preload.
    """
    set_repo_prefixes((_PACKAGE_ROOT,))
    if len(sys.argv) > 6 and sys.argv[1] == "--zygote":
        from sandbox.jail.zygote import serve

        serve(sys.argv[2:])
        return
    if len(sys.argv) == 3:
        run_one(int(sys.argv[1]), int(sys.argv[2]))
    run_one(CONFIG_FD, REPORT_FD)
