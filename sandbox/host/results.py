"""What a finished run gives its caller: limits hit, denials explained, files, network use.

Everything here reads what the jail reported (:class:`~sandbox.host.report.Report`),
what the service measured and the proxy's decisions; never the tool's own output.
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass

from sandbox.denials import (
    bounded,
    foreign_syscall_kill,
    limit_denial,
    seccomp_denials,
    stderr_lines,
)
from sandbox.egress.report import EgressReport
from sandbox.files_out import OUTPUT_DIR, OutputCollection, collect_output_files
from sandbox.host.bpf import syscall_name
from sandbox.host.cgroup_service import RunCgroup
from sandbox.host.report import Report, ReportReader
from sandbox.jail.seccomp import FOREIGN
from sandbox.spec import Denial, LimitName, NetworkDenial, NetworkUsage, RunResult, RunSpec

OTHER_SYSCALLS = "(other syscalls)"
"""Refusals of syscalls beyond the first 64 distinct ones of a run."""
FOREIGN_ABI = "(foreign ABI: process killed)"
"""A syscall of another architecture (i386, x32): the filter kills the process."""


@dataclass(frozen=True)
class RunOutput:
    """What the service itself gathered of a finished run, besides the jail's report."""

    stdout: bytes
    stdout_truncated: bool
    stderr: bytes
    stderr_truncated: bool
    stopped: bool
    """The service ended the run itself (a limit, or pipes held past the tool's status)."""
    stopped_for: LimitName | None
    """The limit it stopped the run for (None: none, or not stopped)."""
    out_of_memory: bool
    files: OutputCollection | None
    duration_ms: float


def run_result(
    spec: RunSpec, report: Report, output: RunOutput, cgroup: RunCgroup | None, *, warm: bool
) -> RunResult:
    """The finished run as its caller sees it: status, output, the limit hit, denials explained."""
    ended_normally = report.exit_code is not None or report.signal is not None
    refusals, counts = seccomp_counts(report)
    limit_hit = limit_hit_of(
        report,
        output.stopped_for,
        output.stdout_truncated or output.stderr_truncated,
        output.out_of_memory,
        cgroup,
    )
    explained = denials_of(report, spec, limit_hit)
    stderr, stderr_truncated = output.stderr, output.stderr_truncated
    if explained and spec.explain_denials:
        stderr, cut = with_stderr_lines(stderr, stderr_lines(explained), spec.limits.output_bytes)
        stderr_truncated = stderr_truncated or cut
    return RunResult(
        stdout=output.stdout.decode("utf-8", "replace"),
        stderr=stderr.decode("utf-8", "replace"),
        exit_code=report.exit_code if report.signal is None else None,
        signal=report.signal
        if report.signal is not None
        else (signal.SIGKILL if report.exit_code is None else None),
        duration_ms=output.duration_ms,
        stdout_truncated=output.stdout_truncated,
        stderr_truncated=stderr_truncated,
        limit_hit=limit_hit,
        seccomp_refusals=refusals,
        seccomp_denials=counts,
        denials=explained,
        supervisor_died=not ended_normally and not output.stopped and not output.out_of_memory,
        path="warm" if warm and not report.ran_cold else "cold",
        files=output.files,
    )


def seccomp_counts(report: Report) -> tuple[int, dict[str, int]]:
    """The run's seccomp refusals, and their count per syscall name (for the result)."""
    refusals = report.refusals + (1 if report.signal == signal.SIGSYS else 0)
    denials = {
        (syscall_name(number) if number >= 0 else OTHER_SYSCALLS): count
        for number, count in report.refused.items()
    }
    if report.signal == signal.SIGSYS:
        denials[FOREIGN_ABI] = 1
    return refusals, denials


