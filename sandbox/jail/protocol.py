"""What the service and the jail say to each other, defined once for both sides.

Stdlib only, and only ``os`` (loaded already) to import: a launcher the
service starts loads this module on every run. The report lines themselves are described in
:mod:`sandbox.jail` (their order, and who writes which).
"""

import os

# Descriptors a jailed run's process finds open (stdin, stdout, stderr are 0, 1, 2).
CONFIG_FD = 3
"""The config pipe: the JailConfig frame, then the request's RunPayload frame."""
REPORT_FD = 4
"""The report socket: text lines (below) and the descriptors sent with some of them."""
FDS_PER_RUN = 5
"""What the service passes a zygote for one run: stdin, stdout, stderr, config, report."""


class RunMode:
    """How a jailed run starts its tool, once jailed: warm or cold (the one name of the choice).

    Warm: a Python tool's code runs in the jail's own interpreter, which
    stands in for a fresh one (:mod:`sandbox.jail.warm_run`); in a slot's
    zygote, that interpreter has the policy's modules preloaded. Cold: the
    tool's command is exec'd inside the jail (for a Python tool, a fresh
    interpreter). Either way the jail is the same (:func:`sandbox.jail.contain`).
    The values are the zygote's requests: one SEQPACKET message each, sent
    with the run's descriptors.
    """

    WARM = b"r"
    COLD = b"x"


# Report words: the first word of each line on the report socket.
JAIL = "jail"
"""From the process to kill to end the run (the service reads its pid from the credentials)."""
LAYER_FAILED = "layer_failed"
"""``layer_failed LAYER REASON``: the run stops before the tool runs."""
WORKDIR = "workdir"
"""Sent with a descriptor of the run's working dir (SCM_RIGHTS)."""
EGRESS_LISTENER = "egress_listener"
"""Sent with the egress proxy's listener, made in the run's network namespace."""
WENT_COLD = "cold"
"""A warm run goes cold after all: the tool's command is exec'd (see :class:`RunMode`)."""
WALL_TIMEOUT = "wall_timeout"
REFUSALS = "refusals"
"""``refusals N [NR:COUNT ...]``: refused syscalls in all, then per syscall number."""
REFUSED = "refused"
"""``refused NR[,ARG...]:COUNT ...``: the refused calls with their decisive arguments."""
EXIT = "exit"
"""``exit N``: the tool's exit status (last line)."""
SIGNAL = "signal"
"""``signal N``: the signal that ended the tool (last line)."""

WORKDIR_MESSAGE = f"{WORKDIR}\n".encode()
LISTENER_MESSAGE = f"{EGRESS_LISTENER}\n".encode()

# Framing on the config fd: each frame is its data behind a 4-byte length.
_LENGTH_BYTES = 4


def frame(data: bytes) -> bytes:
    """`data` behind its length, as :func:`read_frame` expects it."""
    return len(data).to_bytes(_LENGTH_BYTES, "little") + data


def read_frame(fd: int) -> bytes:
    """One frame from the blocking `fd`; EOFError if it ends first."""
    length = int.from_bytes(_read_exactly(fd, _LENGTH_BYTES), "little")
    return _read_exactly(fd, length)


def _read_exactly(fd: int, size: int) -> bytes:
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            raise EOFError("the config fd closed mid-frame")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
