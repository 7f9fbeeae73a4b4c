"""Resource limits (rlimits) of the tool process and its children."""

from __future__ import annotations

import resource

from sandbox.jail import control_file

TYPE_CHECKING = False  # typing costs each launcher started per run an import
if TYPE_CHECKING:
    from sandbox.jail.config import JailLimits


def apply(limits: JailLimits, file_size: bool = True) -> None:
    """CPU seconds, address space, file size, open files, processes, stack; no core files.

    CPU: the soft limit sends SIGXCPU, the hard limit one second later SIGKILL.
    Without `file_size`, the file size limit is left to :func:`apply_file_size`.
    """
    cpu = limits.cpu_seconds
    settings = (
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_AS, limits.memory_bytes, limits.memory_bytes),
        (resource.RLIMIT_NOFILE, limits.open_files, limits.open_files),
        (resource.RLIMIT_NPROC, limits.processes, limits.processes),
        (resource.RLIMIT_STACK, limits.stack_bytes, limits.stack_bytes),
        (resource.RLIMIT_MEMLOCK, 0, 0),
        (resource.RLIMIT_MSGQUEUE, 0, 0),
    )
    for which, soft, hard in settings:
        resource.setrlimit(which, (soft, hard))
    if file_size:
        apply_file_size(limits)
    # When the run's cgroup runs out of memory, the tool goes first, not the
    # jail's init or the launcher above it (anyone may raise their own score).
    control_file.write("/proc/self/oom_score_adj", "1000")


def apply_file_size(limits: JailLimits) -> None:
    """The largest file the tool may write (soft and hard)."""
    size = limits.file_size_bytes
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
