"""The launcher's entry script: ``python -I -S .../sandbox/jail/launch.py ARGS``.

A few lines only: a script is compiled from source at every start (each launcher
started per run pays it), a module is loaded from its cached bytecode. Everything is in
:mod:`sandbox.jail.launcher`.
"""

import sys

sys.path.insert(0, __file__.rsplit("/", 3)[0])  # the package root, removed before tool code

from sandbox.jail.launcher import main  # noqa: E402

main()
