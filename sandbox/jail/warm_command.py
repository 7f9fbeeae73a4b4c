"""Which Python commands can run warm: in the jail's own interpreter, as a fresh one would.

Read by the service (:mod:`sandbox.host.runner`) when it builds a run's
payload; the jail never imports this. The warm interpreter is started
``-I -S`` (a package environment's: ``-I`` with ``site``), so only a command
that asks for exactly that can run in it (:func:`parse_python_argv`);
otherwise the tool's command is exec'd (cold, see
:class:`~sandbox.jail.protocol.RunMode`).
"""

from __future__ import annotations

import os

_ZYGOTE_FLAGS = frozenset("IS")
"""The warm interpreter's own options (``-I -S``): a command must ask for both."""
_NEUTRAL_FLAGS = frozenset("sEPq")
"""Options that change nothing once -I is given (-s, -E, -P) or outside a terminal (-q)."""


def parse_python_argv(
    argv: list[str], interpreter: str, site: bool = False
) -> dict[str, object] | None:
    """If `argv` runs `interpreter` on code in a way we can reproduce, describe it.

    Returns ``{"code": str | None, "path": str | None, "argv": [...]}`` (code
    read from stdin when both are None), or None (exec the command instead):
    only a command started exactly as the warm interpreter was (``-I -S``,
    nothing that sets another of ``sys.flags``) can run in it. With `site`
    the warm interpreter is a package environment's, started with ``-I``
    and the ``site`` module: `argv[0]` must name it as given (a virtual
    environment is known by the name its interpreter is started by), and
    ``-S`` is not reproducible.
    """
    if not argv:
        return None
    if site:
        if argv[0] != interpreter:
            return None
    elif argv[0] != interpreter and os.path.realpath(argv[0]) != os.path.realpath(interpreter):
        return None
    flags: set[str] = set()
    index = 1
    described: dict[str, object] | None = None
    while index < len(argv) and argv[index].startswith("-") and argv[index] != "-":
        option = argv[index]
        if option == "-c":
            if index + 1 >= len(argv):
                return None
            described = {"code": argv[index + 1], "path": None, "argv": ["-c", *argv[index + 2 :]]}
            break
        if option.startswith("--") or not set(option[1:]) <= _ZYGOTE_FLAGS | _NEUTRAL_FLAGS:
            return None  # -m, -X, -W, -u, -B, ...: let the real interpreter handle them
        flags.update(option[1:])
        index += 1
    if described is None:
        if index >= len(argv) or argv[index] == "-":
            rest = ["-", *argv[index + 1 :]] if index < len(argv) else [""]
            described = {"code": None, "path": None, "argv": rest}
        else:
            described = {"code": None, "path": argv[index], "argv": argv[index:]}
    if site:
        return described if "I" in flags and "S" not in flags else None
    return described if _ZYGOTE_FLAGS <= flags else None
