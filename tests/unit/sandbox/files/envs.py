"""Small package environments for tests: built offline (no package at all) in a second or two."""

from __future__ import annotations

from pathlib import Path

from sandbox.package_envs import EnvDefinition, EnvState, build
from sandbox.settings import base_python_executable

PYTHON = base_python_executable()
EMPTY_LOCK = "# a lock with no package: the environment holds the standard library only\n"
TINY_POLICY = """
[tools.tiny]
argv = ["{python}", "-I", "main.py"]
code = "file"
code_file = "main.py"
package_env = "tiny"

[tools.plain]
argv = ["/bin/echo", "plain"]

[package_envs.tiny]
requirements = "envs/tiny.txt"
preload = ["json", "csv"]

[callers.operator]
tools = ["*"]

[callers.agent]
tools = ["tiny", "plain"]
"""


def tiny_definition(policy_dir: Path, preload: tuple[str, ...] = ("json", "csv")) -> EnvDefinition:
    """The ``tiny`` environment of :data:`TINY_POLICY`, its lock written beside the policy."""
    lock = policy_dir / "envs" / "tiny.txt"
    lock.parent.mkdir(parents=True, exist_ok=True)
    if not lock.exists():
        lock.write_text(EMPTY_LOCK)
    return EnvDefinition(name="tiny", requirements=lock, preload=preload, tools=("tiny",))


def build_tiny(policy_dir: Path, envs_dir: Path, **options: object) -> EnvState:
    """Build the ``tiny`` environment (quietly) and return its state."""
    return build(
        tiny_definition(policy_dir),
        envs_dir,
        PYTHON,
        quiet=True,
        echo=lambda _: None,
        **options,  # type: ignore[arg-type]
    )
