"""The resource limits a policy sets, and the bounds no policy can move.

:data:`HARD_CEILINGS`, :data:`LIMIT_FLOORS` and :data:`LIMIT_DEFAULTS` come
from :data:`sandbox.spec.LIMIT_RANGES`, where each run limit's three are set.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from sandbox.policy.fields import PolicyModel, bounded_size
from sandbox.spec import KIB, LIMIT_RANGES, MIB, RunLimits

HARD_CEILINGS = RunLimits(**{name: limit.ceiling for name, limit in LIMIT_RANGES.items()})
"""No policy may set a limit above these."""

LIMIT_FLOORS = RunLimits(**{name: limit.floor for name, limit in LIMIT_RANGES.items()})
"""No policy may set a limit below these (a run could not even start)."""

LIMIT_DEFAULTS = RunLimits()
"""The limits of a tool when the policy sets none."""

MAX_CODE_BYTES_CEILING = 1 * MIB
MAX_ARGV_CODE_BYTES = 128 * KIB - 1
"""Linux refuses a single argv string of 128 KiB or more (MAX_ARG_STRLEN)."""
MAX_CONCURRENT_RUNS_CEILING = 8
"""The runner keeps this many run slots (each with its own cgroup and warm process)."""
QUEUE_LENGTH_CEILING = 1024
QUEUE_WAIT_SECONDS_CEILING = 60.0
MAX_POLICY_FILE_BYTES = 1 * MIB

INPUT_FILES_CEILING = 256
INPUT_BYTES_CEILING = 32 * MIB
"""Decoded bytes of a request's input files, all together."""
INPUT_DEPTH_CEILING = 16
"""Path components of an input file (``a/b/c.csv`` has three)."""
OUTPUT_FILES_CEILING = 256
OUTPUT_BYTES_CEILING = 32 * MIB
"""Bytes of output files returned with one result, all together."""
PACKAGE_ENVS_CEILING = 16
PRELOAD_MODULES_CEILING = 64

WallSeconds = Annotated[float, Field(ge=LIMIT_FLOORS.wall_seconds, le=HARD_CEILINGS.wall_seconds)]
CpuSeconds = Annotated[int, Field(ge=LIMIT_FLOORS.cpu_seconds, le=HARD_CEILINGS.cpu_seconds)]
MemoryBytes = bounded_size(LIMIT_FLOORS.memory_bytes, HARD_CEILINGS.memory_bytes)
FileSizeBytes = bounded_size(LIMIT_FLOORS.file_size_bytes, HARD_CEILINGS.file_size_bytes)
OpenFiles = Annotated[int, Field(ge=LIMIT_FLOORS.open_files, le=HARD_CEILINGS.open_files)]
Processes = Annotated[int, Field(ge=LIMIT_FLOORS.processes, le=HARD_CEILINGS.processes)]
OutputBytes = bounded_size(LIMIT_FLOORS.output_bytes, HARD_CEILINGS.output_bytes)
StackBytes = bounded_size(LIMIT_FLOORS.stack_bytes, HARD_CEILINGS.stack_bytes)
CodeBytes = bounded_size(0, MAX_CODE_BYTES_CEILING)


class DefaultLimits(PolicyModel):
    """``[defaults]``: the limits of every tool that does not override them."""

    wall_seconds: WallSeconds = LIMIT_DEFAULTS.wall_seconds
    cpu_seconds: CpuSeconds = LIMIT_DEFAULTS.cpu_seconds
    memory_bytes: MemoryBytes = LIMIT_DEFAULTS.memory_bytes
    file_size_bytes: FileSizeBytes = LIMIT_DEFAULTS.file_size_bytes
    open_files: OpenFiles = LIMIT_DEFAULTS.open_files
    processes: Processes = LIMIT_DEFAULTS.processes
    output_bytes: OutputBytes = LIMIT_DEFAULTS.output_bytes
    stack_bytes: StackBytes = LIMIT_DEFAULTS.stack_bytes


class ToolLimits(PolicyModel):
    """``[tools.NAME.limits]``: per-tool overrides of ``[defaults]``."""

    wall_seconds: WallSeconds | None = None
    cpu_seconds: CpuSeconds | None = None
    memory_bytes: MemoryBytes | None = None
    file_size_bytes: FileSizeBytes | None = None
    open_files: OpenFiles | None = None
    processes: Processes | None = None
    output_bytes: OutputBytes | None = None
    stack_bytes: StackBytes | None = None


class FileLimits(PolicyModel):
    """``[tools.NAME.files]``: the files a run takes in and hands back (``out/``)."""

    input_files: Annotated[int, Field(ge=0, le=INPUT_FILES_CEILING)] = 16
    """Input files one request may carry; 0: the tool takes none."""
    input_bytes: bounded_size(0, INPUT_BYTES_CEILING) = 1 * MIB
    """Their decoded size, all together. The largest of any tool sets how much of a
    request body the service reads before the request waits for a run slot."""
    input_depth: Annotated[int, Field(ge=1, le=INPUT_DEPTH_CEILING)] = 4
    """Path components of one input file (``data/2024/a.csv`` has three)."""
    output_files: Annotated[int, Field(ge=0, le=OUTPUT_FILES_CEILING)] = 16
    """Files under ``out/`` returned with their content; more are listed, truncated."""
    output_bytes: bounded_size(0, OUTPUT_BYTES_CEILING) = 1 * MIB
    """Their size, all together; a file that does not fit is listed, truncated."""
