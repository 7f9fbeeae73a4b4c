"""The policy file's tables: tools, package environments, callers, ``[sandbox]``.

Missing keys take the safe default: no network, the default limits, every
isolation layer required except ``cgroup``, and no caller allowed anything.
Files a run writes never run unless its tool sets ``allow_exec_written``.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from sandbox.jail.layer import LAYERS
from sandbox.policy.fields import (
    AbsolutePath,
    Argument,
    CodeMode,
    EnvName,
    EnvValue,
    Executor,
    FileName,
    LayerName,
    ModuleName,
    PolicyModel,
    RequirementsPath,
    SyscallName,
    ToolName,
    ToolRef,
    array_of,
)
from sandbox.policy.limits import (
    MAX_ARGV_CODE_BYTES,
    MAX_CONCURRENT_RUNS_CEILING,
    PACKAGE_ENVS_CEILING,
    PRELOAD_MODULES_CEILING,
    QUEUE_LENGTH_CEILING,
    QUEUE_WAIT_SECONDS_CEILING,
    CodeBytes,
    DefaultLimits,
    FileLimits,
    ToolLimits,
)
from sandbox.policy.network import NetworkPolicy, NetworkSetting
from sandbox.spec import KIB

DEFAULT_REQUIRED_LAYERS = tuple(layer for layer in LAYERS if layer != "cgroup")
PYTHON_PLACEHOLDER = "{python}"
"""In a tool's argv: the interpreter configured by ``PAGI_SANDBOX_PYTHON``."""
ALL_TOOLS = "*"


class PackageEnvPolicy(PolicyModel):
    """``[package_envs.NAME]``: a virtual environment PAGI builds for tools (``pagi env build``)."""

    description: Annotated[str, StringConstraints(max_length=200)] = ""
    requirements: RequirementsPath
    """A hash-locked requirements file, relative to the policy file's directory."""
    preload: array_of(ModuleName) = Field((), max_length=PRELOAD_MODULES_CEILING)
    """Modules the warm path imports before a run (and the health check imports)."""

    @model_validator(mode="after")
    def _relative(self) -> PackageEnvPolicy:
        if ".." in PurePosixPath(self.requirements).parts:
            raise ValueError("requirements: '..' is not allowed (a file beside the policy)")
        return self


class ToolPolicy(PolicyModel):
    """``[tools.NAME]``: one tool a caller may ask the sandbox to run."""

    description: Annotated[str, StringConstraints(max_length=200)] = ""
    argv: array_of(Argument) = Field(min_length=1, max_length=64)
    code: CodeMode = "none"
    """How the request's ``code`` reaches the tool: not at all, on stdin, as a
    file in the working dir (``code_file``), or appended as the last argument."""
    code_file: FileName | None = None
    max_code_bytes: CodeBytes = 64 * KIB
    limits: ToolLimits = ToolLimits()
    network: NetworkSetting = False
    """``false``: no network at all. A table: the hosts the tool may reach through
    the egress proxy. ``true``: the host's whole network (needs the sandbox-wide
    ``dangerously_allow_host_network``)."""
    readable_paths: array_of(AbsolutePath) = Field((), max_length=64)
    denied_syscalls: array_of(SyscallName) = Field((), max_length=256)
    env: dict[EnvName, EnvValue] = Field(default_factory=dict, max_length=64)
    executor: Executor = "cold"
    files: FileLimits = FileLimits()
    package_env: ToolName | None = None
    """A ``[package_envs]`` entry: ``{python}`` is then that environment's interpreter."""
    explain_denials: bool = True
    """Append one ``pagi-sandbox: refused ...`` line per denial to the run's stderr
    (the result's ``denials`` list them either way)."""
    allow_exec_written: bool = False
    """Let the tool execute, map executable or load as a library the files it writes
    (in its working dir or /tmp): for a compiler tool. Off: written files never run."""

    @model_validator(mode="after")
    def _consistent(self) -> ToolPolicy:
        program = self.argv[0]
        if program != PYTHON_PLACEHOLDER and not program.startswith("/"):
            raise ValueError(
                f"argv[0] must be an absolute path or {PYTHON_PLACEHOLDER!r}, not {program!r}"
            )
        if self.code == "file" and self.code_file is None:
            raise ValueError("code = 'file' needs code_file (the file name in the working dir)")
        if self.code != "file" and self.code_file is not None:
            raise ValueError("code_file is only meaningful with code = 'file'")
        if self.code_file in (".", ".."):
            raise ValueError("code_file must be a plain file name")
        if self.code == "argv" and self.max_code_bytes > MAX_ARGV_CODE_BYTES:
            raise ValueError(
                f"max_code_bytes is at most {MAX_ARGV_CODE_BYTES} when code = 'argv'"
                " (the kernel's limit on one argument)"
            )
        if self.package_env is not None:
            if program != PYTHON_PLACEHOLDER:
                raise ValueError(
                    f"a tool with package_env runs its environment's interpreter:"
                    f" argv[0] must be {PYTHON_PLACEHOLDER!r}"
                )
            if "S" in _interpreter_flags(self.argv):
                raise ValueError(
                    "a tool with package_env needs the site module (its packages are found"
                    " through it): drop -S from argv"
                )
        return self

    @property
    def host_network(self) -> bool:
        """Whether the tool runs in the host's network stack (``network = true``)."""
        return self.network is True

    @property
    def egress(self) -> NetworkPolicy | None:
        """The tool's egress table, when it reaches the network through the proxy."""
        return self.network if isinstance(self.network, NetworkPolicy) else None


def _interpreter_flags(argv: tuple[str, ...]) -> set[str]:
    """The one-letter options of a Python command line, up to its script, ``-c`` or ``-m``."""
    flags: set[str] = set()
    index = 1
    while index < len(argv):
        arg = argv[index]
        if not arg.startswith("-") or arg == "-" or arg.startswith("--"):
            break
        for position, letter in enumerate(arg[1:], start=1):
            if letter in "cm":
                return flags  # what follows is the program, not options
            if letter in "WX":
                if position == len(arg) - 1:
                    index += 1  # the value is the next argument
                break  # the rest of this argument is the value
            flags.add(letter)
        index += 1
    return flags


class CallerPolicy(PolicyModel):
    """``[callers.SUBJECT]``: what the holder of a token with this subject may run."""

    tools: array_of(ToolRef) = Field((), max_length=256)


class SandboxTable(PolicyModel):
    """``[sandbox]``: service-wide settings."""

    max_concurrent_runs: Annotated[int, Field(ge=1, le=MAX_CONCURRENT_RUNS_CEILING)] = 2
    queue_length: Annotated[int, Field(ge=0, le=QUEUE_LENGTH_CEILING)] = 16
    queue_wait_seconds: Annotated[float, Field(ge=0, le=QUEUE_WAIT_SECONDS_CEILING)] = 10.0
    required_layers: array_of(LayerName) = DEFAULT_REQUIRED_LAYERS
    dangerously_allow_host_network: bool = False
    """Lets a tool set ``network = true``: the host's whole network, no egress
    rules, the cloud metadata address and the service's own ports included."""


class PolicyDocument(PolicyModel):
    """A whole policy file."""

    sandbox: SandboxTable = SandboxTable()
    defaults: DefaultLimits = DefaultLimits()
    tools: dict[ToolName, ToolPolicy] = Field(default_factory=dict, max_length=256)
    package_envs: dict[ToolName, PackageEnvPolicy] = Field(
        default_factory=dict, max_length=PACKAGE_ENVS_CEILING
    )
    callers: dict[str, CallerPolicy] = Field(default_factory=dict, max_length=64)
