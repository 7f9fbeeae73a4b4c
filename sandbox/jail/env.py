"""Environment: exactly what the spec lists, nothing inherited from the service."""

from __future__ import annotations

DEFAULT_ENV: dict[str, str] = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


def tool_environment(listed: dict[str, str], home: str) -> dict[str, str]:
    """The tool's whole environment: defaults, HOME at the workdir, then the spec's entries."""
    environment = dict(DEFAULT_ENV)
    environment["HOME"] = home
    environment.update(listed)
    return environment
