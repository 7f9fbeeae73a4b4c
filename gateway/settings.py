"""Settings of the model gateway."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from pagi.settings import CommonSettings

DEFAULT_MODELS: dict[str, str] = {"local": "pagi-local-planner-1", "openai": "gpt-4o-mini"}


class GatewaySettings(CommonSettings):
    """Which model backend serves plans, and the gateway's limits."""

    model_backend: Literal["local", "openai"] = Field(
        "local", description="`local` (built-in deterministic planner) or `openai`."
    )
    model_base_url: str = Field(
        "https://api.openai.com/v1",
        description="Base URL of an OpenAI-compatible server, up to and including /v1.",
    )
    model_name: str | None = Field(None, description="Model to ask; a per-backend default.")
    model_api_key: SecretStr | None = Field(None, description="API key of the model server.")
    model_api_key_file: Path | None = Field(None, description="File holding the API key.")

    pagi_gateway_max_prompt_bytes: int = Field(32 * 1024, ge=1, le=1024 * 1024)
    pagi_gateway_max_conversation_bytes: int = Field(
        512 * 1024,
        ge=1024,
        le=4 * 1024 * 1024,
        description="Largest Decide request (the conversation and the tools, encoded).",
    )
    pagi_gateway_default_max_steps: int = Field(8, ge=1, le=100)
    pagi_gateway_max_steps: int = Field(20, ge=1, le=100)
    pagi_gateway_max_concurrent_calls: int = Field(8, ge=1, le=1024)
    pagi_gateway_queue_timeout_seconds: float = Field(0.5, ge=0, le=60)
    pagi_gateway_max_deadline_seconds: float = Field(
        30.0, gt=0, le=600, description="Most time one call may take (also for calls without one)."
    )
    pagi_gateway_max_retries: int = Field(3, ge=0, le=10)
    pagi_gateway_retry_base_seconds: float = Field(0.2, ge=0, le=10)
    pagi_gateway_retry_cap_seconds: float = Field(2.0, ge=0, le=60)
    pagi_gateway_metrics_port: int = Field(
        9464,
        ge=0,
        le=65535,
        description="HTTP port serving the gateway's /metrics (and /health); 0 turns it off.",
    )
    pagi_gateway_allowed_callers: str = Field(
        "agent,operator", description="Comma-separated identities allowed to call the gateway."
    )

    @field_validator("model_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("MODEL_BASE_URL must start with http:// or https://")
        return value.rstrip("/")

    @property
    def model(self) -> str:
        """The model name in use (MODEL_NAME or the backend's default)."""
        return self.model_name or DEFAULT_MODELS[self.model_backend]

    @property
    def allowed_callers(self) -> frozenset[str]:
        """Identities whose tokens may call the gateway's methods."""
        return frozenset(
            name.strip() for name in self.pagi_gateway_allowed_callers.split(",") if name.strip()
        )

    def api_key(self) -> str | None:
        """The model server's API key: MODEL_API_KEY, else the file's content.

        Raises ``RuntimeError`` (without the key) when the file cannot be read.
        """
        if self.model_api_key is not None and self.model_api_key.get_secret_value():
            return self.model_api_key.get_secret_value()
        if self.model_api_key_file is None:
            return None
        try:
            key = self.model_api_key_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise RuntimeError(
                f"cannot read MODEL_API_KEY_FILE {self.model_api_key_file}: "
                f"{getattr(exc, 'strerror', None) or type(exc).__name__}"
            ) from None
        return key or None
