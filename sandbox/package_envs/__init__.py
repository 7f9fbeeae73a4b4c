"""Package environments: read-only virtual environments that tools run with.

The policy names them (``[package_envs.NAME]``: a hash-locked requirements
file beside the policy, the modules to preload) and gives them to tools
(``package_env = "NAME"``: the tool's ``{python}`` is then the
environment's interpreter). ``pagi env build`` (and ``make run``) builds
each one into ``<envs dir>/NAME-KEY``, where KEY hashes the requirements
file and the interpreter, so a changed lock or a new interpreter is a new
directory, never an edit of one a run may be using:

1. ``PAGI_SANDBOX_PYTHON -m venv --without-pip`` (the base interpreter the
   jail runs, the one the ``python`` tool uses; the environment's
   ``bin/python`` is a link to it and its ``pyvenv.cfg`` points at it);
2. ``pip --python ENV install --require-hashes --only-binary :all:
   --no-deps -r FILE``: exactly the locked wheels, every file hash-checked,
   bytecode compiled (the jail mounts the environment read-only, so the
   cache could not be written there);
3. everything made readable by every user (the tool runs as another uid);
4. the preload modules imported by the new interpreter, in isolated mode
   with an empty environment, and its ``sys.path`` checked: the
   environment's own site-packages and the interpreter's standard library,
   nothing of the service's virtual environment or of the interpreter's
   own site-packages;
5. the lock as installed (``pagi-requirements.txt``) and a marker
   (``pagi-env.json``: what it was built from, its packages, how long it
   took) written, then the directory renamed into place (a build that fails
   leaves nothing behind), and older builds of the same environment removed.

The service checks each environment the same way (:func:`inspect`) at
start, after a policy change and whenever its files change, and keeps the
result for ``/health`` and for admission: a tool whose environment is not
``ready`` is refused with 503 naming it.

Modules: :mod:`.layout` (definitions, keys, where builds live),
:mod:`.checks` (an environment's state and how it is found),
:mod:`.build` (``pagi env build``), :mod:`.registry` (the service's view).
"""

from sandbox.package_envs.build import BUILD_TIMEOUT_SECONDS, EnvBuildError, build
from sandbox.package_envs.checks import PROBE_TIMEOUT_SECONDS, EnvState, EnvStatus, inspect
from sandbox.package_envs.layout import (
    FORMAT,
    LOCK_COPY,
    MARKER,
    EnvDefinition,
    Interpreter,
    definitions,
    env_dir,
    env_key,
    interpreter,
)
from sandbox.package_envs.registry import RECHECK_SECONDS, RETRY_SECONDS, EnvRegistry

__all__ = [
    "BUILD_TIMEOUT_SECONDS",
    "FORMAT",
    "LOCK_COPY",
    "MARKER",
    "PROBE_TIMEOUT_SECONDS",
    "RECHECK_SECONDS",
    "RETRY_SECONDS",
    "EnvBuildError",
    "EnvDefinition",
    "EnvRegistry",
    "EnvState",
    "EnvStatus",
    "Interpreter",
    "build",
    "definitions",
    "env_dir",
    "env_key",
    "inspect",
    "interpreter",
]
