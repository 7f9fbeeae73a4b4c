"""Settings of the sandbox service (environment variables, ``.env``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pydantic import Field

from pagi.settings import CommonSettings

DEFAULT_POLICY_PATH = Path("policies/sandbox.toml")
DEFAULT_WARM_MODULES = ("json", "re", "math", "datetime", "itertools", "collections")


def base_python_executable() -> str:
    """The real base CPython binary: not a version-manager shim, not a venv's.

    Tools must run an interpreter whose files the jail can expose without
    exposing the service's own virtual environment or source tree.
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return os.path.realpath(os.path.join(sys.base_prefix, "bin", f"python{version}"))


class SandboxSettings(CommonSettings):
    """Everything the sandbox reads from its environment."""

    pagi_sandbox_policy: Path = Field(
        DEFAULT_POLICY_PATH, description="The policy file (TOML), watched and hot-reloaded."
    )
    pagi_sandbox_audit_log: Path | None = Field(
        None, description="Append-only audit file; defaults to PAGI_STATE_DIR/sandbox-audit.jsonl."
    )
    pagi_sandbox_audit_fsync: bool = Field(
        False, description="fsync the audit file after every record (slower, survives power loss)."
    )
    pagi_sandbox_work_root: Path | None = Field(
        None, description="Where runs get their working dirs; defaults to PAGI_STATE_DIR/sandbox."
    )
    pagi_sandbox_python: str = Field(
        default_factory=base_python_executable,
        description="The interpreter `{python}` stands for in a tool's argv.",
    )
    pagi_sandbox_envs_dir: Path | None = Field(
        None,
        description="Where `pagi env build` puts package environments; defaults to"
        " PAGI_STATE_DIR/sandbox-envs.",
    )
    pagi_sandbox_warm_modules: tuple[str, ...] = Field(
        DEFAULT_WARM_MODULES, description="Standard-library modules preloaded on the warm path."
    )

    @property
    def audit_log_path(self) -> Path:
        """The audit file in use."""
        return self.pagi_sandbox_audit_log or self.pagi_state_dir / "sandbox-audit.jsonl"

    @property
    def envs_dir(self) -> Path:
        """The root under which package environments are built."""
        return self.pagi_sandbox_envs_dir or self.pagi_state_dir / "sandbox-envs"

    @property
    def work_root(self) -> Path:
        """The root under which every run's working dir is created."""
        return self.pagi_sandbox_work_root or self.pagi_state_dir / "sandbox"
