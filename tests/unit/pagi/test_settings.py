"""Shared settings: fields named for the services, read from the contract's variables only."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pagi.settings import CommonSettings, describe_invalid_settings

CONTRACT_VARIABLES = {
    "agent_port": "PY_AGENT_PORT",
    "sandbox_port": "RUST_SANDBOX_PORT",
    "bff_port": "GO_BFF_PORT",
    "memory_port": "MEMORY_MOCK_PORT",
    "agent_url": "PY_AGENT_URL",
    "sandbox_url": "RUST_SANDBOX_URL",
    "bff_url": "GO_BFF_URL",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for variable in CONTRACT_VARIABLES.values():
        monkeypatch.delenv(variable, raising=False)
    for field in CONTRACT_VARIABLES:
        monkeypatch.delenv(field.upper(), raising=False)


@pytest.mark.parametrize(("field", "variable"), CONTRACT_VARIABLES.items())
def test_each_contract_variable_sets_its_field(monkeypatch, field, variable):
    value = "4242" if field.endswith("_port") else "http://127.0.0.1:4242"
    monkeypatch.setenv(variable, value)
    settings = CommonSettings(_env_file=None)
    assert str(getattr(settings, field)) == value
    assert CommonSettings.environment_variables()[field] == variable


@pytest.mark.parametrize("field", CONTRACT_VARIABLES)
def test_a_fields_own_name_is_not_read_from_the_environment(monkeypatch, field):
    # Kubernetes service links set SANDBOX_PORT=tcp://... for a service named sandbox.
    monkeypatch.setenv(field.upper(), "tcp://10.0.0.1:8001")
    default = CommonSettings.model_fields[field].default
    assert getattr(CommonSettings(_env_file=None), field) == default


def test_the_dot_env_file_uses_the_contract_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("GO_BFF_PORT=9102\nBFF_PORT=9999\nPY_AGENT_URL=http://a:1\n")
    settings = CommonSettings()
    assert settings.bff_port == 9102
    assert settings.agent_url == "http://a:1"


def test_a_bad_value_is_named_by_its_contract_variable(monkeypatch):
    monkeypatch.setenv("RUST_SANDBOX_PORT", "eighty")
    with pytest.raises(ValidationError) as error:
        CommonSettings(_env_file=None)
    message = describe_invalid_settings(error.value)
    assert "RUST_SANDBOX_PORT" in message
    assert "eighty" not in message


def test_port_of_and_url_of_read_the_renamed_fields(monkeypatch):
    monkeypatch.setenv("MEMORY_MOCK_PORT", "9103")
    monkeypatch.setenv("RUST_SANDBOX_URL", "http://127.0.0.1:9101/")
    settings = CommonSettings(_env_file=None)
    assert settings.port_of("memory") == 9103
    assert settings.url_of("sandbox") == "http://127.0.0.1:9101"


def test_every_other_field_reads_its_own_name():
    variables = CommonSettings.environment_variables()
    for field, variable in variables.items():
        if field not in CONTRACT_VARIABLES:
            assert variable == field.upper()
