"""Handing a waiting jail its run, and gathering what the run produced, on the service's clock.

The service supervises each run from outside the run's reach: its own wall
clock (:data:`WALL_GRACE_SECONDS` after the limit), the run's CPU time from
the slot's cgroup (:func:`~sandbox.host.supervision.watch_cpu`), the memory
verdict from the group's OOM kills, and what the jail's init reports; a run
whose init died is reported as such, with what the tool wrote.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from pagi.logging import log_event
from sandbox.host.cgroup_service import RunCgroup
from sandbox.host.pipes import output_of, read_capped, send
from sandbox.host.results import RunOutput, output_files, run_result
from sandbox.host.slots import RunPipes
from sandbox.host.supervision import RunStop, reap, watch_cpu
from sandbox.host.unavailable import RunnerUnavailable
from sandbox.jail.config import RunPayload
from sandbox.jail.protocol import frame
from sandbox.spec import RunResult, RunSpec

logger = logging.getLogger(__name__)

WALL_GRACE_SECONDS = 0.5
"""The service's own clock: a run without a status this long after its wall limit
(counted from the payload's hand-over) is killed from outside and times out."""
BACKSTOP_SECONDS = 3.0
"""How long a killed run's pipes, or an ended run's init, may take to close."""


def run_payload(spec: RunSpec, python: dict[str, object] | None) -> RunPayload:
    """The request `spec`'s waiting jail is handed (`python`: how its interpreter is called).

    Every file name must stay inside the working dir: relative, no ``.``
    or ``..`` part, no NUL, at most 255 characters.
    """
    for name in spec.files:
        parts = name.split("/")
        if not name or name.startswith("/") or any(part in ("", ".", "..") for part in parts):
            raise RunnerUnavailable(f"invalid file name for the workdir: {name!r}")
        if "\0" in name or len(name) > 255:
            raise RunnerUnavailable(f"invalid file name for the workdir: {name!r}")
    return RunPayload(argv=list(spec.argv), files=dict(spec.files), python=python)


async def collect(
    spec: RunSpec,
    jail: RunPipes,
    payload: RunPayload,
    cgroup: RunCgroup | None,
    started: float,
    cpus: int,
) -> RunResult:
    """Hand `payload` (and stdin) to the waiting jail; gather what the run produced.

    `started`: when the request came (``time.perf_counter``); `cpus`: how
    many CPUs the run's processes may use at once.
    """
    loop = asyncio.get_running_loop()
    stop = RunStop(jail)
    handed_in = ((jail.config_w, frame(payload.to_bytes())), (jail.stdin_w, spec.stdin))
    writers = [send(loop, fd, data) for fd, data in handed_in]
    cap = spec.limits.output_bytes
    stdout = loop.create_task(read_capped(loop, jail.stdout_r, cap, lambda: stop("output")))
    stderr = loop.create_task(read_capped(loop, jail.stderr_r, cap, lambda: stop("output")))
    watcher = None
    if cgroup is not None and cgroup.accounts_cpu:
        watcher = loop.create_task(watch_cpu(cgroup, spec.limits.cpu_seconds, cpus, stop))
    await _supervise(spec, [stdout, stderr, jail.reader.finished], stop)
    running = (*writers, stdout, stderr, jail.reader.finished, watcher)
    tasks = [task for task in running if task is not None]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if jail.process is not None:
        await reap(jail.process)
    failed = jail.reader.report.failed_layer
    if failed is not None:
        layer, reason = failed
        raise RunnerUnavailable(f"isolation layer {layer} failed: {reason}", layer=layer)
    gathered = RunOutput(
        *output_of(stdout),
        *output_of(stderr),
        stopped=stop.stopped,
        stopped_for=stop.reason,
        out_of_memory=cgroup is not None and cgroup.memory_limit_hit(),
        files=await output_files(spec, jail.reader),
        duration_ms=(time.perf_counter() - started) * 1000,
    )
    result = run_result(spec, jail.reader.report, gathered, cgroup, warm=jail.warm)
    if result.supervisor_died:
        # The OOM killer aside, init dies only by a fault of its own: the
        # tool's processes went with it (the kernel ends the namespace).
        log_event(logger, "jail_supervisor_died", logging.WARNING, tool=spec.tool)
    return result


async def _supervise(spec: RunSpec, outputs: list[asyncio.Future[Any]], stop: RunStop) -> None:
    """Wait for the run's outputs and, last of `outputs`, its status, on the service's clock.

    A run whose status has not come :data:`WALL_GRACE_SECONDS` after its
    wall limit is killed from here and reported as timed out, whatever
    became of the jail's init.
    """
    status = outputs[-1]
    await asyncio.wait(outputs, timeout=spec.limits.wall_seconds + WALL_GRACE_SECONDS)
    if not status.done():
        stop("wall_time")
    if not all(task.done() for task in outputs):
        stop(None)  # the status came, but something still holds the run's pipes
        await asyncio.wait(outputs, timeout=BACKSTOP_SECONDS)
