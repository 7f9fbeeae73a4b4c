"""What the jail's unit tests share: the interpreter they jail and a spec for its code."""

from __future__ import annotations

import os
import sys

from sandbox.spec import RunSpec

PYTHON = os.path.realpath(os.path.join(sys.base_prefix, "bin", "python3.11"))
PATHS = ("cold", "warm")


def python(code: str, path: str, **fields: object) -> RunSpec:
    """A run of `code` with the base interpreter, on the cold or warm path."""
    return RunSpec(
        tool="python", argv=(PYTHON, "-I", "-S", "-c", code), warm=path == "warm", **fields
    )
