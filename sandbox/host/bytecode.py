"""Where the jail's code is on the host, and its bytecode compiled without that path.

The jail imports its modules through an fd open on :data:`PACKAGE_ROOT`
(``/proc/self/fd/N/sandbox/jail/...``), never by their host path.
"""

from __future__ import annotations

import py_compile
from pathlib import Path

PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
"""Where the jail's code is imported from: the dir holding the `sandbox` package."""
LAUNCH_SCRIPT = "sandbox/jail/launch.py"


def compile_jail_bytecode() -> None:
    """(Re)write the jail's cached bytecode naming each module by its package path only.

    A process that imports a module from its real path (the service does)
    caches bytecode that embeds that path; the zygote, importing the same
    module through its fd path, reads those bytes, and a warm tool can read
    what its zygote freed. Compiled here with a relative name, the cache
    holds nothing of where PAGI's code lives on the host. A read-only tree
    (an image built ahead) keeps the cache it has.
    """
    root = Path(PACKAGE_ROOT)
    for source in [
        root / "sandbox" / "__init__.py",
        *sorted((root / "sandbox" / "jail").glob("*.py")),
    ]:
        try:
            py_compile.compile(
                str(source),
                dfile=str(source.relative_to(root)),
                doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP,
            )
        except (OSError, py_compile.PyCompileError):
            continue


def launcher_path(package_fd: int) -> str:
    """The launch script named through an fd open on :data:`PACKAGE_ROOT` (``/proc/self/fd/N``).

    The jail's processes import its code through that name, so none of
    them (nor a warm tool, in the zygote's interpreter) holds where the
    code lives on the host: its modules' files, its frames, its command line.
    """
    return f"/proc/self/fd/{package_fd}/{LAUNCH_SCRIPT}"
