"""compose.yaml against the Compose Specification and PAGI's contract.

The container stack itself is brought up by ``scripts/compose-smoke.sh``;
these checks need no container engine and run with the rest of the suite.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pagi import SERVICES
from pagi.run_request import RunCeilingSettings
from pagi.settings import CommonSettings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "compose.yaml"
CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")

CONTRACT_PORTS = {"agent": 8000, "sandbox": 8001, "bff": 8002, "memory": 8003, "gateway": 50051}
PORT_VARIABLES = {
    "agent": "PY_AGENT_PORT",
    "sandbox": "RUST_SANDBOX_PORT",
    "bff": "GO_BFF_PORT",
    "memory": "MEMORY_MOCK_PORT",
    "gateway": "MODEL_GATEWAY_GRPC_PORT",
}
URL_VARIABLES = {
    "agent": "PY_AGENT_URL",
    "sandbox": "RUST_SANDBOX_URL",
    "bff": "GO_BFF_URL",
    "memory": "MEMORY_URL",
}
SETTINGS_CLASSES = {
    "agent": "agent.settings:AgentSettings",
    "sandbox": "sandbox.settings:SandboxSettings",
    "bff": "bff.settings:BffSettings",
    "memory": "memory.settings:MemorySettings",
    "gateway": "gateway.settings:GatewaySettings",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """compose.yaml as the engines read it (YAML anchors and merge keys resolved)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def run_schema_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_file_follows_the_compose_specification() -> None:
    result = run_schema_check(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_a_misspelt_service_key(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE_FILE.read_text().replace("read_only: true", "readonly: true", 1))
    result = run_schema_check(broken)
    assert result.returncode != 0
    assert "readonly" in result.stdout + result.stderr


def test_every_service_of_the_contract_runs_its_own_command_once_it_has_keys(
    services: dict,
) -> None:
    for name in SERVICES:
        assert services[name]["command"] == ["pagi-wait-for-keys", "pagi", "serve", name]


def test_depends_on_names_defined_services_without_cycles(services: dict) -> None:
    graph = {name: set(spec.get("depends_on", {})) for name, spec in services.items()}
    for name, deps in graph.items():
        assert deps <= graph.keys(), f"{name} depends on undefined {deps - graph.keys()}"

    visiting: set[str] = set()
    done: set[str] = set()

    def visit(name: str) -> None:
        assert name not in visiting, f"dependency cycle through {name}"
        if name in done:
            return
        visiting.add(name)
        for dep in graph[name]:
            visit(dep)
        visiting.discard(name)
        done.add(name)

    for name in graph:
        visit(name)


def test_services_depend_on_healthy_services_never_on_the_one_shot_keys(services: dict) -> None:
    # podman does not restart a container whose declared dependency has exited,
    # so a dependency on `keys` would switch off `restart` for every service.
    for name in SERVICES:
        deps = services[name].get("depends_on", {})
        assert "keys" not in deps
        for dep, rule in deps.items():
            assert rule["condition"] == "service_healthy", (name, dep)
    assert set(services["bff"]["depends_on"]) == {"agent", "sandbox", "memory"}
    assert set(services["agent"]["depends_on"]) == {"gateway"}


@pytest.mark.parametrize("name", SERVICES)
def test_published_port_is_the_contract_port(services: dict, name: str) -> None:
    (mapping,) = services[name]["ports"]
    host_part, _, container_port = mapping.rpartition(":")
    assert int(container_port) == CONTRACT_PORTS[name]
    # The host port follows the contract variable, defaulting to the contract
    # port, on loopback unless the operator says otherwise.
    variable = PORT_VARIABLES[name]
    assert host_part.endswith(f"${{{variable}:-{CONTRACT_PORTS[name]}}}")
    assert host_part.startswith("${PAGI_PUBLISH_HOST:-127.0.0.1}:")


@pytest.mark.parametrize("name", SERVICES)
def test_environment_uses_contract_names_and_service_addresses(services: dict, name: str) -> None:
    env = services[name]["environment"]
    for service, variable in PORT_VARIABLES.items():
        assert env[variable] == str(CONTRACT_PORTS[service])
    for service, variable in URL_VARIABLES.items():
        assert env[variable] == f"http://{service}:{CONTRACT_PORTS[service]}"
    assert env["MODEL_GATEWAY_GRPC_HOST"] == "gateway"
    assert env["PAGI_BIND_HOST"] == "0.0.0.0"
    for variable in ("REQUEST_TIMEOUT_SECONDS", "MODEL_GATEWAY_GRPC_TIMEOUT_SECONDS", "LOG_LEVEL"):
        assert variable in env


@pytest.mark.parametrize("name", SERVICES)
def test_every_environment_variable_is_a_setting_of_the_service(services: dict, name: str) -> None:
    module_name, class_name = SETTINGS_CLASSES[name].split(":")
    settings_class = getattr(importlib.import_module(module_name), class_name)
    assert issubclass(settings_class, CommonSettings)
    known = set(settings_class.environment_variables().values())
    unknown = set(services[name]["environment"]) - known
    assert not unknown, f"{name} gets variables it does not read: {sorted(unknown)}"


# The only relaxation any container gets: the sandbox's jail mounts a fresh
# /proc from a user namespace, which the kernel refuses while the engine's
# masks cover parts of /proc (see compose.yaml).
SANDBOX_EXTRA_OPTIONS = {"systempaths=unconfined"}


@pytest.mark.parametrize("name", [*SERVICES, "keys", "cli"])
def test_every_container_is_hardened(services: dict, name: str) -> None:
    spec = services[name]
    assert spec.get("privileged") is not True
    assert spec["read_only"] is True
    assert spec["cap_drop"] == ["ALL"]
    assert "cap_add" not in spec
    assert "no-new-privileges:true" in spec["security_opt"]
    assert spec["init"] is True
    assert spec["user"] == "10001:10001"
    extra = SANDBOX_EXTRA_OPTIONS if name == "sandbox" else set()
    for option in spec["security_opt"]:
        if option in extra:
            continue
        assert "unconfined" not in option and "apparmor" not in option
        assert option == "no-new-privileges:true" or option.startswith("seccomp=./deploy/")
    if name == "sandbox":
        assert extra <= set(spec["security_opt"])
    assert re.fullmatch(r"\d+[kmg]", spec["mem_limit"])
    assert 0 < int(spec["pids_limit"]) <= 1024
    assert "network_mode" not in spec or spec["network_mode"] == "none"
    for mount in spec.get("volumes", []):
        assert "docker.sock" not in mount and "podman.sock" not in mount


@pytest.mark.parametrize("name", SERVICES)
def test_long_running_services_restart_and_have_healthchecks(services: dict, name: str) -> None:
    spec = services[name]
    assert spec["restart"] == "unless-stopped"
    test = spec["healthcheck"]["test"]
    assert test[0] == "CMD"
    probe = " ".join(test)
    if name == "gateway":
        assert "grpc_health" in probe and "127.0.0.1:50051" in probe
    else:
        assert f"127.0.0.1:{CONTRACT_PORTS[name]}/health" in probe


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_mounts_only_its_own_keys_read_only(services: dict, name: str) -> None:
    key_mounts = [m for m in services[name]["volumes"] if m.startswith("keys-")]
    assert key_mounts == [f"keys-{name}:/etc/pagi/keys:ro"]
    assert services[name]["environment"]["PAGI_KEYS_DIR"] == "/etc/pagi/keys"


def test_operator_cli_holds_only_the_operator_key(services: dict) -> None:
    cli = services["cli"]
    assert cli["profiles"] == ["tools"]
    assert cli["volumes"] == ["keys-operator:/etc/pagi/keys:ro"]


def test_keys_service_writes_every_identity_volume_without_network(services: dict) -> None:
    keys = services["keys"]
    assert keys["restart"] == "no"
    assert keys["network_mode"] == "none"
    targets = {m.split(":")[1] for m in keys["volumes"]}
    identities = [*SERVICES, "operator"]
    assert targets == {"/keys/all", *(f"/keys/{identity}" for identity in identities)}


def test_state_lives_in_named_volumes(compose: dict, services: dict) -> None:
    assert "memory-data:/var/lib/pagi/memory" in services["memory"]["volumes"]
    assert services["memory"]["environment"]["PAGI_MEMORY_DB"].startswith("/var/lib/pagi/memory/")
    assert "sandbox-audit:/var/lib/pagi/audit" in services["sandbox"]["volumes"]
    audit = services["sandbox"]["environment"]["PAGI_SANDBOX_AUDIT_LOG"]
    assert audit.startswith("/var/lib/pagi/audit/")
    assert {"memory-data", "sandbox-audit"} <= set(compose["volumes"])


def test_policy_directory_is_mounted_read_only(services: dict) -> None:
    sandbox = services["sandbox"]
    assert "${PAGI_POLICY_DIR:-./policies}:/etc/pagi/policies:ro" in sandbox["volumes"]
    assert sandbox["environment"]["PAGI_SANDBOX_POLICY"] == "/etc/pagi/policies/sandbox.toml"


@pytest.mark.parametrize("name", [*SERVICES, "keys", "cli"])
def test_every_container_gets_a_seccomp_profile_from_the_repository(
    services: dict, name: str
) -> None:
    options = services[name]["security_opt"]
    (profile,) = [o.split("=", 1)[1] for o in options if o.startswith("seccomp")]
    expected = "sandbox.json" if name == "sandbox" else "service.json"
    assert profile == f"./deploy/seccomp/{expected}"
    assert (REPO / profile).is_file()


def test_writable_scratch_space_is_tmpfs(services: dict) -> None:
    for name in SERVICES:
        assert any(t.startswith("/tmp:") for t in services[name]["tmpfs"])
    work_root = services["sandbox"]["environment"]["PAGI_SANDBOX_WORK_ROOT"]
    assert any(t.startswith(f"{work_root}:") for t in services["sandbox"]["tmpfs"])


def test_the_agent_and_the_bff_get_the_same_run_ceilings(services: dict) -> None:
    """The bff refuses a run request exactly as the agent would: same ceilings, or both defaults."""
    ceilings = set(RunCeilingSettings.environment_variables().values()) - set(
        CommonSettings.environment_variables().values()
    )
    assert ceilings, "the run ceilings have environment variables"
    agent, bff = (services[name]["environment"] for name in ("agent", "bff"))
    assert {name: agent.get(name) for name in ceilings} == {
        name: bff.get(name) for name in ceilings
    }
