"""Settings shared by every service.

Each service defines one ``pydantic-settings`` class that subclasses
:class:`CommonSettings`. A field's environment variable is its name in upper
case, except where the contract's names describe the services differently
(``PY_AGENT_PORT``, ``RUST_SANDBOX_URL``, ...): those fields are named for
the service and read only the contract's variable (its ``validation_alias``).
A ``.env`` file in the working directory is read when present and real
environment variables win over it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_STATE_DIR = Path(".pagi")


class CommonSettings(BaseSettings):
    """What every service reads: where the others are, timeouts, keys, logs."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    # Ports each service listens on. The contract's variables keep the names of
    # an earlier design (a Rust sandbox, a Go bff, a memory mock): only they are
    # read, never the field's own name (Kubernetes sets SANDBOX_PORT and the like
    # itself where service links are on).
    agent_port: int = Field(8000, ge=1, le=65535, validation_alias="PY_AGENT_PORT")
    sandbox_port: int = Field(8001, ge=1, le=65535, validation_alias="RUST_SANDBOX_PORT")
    bff_port: int = Field(8002, ge=1, le=65535, validation_alias="GO_BFF_PORT")
    memory_port: int = Field(8003, ge=1, le=65535, validation_alias="MEMORY_MOCK_PORT")
    model_gateway_grpc_port: int = Field(50051, ge=1, le=65535)

    # Where each service is reached.
    agent_url: str = Field("http://127.0.0.1:8000", validation_alias="PY_AGENT_URL")
    sandbox_url: str = Field("http://127.0.0.1:8001", validation_alias="RUST_SANDBOX_URL")
    bff_url: str = Field("http://127.0.0.1:8002", validation_alias="GO_BFF_URL")
    memory_url: str = "http://127.0.0.1:8003"
    model_gateway_grpc_host: str = "127.0.0.1"

    request_timeout_seconds: float = Field(2.0, gt=0, le=600)
    model_gateway_grpc_timeout_seconds: float = Field(5.0, gt=0, le=600)
    log_level: str = "info"

    # PAGI's own settings.
    pagi_bind_host: str = Field("127.0.0.1", description="Address every service binds to.")
    pagi_state_dir: Path = Field(DEFAULT_STATE_DIR, description="Keys, databases, audit log.")
    pagi_keys_dir: Path | None = Field(None, description="Defaults to PAGI_STATE_DIR/keys.")
    pagi_metrics_token_file: Path | None = Field(
        None,
        description="When set, GET /metrics needs `Authorization: Bearer <the file's content>`.",
    )
    pagi_operators: str = Field(
        "operator",
        description="Comma-separated people (and identities) with the operator role: they"
        " see every agent run and may read the sandbox's audit log.",
    )

    @classmethod
    def environment_variables(cls) -> dict[str, str]:
        """Each field's environment variable, by field name (its alias, else its name)."""
        return {
            name: (
                field.validation_alias if isinstance(field.validation_alias, str) else name
            ).upper()
            for name, field in cls.model_fields.items()
        }

    @property
    def keys_dir(self) -> Path:
        """The directory holding every identity's key pair."""
        return self.pagi_keys_dir or self.pagi_state_dir / "keys"

    @property
    def operators(self) -> frozenset[str]:
        """The identities and people with the operator role."""
        return frozenset(name.strip() for name in self.pagi_operators.split(",") if name.strip())

    def metrics_token(self) -> str | None:
        """The scrape token ``/metrics`` asks for, None when it is open.

        Raises ``RuntimeError`` (without the token) when the file cannot be
        read or is empty: a service told to protect ``/metrics`` does not
        start with it open.
        """
        path = self.pagi_metrics_token_file
        if path is None:
            return None
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise RuntimeError(f"cannot read PAGI_METRICS_TOKEN_FILE {path}: {reason}") from None
        if not token or not token.isascii() or not token.isprintable():
            raise RuntimeError(
                f"PAGI_METRICS_TOKEN_FILE {path} must hold one printable ASCII token"
            )
        return token

    @property
    def gateway_target(self) -> str:
        """The gRPC target (host:port) of the model gateway."""
        host = self.model_gateway_grpc_host
        if ":" in host and not host.startswith("["):
            return host  # already host:port
        return f"{host}:{self.model_gateway_grpc_port}"

    def port_of(self, service: str) -> int:
        """The port a service listens on, by service name."""
        return {
            "agent": self.agent_port,
            "sandbox": self.sandbox_port,
            "bff": self.bff_port,
            "memory": self.memory_port,
            "gateway": self.model_gateway_grpc_port,
        }[service]

    def url_of(self, service: str) -> str:
        """The base URL of an HTTP service, by service name."""
        return {
            "agent": self.agent_url,
            "sandbox": self.sandbox_url,
            "bff": self.bff_url,
            "memory": self.memory_url,
        }[service].rstrip("/")


SettingsT = TypeVar("SettingsT", bound=CommonSettings)


def describe_invalid_settings(error: ValidationError) -> str:
    """One line per bad setting, named by its environment variable, without its value.

    Values are left out because one of them may be a secret (an API key).
    """
    lines = []
    for problem in error.errors(include_input=False, include_url=False):
        name = "_".join(str(part) for part in problem["loc"]).upper() or "settings"
        lines.append(f"  {name}: {problem['msg']}")
    return "\n".join(lines)


def load_settings(service: str, settings_class: type[SettingsT]) -> SettingsT:
    """The service's settings; on invalid ones, say which and exit 2 (no traceback)."""
    try:
        return settings_class()
    except ValidationError as exc:
        print(f"{service}: invalid settings:\n{describe_invalid_settings(exc)}", file=sys.stderr)
        sys.exit(2)
