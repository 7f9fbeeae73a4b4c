"""The jail's entry: a launcher for one run (:func:`~sandbox.jail.run.run_one`), or a zygote.

A launcher per run: ``python -I -S /proc/self/fd/N/sandbox/jail/launch.py
CONFIG_FD REPORT_FD`` (that script only calls :func:`main` here; N is an fd
the service passes, open on the dir holding the package: no process of the
jail names where PAGI's code lives on the host) is started by the service
when the slot's zygote is down or cannot serve the run, with the config
pipe and the report socket on those fds (stdin, stdout and stderr are the
run's pipes). A zygote: ``launch.py --zygote`` starts a slot's pre-forked
zygote (:mod:`sandbox.jail.zygote`), whose children call
:func:`~sandbox.jail.run.run_one` with the same fds.

``-I`` ignores PYTHONPATH and the script's dir, so the package's root (as
that fd) is put on sys.path by the script, then removed again before any
tool code runs; the fd itself is closed with every other before it. Only
the stdlib is imported: no pydantic, no json.
"""

from __future__ import annotations

import os
import sys

from sandbox.jail.protocol import CONFIG_FD, REPORT_FD, RunMode
from sandbox.jail.run import run_one
from sandbox.jail.warm_prepare import set_repo_prefixes

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
"""The dir holding the `sandbox` package, as launch.py put it on sys.path (through an fd)."""


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
    # A launcher's run is cold whatever the tool's executor: this interpreter
    # has run the jail's code, and only a zygote's child is prepared to stand
    # in for a fresh one (the run's result says "cold").
    if len(sys.argv) == 3:
        run_one(int(sys.argv[1]), int(sys.argv[2]), mode=RunMode.COLD)
    run_one(CONFIG_FD, REPORT_FD, mode=RunMode.COLD)
