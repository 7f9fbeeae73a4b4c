"""The sandbox policy file: its schema, hard ceilings, loading and validation.

The policy is data an operator edits by hand (``policies/sandbox.toml``).
Every table is a pydantic model with ``extra="forbid"`` and strict types, so
a typo is an error, never a silently ignored key. Limits are bounded by
:data:`HARD_CEILINGS`, constants of the code that no policy can exceed.
Loading produces an immutable, versioned :class:`PolicySnapshot`; errors
come as one :class:`PolicyError` naming the file, each key path and its line.

The package, one module per concern: :mod:`.fields` (value types),
:mod:`.limits` (limits, floors, ceilings), :mod:`.network` (egress tables),
:mod:`.schema` (the tables of the file), :mod:`.errors`, :mod:`.snapshot`,
:mod:`.checks` (rules across tables), :mod:`.load`, :mod:`.lines` (key
lines for errors) and :mod:`.watch` (the live, hot-reloaded policy).

Missing keys take the safe default: no network, the default limits, every
isolation layer required except ``cgroup``, and no caller allowed anything.
A tool reaches the network only through the egress proxy, by the hosts its
``[tools.NAME.network]`` table allows; the host's whole network
(``network = true``) needs ``[sandbox] dangerously_allow_host_network``.
Files a run writes never run unless its tool sets ``allow_exec_written``.
"""

from __future__ import annotations

from sandbox.jail.layer import LAYERS
from sandbox.policy.errors import PolicyError, PolicyProblem
from sandbox.policy.fields import CodeMode, Executor, LayerName, PolicyModel
from sandbox.policy.limits import (
    HARD_CEILINGS,
    INPUT_BYTES_CEILING,
    INPUT_DEPTH_CEILING,
    INPUT_FILES_CEILING,
    LIMIT_DEFAULTS,
    LIMIT_FLOORS,
    MAX_ARGV_CODE_BYTES,
    MAX_CODE_BYTES_CEILING,
    MAX_CONCURRENT_RUNS_CEILING,
    MAX_POLICY_FILE_BYTES,
    OUTPUT_BYTES_CEILING,
    OUTPUT_FILES_CEILING,
    PACKAGE_ENVS_CEILING,
    PRELOAD_MODULES_CEILING,
    QUEUE_LENGTH_CEILING,
    QUEUE_WAIT_SECONDS_CEILING,
    DefaultLimits,
    FileLimits,
    ToolLimits,
)
from sandbox.policy.load import deployment_context, load_policy, parse_policy, read_policy_bytes
from sandbox.policy.network import NetworkPolicy, NetworkSetting
from sandbox.policy.schema import (
    ALL_TOOLS,
    DEFAULT_REQUIRED_LAYERS,
    PYTHON_PLACEHOLDER,
    CallerPolicy,
    PackageEnvPolicy,
    PolicyDocument,
    SandboxTable,
    ToolPolicy,
)
from sandbox.policy.snapshot import PolicyContext, PolicySnapshot
from sandbox.spec import GIB, KIB, MIB

__all__ = [
    "ALL_TOOLS",
    "CallerPolicy",
    "CodeMode",
    "DEFAULT_REQUIRED_LAYERS",
    "DefaultLimits",
    "Executor",
    "FileLimits",
    "GIB",
    "HARD_CEILINGS",
    "INPUT_BYTES_CEILING",
    "INPUT_DEPTH_CEILING",
    "INPUT_FILES_CEILING",
    "KIB",
    "LAYERS",
    "LIMIT_DEFAULTS",
    "LIMIT_FLOORS",
    "LayerName",
    "MAX_ARGV_CODE_BYTES",
    "MAX_CODE_BYTES_CEILING",
    "MAX_CONCURRENT_RUNS_CEILING",
    "MAX_POLICY_FILE_BYTES",
    "MIB",
    "NetworkPolicy",
    "NetworkSetting",
    "OUTPUT_BYTES_CEILING",
    "OUTPUT_FILES_CEILING",
    "PACKAGE_ENVS_CEILING",
    "PRELOAD_MODULES_CEILING",
    "PYTHON_PLACEHOLDER",
    "PackageEnvPolicy",
    "PolicyContext",
    "PolicyDocument",
    "PolicyError",
    "PolicyModel",
    "PolicyProblem",
    "PolicySnapshot",
    "QUEUE_LENGTH_CEILING",
    "QUEUE_WAIT_SECONDS_CEILING",
    "SandboxTable",
    "ToolLimits",
    "ToolPolicy",
    "deployment_context",
    "load_policy",
    "parse_policy",
    "read_policy_bytes",
]
