"""PAGI's shared core: settings, logging, request ids, JWT auth, HTTP client."""

__version__ = "0.1.0"

SERVICES: tuple[str, ...] = ("gateway", "memory", "sandbox", "agent", "bff")
"""Every PAGI service, in start-up order (dependencies first)."""

IDENTITIES: tuple[str, ...] = (*SERVICES, "operator")
"""Every JWT identity: the five services plus the human operator."""
