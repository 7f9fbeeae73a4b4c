"""The sandbox policy file: its schema, hard ceilings, loading and validation.

The policy is data an operator edits by hand (``policies/sandbox.toml``).
Every table is a pydantic model with ``extra="forbid"`` and strict types, so
a typo is an error, never a silently ignored key. Limits are bounded by
:data:`HARD_CEILINGS`, constants of the code that no policy can exceed.
Loading produces an immutable, versioned :class:`PolicySnapshot`; errors
come as one :class:`PolicyError` naming the file, each key path and its line.

Missing keys take the safe default: no network, the default limits, every
isolation layer required except ``cgroup``, and no caller allowed anything.
A tool reaches the network only through the egress proxy, by the hosts its
``[tools.NAME.network]`` table allows; the host's whole network
(``network = true``) needs ``[sandbox] dangerously_allow_host_network``.
Files a run writes never run unless its tool sets ``allow_exec_written``.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import ip_network
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    ValidationError,
    model_validator,
)

from pagi import IDENTITIES
from sandbox.egress import config as egress_config
from sandbox.egress.addresses import non_public_kind, permitted_private, public_part
from sandbox.egress.config import EgressLimits, EgressPolicy
from sandbox.egress.rules import RuleError, RuleSet, parse_rule
from sandbox.jail.layer import LAYERS
from sandbox.policy_lines import key_lines, line_of
from sandbox.spec import RunLimits

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

HARD_CEILINGS = RunLimits(
    wall_seconds=60.0,
    cpu_seconds=60,
    memory_bytes=2 * GIB,
    file_size_bytes=256 * MIB,
    open_files=1024,
    processes=256,
    output_bytes=8 * MIB,
    stack_bytes=64 * MIB,
)
"""No policy may set a limit above these."""

LIMIT_FLOORS = RunLimits(
    wall_seconds=0.1,
    cpu_seconds=1,
    memory_bytes=16 * MIB,
    file_size_bytes=0,
    open_files=8,
    processes=1,
    output_bytes=1 * KIB,
    stack_bytes=1 * MIB,
)
"""No policy may set a limit below these (a run could not even start)."""

MAX_CODE_BYTES_CEILING = 1 * MIB
MAX_ARGV_CODE_BYTES = 128 * KIB - 1
"""Linux refuses a single argv string of 128 KiB or more (MAX_ARG_STRLEN)."""
MAX_CONCURRENT_RUNS_CEILING = 8
"""The runner keeps this many run slots (each with its own cgroup and warm process)."""
QUEUE_LENGTH_CEILING = 1024
QUEUE_WAIT_SECONDS_CEILING = 60.0
MAX_POLICY_FILE_BYTES = 1 * MIB

INPUT_FILES_CEILING = 256
INPUT_BYTES_CEILING = 32 * MIB
"""Decoded bytes of a request's input files, all together."""
INPUT_DEPTH_CEILING = 16
"""Path components of an input file (``a/b/c.csv`` has three)."""
OUTPUT_FILES_CEILING = 256
OUTPUT_BYTES_CEILING = 32 * MIB
"""Bytes of output files returned with one result, all together."""
PACKAGE_ENVS_CEILING = 16
PRELOAD_MODULES_CEILING = 64

DEFAULT_REQUIRED_LAYERS = tuple(layer for layer in LAYERS if layer != "cgroup")
PYTHON_PLACEHOLDER = "{python}"
"""In a tool's argv: the interpreter configured by ``PAGI_SANDBOX_PYTHON``."""
ALL_TOOLS = "*"

LayerName = Literal[LAYERS]  # type: ignore[valid-type]
CodeMode = Literal["none", "stdin", "file", "argv"]
Executor = Literal["cold", "warm"]

_SIZE = re.compile(r"^\s*(\d{1,15})\s*(B|K|KB|KiB|M|MB|MiB|G|GB|GiB)?\s*$")
_UNITS = {
    None: 1,
    "B": 1,
    "K": KIB,
    "KB": KIB,
    "KiB": KIB,
    "M": MIB,
    "MB": MIB,
    "MiB": MIB,
    "G": GIB,
    "GB": GIB,
    "GiB": GIB,
}


