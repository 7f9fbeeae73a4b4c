"""One validated policy version, immutable once loaded, and what it answers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sandbox.egress.config import EgressPolicy
from sandbox.policy.schema import ALL_TOOLS, PolicyDocument, ToolPolicy
from sandbox.spec import RunLimits


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