def denials_of(report: Report, spec: RunSpec, limit_hit: LimitName | None) -> list[Denial]:
    """What the jail refused, as the supervisor reported it (never from the tool's output)."""
    killed = report.signal == signal.SIGSYS
    if not report.calls and not report.refusals and not killed and limit_hit is None:
        return []
    found = seccomp_denials(report.calls, report.refusals, spec)
    if killed and not any(call[0] == FOREIGN for call in report.calls):
        found.append(foreign_syscall_kill())  # killed by the filter itself: unnamed
    if limit_hit is not None:
        found.append(limit_denial(limit_hit, spec.limits, spec.tool))
    return bounded(found)


def limit_hit_of(
    report: Report,
    stopped_for: LimitName | None,
    truncated: bool,
    out_of_memory: bool,
    cgroup: RunCgroup | None,
) -> LimitName | None:
    """Which limit ended the run, if any: the service's own verdicts before the jail's signals."""
    if truncated:
        return "output"
    if report.wall_timeout or stopped_for == "wall_time":
        return "wall_time"
    if stopped_for is not None:
        return stopped_for
    if report.signal == signal.SIGXCPU:
        return "cpu_time"
    if out_of_memory:
        return "memory"
    if cgroup is not None and cgroup.pids_limit_hit():
        return "processes"
    if report.signal == signal.SIGXFSZ:
        return "file_size"
    return None


def with_stderr_lines(stderr: bytes, lines: str, cap: int) -> tuple[bytes, bool]:
    """The tool's stderr with the sandbox's lines after it, within the cap; whether it was cut.

    The lines go last and whole: the tool's own output gives way to them.
    """
    added = lines.encode()[:cap]
    room = cap - len(added)
    if len(stderr) <= room:
        return stderr + added, False
    return stderr[:room] + added, True


def with_network(result: RunResult, report: EgressReport, tool: str) -> RunResult:
    """`result` with the run's traffic through the proxy and the proxy's decisions.

    The proxy's refusals join the run's ``denials`` (layer ``network``), with
    the policy table that governs them; the tool itself was told by the
    proxy's 403, so no stderr line is added for them.
    """
    counts = report.summary()
    refused = [NetworkDenial(**denial) for denial in report.denials]
    usage = NetworkUsage(**counts, denials=refused)
    audit = [decision.audit_record() for decision in report.decisions]
    explained = bounded(
        [
            *result.denials,
            *(
                Denial(
                    layer="network",
                    what=f"{denial.method} {denial.what}" if denial.method else denial.what,
                    count=1,
                    hint=f"{denial.reason}: {denial.detail}"
                    + (f", rule {denial.rule!r}" if denial.rule else "")
                    + f" (tools.{tool}.network)",
                )
                for denial in refused
            ),
        ]
    )
    return result.model_copy(update={"network": usage, "egress_audit": audit, "denials": explained})


async def output_files(spec: RunSpec, reader: ReportReader) -> OutputCollection | None:
    """What the tool left under ``out/``, read through the descriptor init sent (see
    :func:`sandbox.jail.contain`): the run's own tmpfs, never a path, never a link."""
    workdir = reader.take_workdir()
    if workdir is None:
        return None
    if spec.outputs is None:
        os.close(workdir)
        return None
    try:
        os.stat(OUTPUT_DIR, dir_fd=workdir, follow_symlinks=False)
    except FileNotFoundError:
        os.close(workdir)
        return None  # the usual case: no out/ at all, and no thread to start
    except OSError:
        pass  # the collector says what it is
    caps = spec.outputs
    collection = await asyncio.to_thread(_collect_closing, workdir, caps.files, caps.bytes)
    if collection is None or not (collection.files or collection.unlisted):
        return None
    return collection


def _collect_closing(workdir: int, max_files: int, max_bytes: int) -> OutputCollection | None:
    """Collect, then close `workdir`: this thread owns it, even when its caller is cancelled."""
    try:
        return collect_output_files(workdir, max_files, max_bytes)
    except OSError:
        return None
    finally:
        os.close(workdir)