def _parse_size(value: object) -> object:
    """``"64 KiB"`` -> 65536; integers pass through (bytes); anything else is left to fail."""
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match is None:
            raise ValueError("a size is an integer of bytes or a string like '64 KiB' or '256MiB'")
        return int(match.group(1)) * _UNITS[match.group(2)]
    return value


def _list_to_tuple(value: object) -> object:
    """TOML arrays arrive as lists; snapshots hold tuples so they cannot change."""
    return tuple(value) if isinstance(value, list) else value


def _array(item: Any) -> Any:
    return Annotated[tuple[item, ...], BeforeValidator(_list_to_tuple)]


def _bounded_size(floor: int, ceiling: int) -> Any:
    return Annotated[int, BeforeValidator(_parse_size), Field(ge=floor, le=ceiling)]


WallSeconds = Annotated[float, Field(ge=LIMIT_FLOORS.wall_seconds, le=HARD_CEILINGS.wall_seconds)]
CpuSeconds = Annotated[int, Field(ge=LIMIT_FLOORS.cpu_seconds, le=HARD_CEILINGS.cpu_seconds)]
MemoryBytes = _bounded_size(LIMIT_FLOORS.memory_bytes, HARD_CEILINGS.memory_bytes)
FileSizeBytes = _bounded_size(LIMIT_FLOORS.file_size_bytes, HARD_CEILINGS.file_size_bytes)
OpenFiles = Annotated[int, Field(ge=LIMIT_FLOORS.open_files, le=HARD_CEILINGS.open_files)]
Processes = Annotated[int, Field(ge=LIMIT_FLOORS.processes, le=HARD_CEILINGS.processes)]
OutputBytes = _bounded_size(LIMIT_FLOORS.output_bytes, HARD_CEILINGS.output_bytes)
StackBytes = _bounded_size(LIMIT_FLOORS.stack_bytes, HARD_CEILINGS.stack_bytes)
CodeBytes = _bounded_size(0, MAX_CODE_BYTES_CEILING)

ToolName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_\-]{0,63}$")]
ToolRef = Annotated[str, StringConstraints(pattern=r"^(\*|[a-z][a-z0-9_\-]{0,63})$")]
Argument = Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=r"^[^\x00]*$")]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
EnvValue = Annotated[str, StringConstraints(max_length=4096, pattern=r"^[^\x00]*$")]
SyscallName = Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]{0,63}$")]
FileName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")]
ModuleName = Annotated[
    str,
    StringConstraints(
        max_length=200, pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
    ),
]
RequirementsPath = Annotated[
    str, StringConstraints(min_length=1, max_length=1024, pattern=r"^[^/\x00][^\x00]*\.txt$")
]
AbsolutePath = Annotated[
    str, StringConstraints(min_length=1, max_length=4096, pattern=r"^/[^\x00]*$")
]


class PolicyModel(BaseModel):
    """Base of every policy table: unknown keys and loose types are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class DefaultLimits(PolicyModel):
    """``[defaults]``: the limits of every tool that does not override them."""

    wall_seconds: WallSeconds = 5.0
    cpu_seconds: CpuSeconds = 5
    memory_bytes: MemoryBytes = 256 * MIB
    file_size_bytes: FileSizeBytes = 16 * MIB
    open_files: OpenFiles = 64
    processes: Processes = 16
    output_bytes: OutputBytes = 64 * KIB
    stack_bytes: StackBytes = 8 * MIB


class ToolLimits(PolicyModel):
    """``[tools.NAME.limits]``: per-tool overrides of ``[defaults]``."""

    wall_seconds: WallSeconds | None = None
    cpu_seconds: CpuSeconds | None = None
    memory_bytes: MemoryBytes | None = None
    file_size_bytes: FileSizeBytes | None = None
    open_files: OpenFiles | None = None
    processes: Processes | None = None
    output_bytes: OutputBytes | None = None
    stack_bytes: StackBytes | None = None


class FileLimits(PolicyModel):
    """``[tools.NAME.files]``: the files a run takes in and hands back (``out/``)."""

    input_files: Annotated[int, Field(ge=0, le=INPUT_FILES_CEILING)] = 16
    """Input files one request may carry; 0: the tool takes none."""
    input_bytes: _bounded_size(0, INPUT_BYTES_CEILING) = 1 * MIB
    """Their decoded size, all together. The largest of any tool sets how much of a
    request body the service reads before the request waits for a run slot."""
    input_depth: Annotated[int, Field(ge=1, le=INPUT_DEPTH_CEILING)] = 4
    """Path components of one input file (``data/2024/a.csv`` has three)."""
    output_files: Annotated[int, Field(ge=0, le=OUTPUT_FILES_CEILING)] = 16
    """Files under ``out/`` returned with their content; more are listed, truncated."""
    output_bytes: _bounded_size(0, OUTPUT_BYTES_CEILING) = 1 * MIB
    """Their size, all together; a file that does not fit is listed, truncated."""


class PackageEnvPolicy(PolicyModel):
    """``[package_envs.NAME]``: a virtual environment PAGI builds for tools (``pagi env build``)."""

    description: Annotated[str, StringConstraints(max_length=200)] = ""
    requirements: RequirementsPath
    """A hash-locked requirements file, relative to the policy file's directory."""
    preload: _array(ModuleName) = Field((), max_length=PRELOAD_MODULES_CEILING)
    """Modules the warm path imports before a run (and the health check imports)."""

    @model_validator(mode="after")
    def _relative(self) -> PackageEnvPolicy:
        if ".." in PurePosixPath(self.requirements).parts:
            raise ValueError("requirements: '..' is not allowed (a file beside the policy)")
        return self


