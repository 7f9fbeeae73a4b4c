"""One run in a process of its own: read the config, :func:`contain`, wait for the
request's payload (:func:`receive`), then run the tool warm or cold (:class:`RunMode`).

What a launcher the service starts (:mod:`sandbox.jail.launcher`) and each
child of a slot's zygote (:mod:`sandbox.jail.zygote`) do, in the same
order: the only difference between them is what the zygote prepared.
"""

from __future__ import annotations

import os

from sandbox.jail import NOTHING_PREPARED, JailConfig, Prepared, contain, receive
from sandbox.jail.config import WORKDIR_IN_JAIL
from sandbox.jail.env import tool_environment
from sandbox.jail.protocol import LAYER_FAILED, WENT_COLD, RunMode, read_frame
from sandbox.jail.warm_prepare import prepare as prepare_python
from sandbox.jail.warm_run import run as run_python


def run_one(
    config_fd: int,
    report_fd: int,
    prepared: Prepared = NOTHING_PREPARED,
    *,
    mode: bytes,
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
