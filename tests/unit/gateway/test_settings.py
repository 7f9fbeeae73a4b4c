"""Gateway settings: backend choice, API key sources, and the key staying secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.server import build_backend
from gateway.settings import GatewaySettings

KEY = "sk-settings-secret-123"


def settings(**values: object) -> GatewaySettings:
    return GatewaySettings(_env_file=None, **values)  # type: ignore[arg-type]


def test_two_env_vars_switch_to_an_openai_compatible_server(monkeypatch) -> None:
    monkeypatch.setenv("MODEL_BACKEND", "openai")
    monkeypatch.setenv("MODEL_BASE_URL", "http://10.0.0.5:8080/v1/")
    monkeypatch.setenv("MODEL_NAME", "llama3")
    chosen = GatewaySettings(_env_file=None)
    backend = build_backend(chosen)
    assert backend.name == "openai" and backend.model == "llama3"
    assert backend.describe()["upstream"] == "http://10.0.0.5:8080"


def test_local_is_the_default(monkeypatch) -> None:
    for name in ("MODEL_BACKEND", "MODEL_NAME"):
        monkeypatch.delenv(name, raising=False)
    backend = build_backend(GatewaySettings(_env_file=None))
    assert backend.name == "local" and backend.model == "pagi-local-planner-1"


def test_unknown_backend_and_bad_url_are_refused() -> None:
    with pytest.raises(ValidationError):
        settings(model_backend="llama")
    with pytest.raises(ValidationError):
        settings(model_base_url="ftp://models/v1")


def test_key_from_env_wins_and_stays_out_of_repr() -> None:
    chosen = settings(model_api_key=KEY)
    assert chosen.api_key() == KEY
    assert KEY not in repr(chosen) and KEY not in str(chosen.model_dump())


def test_key_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(f"  {KEY}\n")
    assert settings(model_api_key_file=path).api_key() == KEY


def test_unreadable_key_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(RuntimeError, match="cannot read MODEL_API_KEY_FILE"):
        settings(model_api_key_file=missing).api_key()


def test_no_key_at_all_is_allowed_for_local_servers() -> None:
    assert settings().api_key() is None