def _allow_rule(text: str) -> str:
    try:
        parse_rule(text)
    except RuleError as exc:
        raise ValueError(str(exc)) from None
    return text


def _deny_rule(text: str) -> str:
    try:
        parse_rule(text, deny=True)
    except RuleError as exc:
        raise ValueError(str(exc)) from None
    return text


def _private_network(text: str) -> str:
    if any(c.isspace() for c in text) or "%" in text:
        raise ValueError(f"{text!r}: a network is written like 10.0.0.0/8, fd00::/8 or 127.0.0.1")
    try:
        network = ip_network(text.removeprefix("[").removesuffix("]"), strict=True)
    except ValueError as exc:
        loose = None
        try:
            loose = ip_network(text, strict=False)
        except ValueError:
            pass
        if loose is not None:
            raise ValueError(
                f"{text!r} is not a network: it has host bits set (did you mean {loose}?)"
            ) from None
        raise ValueError(f"{text!r} is not an IP network ({exc})") from None
    public = public_part(network)
    if public is not None:
        raise ValueError(
            f"{text!r} covers public addresses (e.g. {public.network_address}): allow_private"
            " lists only non-public ranges; a public destination needs only an allow rule"
        )
    return text


def _egress_bound(limit: tuple[Any, Any, Any]) -> tuple[Any, Any]:
    return limit[1], limit[2]


AllowRule = Annotated[str, AfterValidator(_allow_rule)]
DenyRule = Annotated[str, AfterValidator(_deny_rule)]
PrivateNetwork = Annotated[str, AfterValidator(_private_network)]
_floor, _ceiling = _egress_bound(egress_config.MAX_CONNECTIONS)
EgressConnections = Annotated[int, Field(ge=_floor, le=_ceiling)]
_floor, _ceiling = _egress_bound(egress_config.MAX_TRANSFER_BYTES)
EgressBytes = _bounded_size(_floor, _ceiling)
_floor, _ceiling = _egress_bound(egress_config.CONNECT_TIMEOUT_SECONDS)
ConnectTimeout = Annotated[float, Field(ge=_floor, le=_ceiling)]
_floor, _ceiling = _egress_bound(egress_config.IDLE_TIMEOUT_SECONDS)
IdleTimeout = Annotated[float, Field(ge=_floor, le=_ceiling)]


class NetworkPolicy(PolicyModel):
    """``[tools.NAME.network]``: the hosts a tool may reach through the egress proxy."""

    allow: _array(AllowRule) = Field(min_length=1, max_length=256)
    """``host``, ``*.domain`` (strict subdomains), an IP literal; optional ``:port``
    (without one: 80 and 443)."""
    deny: _array(DenyRule) = Field((), max_length=256)
    """Checked first; without a port a deny rule covers every port."""
    allow_private: _array(PrivateNetwork) = Field((), max_length=64)
    """Non-public networks (loopback, private, link-local...) the tool may reach."""
    max_connections: EgressConnections = egress_config.MAX_CONNECTIONS[0]
    max_transfer_bytes: EgressBytes = egress_config.MAX_TRANSFER_BYTES[0]
    connect_timeout_seconds: ConnectTimeout = egress_config.CONNECT_TIMEOUT_SECONDS[0]
    idle_timeout_seconds: IdleTimeout = egress_config.IDLE_TIMEOUT_SECONDS[0]

    def egress_policy(self) -> EgressPolicy:
        """The parsed rules and limits the proxy enforces for a run of this tool."""
        return EgressPolicy(
            rules=RuleSet.parse(self.allow, self.deny),
            allow_private=tuple(
                ip_network(text.removeprefix("[").removesuffix("]")) for text in self.allow_private
            ),
            limits=EgressLimits(
                max_connections=self.max_connections,
                max_transfer_bytes=self.max_transfer_bytes,
                connect_timeout_seconds=self.connect_timeout_seconds,
                idle_timeout_seconds=self.idle_timeout_seconds,
            ),
        )


_NETWORK_SWITCH = "(switch)"
_NETWORK_TABLE = "(table)"
_UNION_TAGS = frozenset({_NETWORK_SWITCH, _NETWORK_TABLE})
"""Tags pydantic puts in an error's location; never part of a key path."""


def _network_kind(value: object) -> str | None:
    if isinstance(value, bool):
        return _NETWORK_SWITCH
    if isinstance(value, dict | NetworkPolicy):
        return _NETWORK_TABLE
    return None


NetworkSetting = Annotated[
    Annotated[bool, Tag(_NETWORK_SWITCH)] | Annotated[NetworkPolicy, Tag(_NETWORK_TABLE)],
    Discriminator(
        _network_kind,
        custom_error_type="network_setting",
        custom_error_message="network is false, a [tools.NAME.network] table of allowed hosts,"
        " or true (the host's whole network, only with"
        " [sandbox] dangerously_allow_host_network = true)",
    ),
]


class ToolPolicy(PolicyModel):
    """``[tools.NAME]``: one tool a caller may ask the sandbox to run."""

    description: Annotated[str, StringConstraints(max_length=200)] = ""
    argv: _array(Argument) = Field(min_length=1, max_length=64)
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
    readable_paths: _array(AbsolutePath) = Field((), max_length=64)
    denied_syscalls: _array(SyscallName) = Field((), max_length=256)
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

    tools: _array(ToolRef) = Field((), max_length=256)


class SandboxTable(PolicyModel):
    """``[sandbox]``: service-wide settings."""

    max_concurrent_runs: Annotated[int, Field(ge=1, le=MAX_CONCURRENT_RUNS_CEILING)] = 2
    queue_length: Annotated[int, Field(ge=0, le=QUEUE_LENGTH_CEILING)] = 16
    queue_wait_seconds: Annotated[float, Field(ge=0, le=QUEUE_WAIT_SECONDS_CEILING)] = 10.0
    required_layers: _array(LayerName) = DEFAULT_REQUIRED_LAYERS
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


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class PolicyProblem:
    """One thing wrong with a policy file."""

    key: str
    """Dotted key path (``tools.python.limits.memory_bytes``), empty for the whole file."""
    line: int | None
    message: str


class PolicyError(Exception):
    """A policy file was refused; ``problems`` says where and why."""

    def __init__(self, source: Path, problems: list[PolicyProblem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        """One line per problem: ``FILE:LINE: KEY: message``."""
        lines = []
        for problem in self.problems:
            where = f"{self.source}:{problem.line}" if problem.line else str(self.source)
            key = f" {problem.key}:" if problem.key else ""
            lines.append(f"{where}:{key} {problem.message}")
        return "\n".join(lines)


def _dotted(loc: Iterable[object]) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif part == "[key]":
            parts.append("(name)")
        else:
            text = str(part)
            parts.append(f'"{text}"' if not re.fullmatch(r"[A-Za-z0-9_\-]+", text) else text)
    return ".".join(parts).replace(".[", "[")


# --------------------------------------------------------------------------- snapshot


@dataclass(frozen=True)
class PolicyContext:
    """Facts of the deployment a policy is checked against."""

    protected_paths: tuple[Path, ...] = ()
    """Files of the service a tool must never be allowed to read (keys, state, source)."""


@dataclass(frozen=True)
class PolicySnapshot:
    """One validated policy version; never changes once loaded."""

    document: PolicyDocument
    version: str
    """The first 16 hex digits of the file's sha256."""
    source: Path
    loaded_at: datetime
    limits: Mapping[str, RunLimits] = field(default_factory=lambda: MappingProxyType({}))
    """Each tool's effective limits (defaults merged with its overrides)."""
    egress: Mapping[str, EgressPolicy] = field(default_factory=lambda: MappingProxyType({}))
    """What each tool with a ``[tools.NAME.network]`` table may reach, parsed once."""

    def tool(self, name: str) -> ToolPolicy | None:
        """The tool called ``name``, if the policy has it."""
        return self.document.tools.get(name)

    def caller_may_run(self, caller: str, tool: str) -> bool:
        """Whether ``caller`` (a token subject) may run ``tool``."""
        rules = self.document.callers.get(caller)
        if rules is None:
            return False
        return ALL_TOOLS in rules.tools or tool in rules.tools

    def caller_has_wildcard(self, caller: str) -> bool:
        """Whether ``caller`` may run every tool of the policy."""
        rules = self.document.callers.get(caller)
        return rules is not None and ALL_TOOLS in rules.tools

    def tools_of(self, caller: str) -> list[str]:
        """The tools ``caller`` may run, by name."""
        return sorted(t for t in self.document.tools if self.caller_may_run(caller, t))

    @property
    def largest_code_bytes(self) -> int:
        """The largest ``max_code_bytes`` of any tool (0 when no tool takes code)."""
        sizes = [t.max_code_bytes for t in self.document.tools.values() if t.code != "none"]
        return max(sizes, default=0)

    def egress_of(self, name: str) -> EgressPolicy | None:
        """The egress rules and limits of tool ``name`` under this version (None: no proxy)."""
        return self.egress.get(name)

    @property
    def host_network_tools(self) -> list[str]:
        """Tools given the host's whole network (``network = true``)."""
        return sorted(n for n, t in self.document.tools.items() if t.host_network)

    @property
    def required_layers(self) -> frozenset[str]:
        """The isolation layers every run needs."""
        return frozenset(self.document.sandbox.required_layers)

    def summary(self) -> dict[str, Any]:
        """A JSON-able digest: tools, callers, limits, service-wide settings."""
        doc = self.document
        return {
            "sandbox": doc.sandbox.model_dump(mode="json"),
            "defaults": doc.defaults.model_dump(mode="json"),
            "tools": {
                name: {
                    "description": tool.description,
                    "argv": list(tool.argv),
                    "code": tool.code,
                    "code_file": tool.code_file,
                    "max_code_bytes": tool.max_code_bytes,
                    "executor": tool.executor,
                    "network": tool.network is not False,
                    "host_network": tool.host_network,
                    "egress": tool.egress.model_dump(mode="json") if tool.egress else None,
                    "readable_paths": list(tool.readable_paths),
                    "denied_syscalls": list(tool.denied_syscalls),
                    "env": sorted(tool.env),
                    "limits": self.limits[name].model_dump(mode="json"),
                    "files": tool.files.model_dump(mode="json"),
                    "package_env": tool.package_env,
                    "explain_denials": tool.explain_denials,
                    "allow_exec_written": tool.allow_exec_written,
                }
                for name, tool in sorted(doc.tools.items())
            },
            "package_envs": {
                name: env.model_dump(mode="json") for name, env in sorted(doc.package_envs.items())
            },
            "callers": {name: list(rules.tools) for name, rules in sorted(doc.callers.items())},
        }


# --------------------------------------------------------------------------- loading


def read_policy_bytes(path: Path) -> bytes:
    """The bytes of a policy file, or :class:`PolicyError` (missing, unreadable, too large)."""

    def refuse(message: str) -> PolicyError:
        return PolicyError(path, [PolicyProblem("", None, message)])

    try:
        # O_NONBLOCK: a FIFO put at the path must not hang the service.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise refuse("file not found") from None
    except OSError as exc:
        raise refuse(f"cannot read the file: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise refuse("is a directory, not a file")
        if not stat.S_ISREG(mode):
            raise refuse("not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(MAX_POLICY_FILE_BYTES + 1)
    except OSError as exc:
        raise refuse(f"cannot read the file: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_POLICY_FILE_BYTES:
        raise refuse(f"file larger than {MAX_POLICY_FILE_BYTES} bytes")
    return data


_TOML_LINE = re.compile(r"\(at line (\d+), column \d+\)")


def _parse_toml(path: Path, data: bytes) -> tuple[str, dict[str, Any]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise PolicyError(path, [PolicyProblem("", line, "not valid UTF-8")]) from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_LINE.search(message)
        line = int(match.group(1)) if match else None
        clean = _TOML_LINE.sub("", message).strip()
        raise PolicyError(path, [PolicyProblem("", line, f"invalid TOML: {clean}")]) from None
    except RecursionError:
        problem = PolicyProblem("", None, "invalid TOML: nested too deeply")
        raise PolicyError(path, [problem]) from None


_PATTERN_MESSAGES = {
    "tools": "a tool name is lowercase letters, digits, '_' or '-', starting with a letter",
    "argv": "an argument is a non-empty string without NUL characters",
    "readable_paths": "a readable path must be absolute (start with '/')",
    "denied_syscalls": "a system call name is lowercase letters, digits and '_'",
    "env": "an environment variable name is letters, digits and '_' (values without NUL)",
    "code_file": "code_file is a plain file name (letters, digits, '_', '-', '.')",
    "callers": 'a caller\'s tools are tool names or "*"',
    "package_envs": "an environment name is lowercase letters, digits, '_' or '-'",
    "package_env": "an environment name is lowercase letters, digits, '_' or '-'",
    "preload": "a module name is dotted Python identifiers (matplotlib.pyplot)",
    "requirements": "requirements is a relative path to a .txt file beside the policy",
}


def _friendly_message(error: Any) -> str:
    kind = error.get("type")
    message = str(error.get("msg", "invalid"))
    if kind == "extra_forbidden":
        return "unknown key (not part of the policy format)"
    if kind == "missing":
        return "required key is missing"
    if kind == "too_short" and tuple(error.get("loc", ()))[-1:] == ("allow",):
        return "allow lists at least one host (a tool that reaches nothing needs no network table)"
    if kind == "string_pattern_mismatch":
        names = [part for part in error.get("loc", ()) if isinstance(part, str)]
        for name in reversed(names):
            if name in _PATTERN_MESSAGES:
                return _PATTERN_MESSAGES[name]
    return message.removeprefix("Value error, ")


def _validation_problems(
    exc: ValidationError, lines: dict[tuple[str, ...], int]
) -> list[PolicyProblem]:
    problems = []
    for error in exc.errors(include_url=False):
        loc = tuple(part for part in error.get("loc", ()) if part not in _UNION_TAGS)
        problems.append(PolicyProblem(_dotted(loc), line_of(lines, loc), _friendly_message(error)))
    return sorted(problems, key=lambda p: p.line or 0)


def _is_within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _semantic_problems(
    document: PolicyDocument, context: PolicyContext, lines: dict[tuple[str, ...], int]
) -> list[PolicyProblem]:
    """Checks that span tables or need the deployment: found after the schema passed."""
    problems: list[PolicyProblem] = []

    def problem(loc: tuple[str | int, ...], message: str) -> None:
        problems.append(PolicyProblem(_dotted(loc), line_of(lines, loc), message))

    for caller, rules in document.callers.items():
        if caller not in IDENTITIES:
            problem(
                ("callers", caller),
                f"unknown caller {caller!r} (token subjects are: {', '.join(IDENTITIES)})",
            )
        for index, ref in enumerate(rules.tools):
            if ref != ALL_TOOLS and ref not in document.tools:
                problem(("callers", caller, "tools", index), f"no tool named {ref!r} in [tools]")
    unknown_syscalls = _unknown_syscalls(
        {name for tool in document.tools.values() for name in tool.denied_syscalls}
    )
    protected = [Path(os.path.realpath(p)) for p in context.protected_paths]
    for name, tool in document.tools.items():
        if tool.package_env is not None and tool.package_env not in document.package_envs:
            problem(
                ("tools", name, "package_env"),
                f"no environment named {tool.package_env!r} in [package_envs]",
            )
        for index, syscall in enumerate(tool.denied_syscalls):
            if syscall in unknown_syscalls:
                problem(
                    ("tools", name, "denied_syscalls", index),
                    f"unknown system call {syscall!r} on this architecture",
                )
        for index, raw in enumerate(tool.readable_paths):
            loc = ("tools", name, "readable_paths", index)
            if ".." in PurePosixPath(raw).parts:
                problem(loc, f"{raw!r}: '..' is not allowed in a readable path")
                continue
            path = Path(os.path.realpath(raw))
            for secret in protected:
                if _is_within(path, secret) or _is_within(secret, path):
                    problem(loc, f"{raw!r} would expose the service's own files ({secret})")
                    break
        for key in tool.env:
            if key.startswith("LD_"):
                problem(("tools", name, "env", key), "LD_* variables are not passed to tools")
        if tool.host_network and not document.sandbox.dangerously_allow_host_network:
            problem(
                ("tools", name, "network"),
                "network = true gives the tool the host's whole network (the cloud metadata"
                " address, the LAN and PAGI's own ports included); list the hosts it needs in a"
                f" [tools.{name}.network] table instead, or set [sandbox]"
                " dangerously_allow_host_network = true to keep it",
            )
        if tool.egress is not None:
            problems.extend(_egress_problems(name, tool.egress, lines))
    return problems


def _egress_problems(
    name: str, table: NetworkPolicy, lines: dict[tuple[str, ...], int]
) -> list[PolicyProblem]:
    """An allow rule for a non-public address that allow_private does not open is dead."""
    problems = []
    egress = table.egress_policy()
    for index, rule in enumerate(egress.rules.allow):
        if rule.address is None:
            continue
        kind = non_public_kind(rule.address)
        if kind is not None and permitted_private(rule.address, egress.allow_private) is None:
            loc = ("tools", name, "network", "allow", index)
            problems.append(
                PolicyProblem(
                    _dotted(loc),
                    line_of(lines, loc),
                    f"{rule.text!r} is a {kind} address: add it to allow_private too,"
                    " or the proxy refuses it",
                )
            )
    return problems


def _unknown_syscalls(names: set[str]) -> set[str]:
    """Names libseccomp does not know on the native architecture."""
    if not names:
        return set()
    try:
        import pyseccomp
    except (ImportError, OSError):
        # Without libseccomp there is no filter to extend; the runner refuses
        # to run when the seccomp layer is required and missing.
        return set()
    return {n for n in names if pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, n) < 0}


def _effective_limits(document: PolicyDocument) -> dict[str, RunLimits]:
    base = document.defaults.model_dump()
    return {
        name: RunLimits(**(base | tool.limits.model_dump(exclude_none=True)))
        for name, tool in document.tools.items()
    }


def parse_policy(data: bytes, source: Path, context: PolicyContext | None = None) -> PolicySnapshot:
    """Validate the bytes of a policy file into a snapshot, or raise :class:`PolicyError`."""
    if not data.strip():
        # An empty file is what a reader sees while an editor rewrites it in
        # place; it is never taken as a policy.
        raise PolicyError(source, [PolicyProblem("", None, "file is empty")])
    text, raw = _parse_toml(source, data)
    lines = key_lines(text)
    try:
        document = PolicyDocument.model_validate(raw)
    except ValidationError as exc:
        raise PolicyError(source, _validation_problems(exc, lines)) from None
    problems = _semantic_problems(document, context or PolicyContext(), lines)
    if problems:
        raise PolicyError(source, sorted(problems, key=lambda p: p.line or 0))
    return PolicySnapshot(
        document=document,
        version=hashlib.sha256(data).hexdigest()[:16],
        source=source,
        loaded_at=datetime.now(UTC),
        limits=MappingProxyType(_effective_limits(document)),
        egress=MappingProxyType(
            {
                name: tool.egress.egress_policy()
                for name, tool in document.tools.items()
                if tool.egress
            }
        ),
    )


def load_policy(path: Path, context: PolicyContext | None = None) -> PolicySnapshot:
    """Read and validate the policy file at ``path``."""
    return parse_policy(read_policy_bytes(path), path, context)


def deployment_context(settings: Any) -> PolicyContext:
    """The paths of this deployment that no tool may be allowed to read."""
    source_root = Path(__file__).resolve().parent.parent
    protected = [
        settings.keys_dir,
        settings.pagi_state_dir,
        settings.audit_log_path,
        settings.pagi_sandbox_policy.parent,
        source_root,
    ]
    if sys.prefix != sys.base_prefix:
        protected.append(Path(sys.prefix))
    return PolicyContext(protected_paths=tuple(Path(os.path.abspath(p)) for p in protected))
