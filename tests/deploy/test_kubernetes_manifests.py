"""deploy/kubernetes as a cluster operator receives it, checked offline.

Every overlay (and each with the optional components) is rendered by
kustomize and validated against the Kubernetes API schemas of each supported
version (kubernetes-validate ships them; strict: an unknown or misspelt field
is an error, as the API server's strict field validation makes it). Then what
the schemas cannot say: the hardening of every workload, the probes, budgets
and autoscalers, each service holding only its own private key, and network
policies that let each service reach exactly what the contracts say.
"""

from __future__ import annotations

import copy
import subprocess
import time
from itertools import product
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.manifests import (
    COMPONENTS,
    CONTRACT_PORTS,
    KUBECTL,
    KUBERNETES,
    REPO,
    SERVICES,
    VARIANTS,
    Rendered,
    containers,
    pod_spec,
)

SUPPORTED_VERSIONS = ("1.33.0", "1.34.0", "1.35.0", "1.36.0", "1.37.0")
"""User namespaces for pods are on by default from 1.33 (GA in 1.36)."""

SANDBOX_SECCOMP_PROFILE = "pagi/sandbox.json"
"""Where deploy/seccomp/sandbox.json goes, under each node's kubelet seccomp directory."""

STATELESS = ("gateway", "agent", "bff", "sandbox")

# Who may open a connection to whom, by the contracts (README, contracts.md).
ALLOWED_CALLS = {
    ("bff", "agent", 8000),
    ("bff", "sandbox", 8001),
    ("bff", "memory", 8003),
    ("agent", "gateway", 50051),
    ("agent", "bff", 8002),
    ("agent", "memory", 8003),
    ("agent", "sandbox", 8001),
}


def _validate_all(rendered: Rendered, version: str) -> list[str]:
    errors = []
    for item in rendered.objects:
        try:
            kubernetes_validate.validate(item, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{item['kind']}/{item['metadata']['name']}: {str(exc)[:400]}")
    return errors


@pytest.mark.parametrize(("variant", "version"), list(product(VARIANTS, SUPPORTED_VERSIONS)))
def test_manifests_follow_the_kubernetes_schemas(rendered, variant: str, version: str) -> None:
    errors = _validate_all(rendered[variant], version)
    assert not errors, "\n".join(errors)


def test_the_schema_check_refuses_a_misspelt_field(rendered) -> None:
    broken = copy.deepcopy(rendered["production"].get("Deployment", "sandbox"))
    security = pod_spec(broken)["containers"][0]["securityContext"]
    security["readOnlyRootFileSystem"] = security.pop("readOnlyRootFilesystem")
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFileSystem"):
        kubernetes_validate.validate(broken, SUPPORTED_VERSIONS[-1], strict=True)


# ----------------------------------------------------------------------- hardening


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_workload_is_hardened(rendered, variant: str) -> None:
    deployments = rendered[variant].of_kind("Deployment")
    assert sorted(d["metadata"]["name"] for d in deployments) == sorted(SERVICES)
    assert not [
        item["kind"]
        for item in rendered[variant].objects
        if item["kind"] in ("Pod", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicaSet")
    ], "a workload kind these checks do not cover"
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        spec = pod_spec(deployment)
        pod = spec["securityContext"]
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["enableServiceLinks"] is False, name
        for field in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(field), (name, field)
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] != 0 and pod["runAsGroup"] != 0, name
        assert all("hostPath" not in volume for volume in spec["volumes"]), name
        seccomp = pod["seccompProfile"]
        if name == "sandbox":
            assert seccomp == {"type": "Localhost", "localhostProfile": SANDBOX_SECCOMP_PROFILE}
            assert spec["hostUsers"] is False
        else:
            assert seccomp == {"type": "RuntimeDefault"}, name
        for container in containers(deployment):
            where = f"{name}/{container['name']}"
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"] == {"drop": ["ALL"]}, where
            assert not security.get("privileged"), where
            assert security.get("runAsUser", pod["runAsUser"]) != 0, where
            assert "seccompProfile" not in security, f"{where} overrides the pod's seccomp"
            if where == "sandbox/sandbox":
                assert security["procMount"] == "Unmasked"
            else:
                assert "procMount" not in security, where
            if where == "sandbox/sandbox" and variant == "evaluation+options":
                assert security["appArmorProfile"] == {"type": "Unconfined"}
            else:
                assert "appArmorProfile" not in security, where
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[kind]), (where, kind)


def test_every_component_is_rendered_by_some_variant() -> None:
    present = sorted(path.name for path in (KUBERNETES / "components").iterdir())
    assert present == sorted(COMPONENTS)
    used = (KUBERNETES / "overlays" / "production" / "kustomization.yaml").read_text()
    used += (Path(__file__).with_name("conftest.py")).read_text()
    assert all(name in used for name in COMPONENTS)


def test_the_sandbox_profile_the_manifests_name_is_the_one_compose_uses() -> None:
    readme = (KUBERNETES / "README.md").read_text()
    assert f"/var/lib/kubelet/seccomp/{SANDBOX_SECCOMP_PROFILE}" in readme
    assert "deploy/seccomp/sandbox.json" in readme
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    options = compose["services"]["sandbox"]["security_opt"]
    assert "seccomp=./deploy/seccomp/sandbox.json" in options


def test_runtime_class_is_set_only_by_its_components(rendered) -> None:
    def runtime_class(variant: str) -> str | None:
        return pod_spec(rendered[variant].get("Deployment", "sandbox")).get("runtimeClassName")

    assert runtime_class("production") is None
    assert runtime_class("evaluation") is None
    assert runtime_class("evaluation+options") == "gvisor"
    assert runtime_class("production+kata") == "kata"
    for variant in VARIANTS:
        for deployment in rendered[variant].of_kind("Deployment"):
            if deployment["metadata"]["name"] != "sandbox":
                assert "runtimeClassName" not in pod_spec(deployment)


# --------------------------------------------------------------- probes and ports


def _probe_target(probe: dict[str, Any], container: dict[str, Any]) -> tuple[str, int]:
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    if "grpc" in probe:
        return "grpc", probe["grpc"]["port"]
    if "httpGet" in probe:
        port = probe["httpGet"]["port"]
        return probe["httpGet"]["path"], ports.get(port, port)
    return "exec", 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_probes_and_ports_follow_the_contract(rendered, variant: str) -> None:
    env = rendered[variant].get("ConfigMap", "pagi-env")["data"]
    for name in SERVICES:
        deployment = rendered[variant].get("Deployment", name)
        main = next(c for c in pod_spec(deployment)["containers"] if c["name"] == name)
        assert main["command"] == ["pagi", "serve", name]
        assert [p["containerPort"] for p in main["ports"]] == [CONTRACT_PORTS[name]]
        expected = ("grpc", 50051) if name == "gateway" else ("/health", CONTRACT_PORTS[name])
        assert _probe_target(main["livenessProbe"], main) == expected, name
        assert _probe_target(main["startupProbe"], main) == expected, name
        if name == "sandbox":
            # Readiness reads /health's isolation report (ready.py, tested on its own).
            assert main["readinessProbe"]["exec"]["command"] == [
                "python",
                "-I",
                "/etc/pagi/probes/ready.py",
            ]
        else:
            assert _probe_target(main["readinessProbe"], main) == expected, name
        service = rendered[variant].get("Service", name)
        assert service["spec"]["selector"] == {"app.kubernetes.io/name": name}
        assert [p["port"] for p in service["spec"]["ports"]] == [CONTRACT_PORTS[name]]
    # Every service is found by its Service's name on its contract port.
    assert env["MODEL_GATEWAY_GRPC_HOST"] == "gateway"
    assert env["MODEL_GATEWAY_GRPC_PORT"] == "50051"
    for name, variable in (
        ("agent", "PY_AGENT_URL"),
        ("sandbox", "RUST_SANDBOX_URL"),
        ("bff", "GO_BFF_URL"),
        ("memory", "MEMORY_URL"),
    ):
        assert env[variable] == f"http://{name}:{CONTRACT_PORTS[name]}"


def test_the_environment_is_the_one_compose_gives_its_containers(rendered) -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    in_compose = {k: str(v) for k, v in compose["x-environment"].items()}
    # compose passes these through from the host with a default: compare the defaults.
    in_compose = {
        key: value.split(":-", 1)[1].rstrip("}") if value.startswith("${") else value
        for key, value in in_compose.items()
    }
    assert rendered["production"].get("ConfigMap", "pagi-env")["data"] == in_compose


# ------------------------------------------------------- budgets and autoscalers


@pytest.mark.parametrize("variant", VARIANTS)
def test_budgets_and_autoscalers(rendered, variant: str) -> None:
    manifests = rendered[variant]
    postgres = any(
        env["name"] == "MEMORY_DATABASE_URL"
        for env in pod_spec(manifests.get("Deployment", "memory"))["containers"][0].get("env", [])
    )
    for name in SERVICES:
        budget = manifests.get("PodDisruptionBudget", name)
        assert budget["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": name}}
        assert budget["spec"]["maxUnavailable"] == 1
        deployment = manifests.get("Deployment", name)
        scaler = manifests.find("HorizontalPodAutoscaler", name)
        scaled = name in STATELESS or (name == "memory" and postgres)
        if scaled:
            assert scaler is not None, name
            assert scaler["spec"]["scaleTargetRef"] == {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": name,
            }
            assert 1 <= scaler["spec"]["minReplicas"] <= scaler["spec"]["maxReplicas"]
            # The autoscaler owns the count: a fixed one would fight it on every apply.
            assert "replicas" not in deployment["spec"], name
            assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        else:
            # SQLite: one replica owning its volume, the old pod gone before the new one opens it.
            assert scaler is None, name
            assert deployment["spec"]["replicas"] == 1
            assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    if variant.startswith("production"):
        assert postgres
        assert manifests.find("PersistentVolumeClaim", "memory-data") is None
        for name in SERVICES:
            assert manifests.get("HorizontalPodAutoscaler", name)["spec"]["minReplicas"] >= 2


def test_the_sandbox_outlives_its_longest_run_when_stopped(rendered) -> None:
    spec = pod_spec(rendered["production"].get("Deployment", "sandbox"))
    assert spec["terminationGracePeriodSeconds"] > 60, "the policy's hard wall ceiling is 60 s"


# ------------------------------------------------------------------------- keys


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_service_mounts_only_its_own_key_secret(rendered, variant: str) -> None:
    for name in SERVICES:
        spec = pod_spec(rendered[variant].get("Deployment", name))
        secrets = {
            volume["name"]: volume["secret"]["secretName"]
            for volume in spec["volumes"]
            if "secret" in volume
        }
        assert secrets["keys"] == f"pagi-keys-{name}"
        others = set(secrets.values()) - {f"pagi-keys-{name}"}
        assert all(not other.startswith("pagi-keys-") for other in others), (name, others)
        mounts = {
            mount["name"]: mount
            for c in containers(rendered[variant].get("Deployment", name))
            for mount in c.get("volumeMounts", [])
        }
        assert mounts["keys"]["mountPath"] == "/etc/pagi/keys"
        assert mounts["keys"]["readOnly"] is True


def test_keys_to_secrets_gives_each_service_its_own_private_key_only(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    created = subprocess.run(
        [str(KUBECTL.with_name("pagi")), "keys", "init", "--dir", str(keys)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    result = subprocess.run(
        ["sh", str(KUBERNETES / "keys-to-secrets.sh"), str(keys)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"KUBECTL": str(KUBECTL), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    secrets = [item for item in yaml.safe_load_all(result.stdout) if item]
    public = {f"{name}.pub" for name in (*SERVICES, "operator")}
    assert sorted(s["metadata"]["name"] for s in secrets) == sorted(
        f"pagi-keys-{name}" for name in SERVICES
    )
    for secret in secrets:
        kubernetes_validate.validate(secret, SUPPORTED_VERSIONS[-1], strict=True)
        name = secret["metadata"]["name"].removeprefix("pagi-keys-")
        assert set(secret["data"]) == public | {f"{name}.key"}, name
    missing = subprocess.run(
        ["sh", str(KUBERNETES / "keys-to-secrets.sh"), str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        timeout=60,
        env={"KUBECTL": str(KUBECTL), "PATH": "/usr/bin:/bin"},
    )
    assert missing.returncode != 0 and "pagi keys init" in missing.stderr


# ------------------------------------------------------------- network policies


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        present = labels.get(expression["key"])
        operator = expression["operator"]
        if operator == "In" and present not in expression["values"]:
            return False
        if operator == "NotIn" and present in expression["values"]:
            return False
        if operator == "Exists" and present is None:
            return False
        if operator == "DoesNotExist" and present is not None:
            return False
    return True


def _peer_allows(peers: list[dict[str, Any]] | None, labels: dict[str, str] | None) -> bool:
    """Whether a rule's peers admit a pod of this namespace with ``labels`` (None: outside)."""
    if not peers:  # no `from`/`to`: every peer
        return True
    for peer in peers:
        if "ipBlock" in peer:
            if labels is None:
                return True
            continue
        if "namespaceSelector" in peer:
            continue  # another namespace: never a PAGI pod of this one
        if labels is not None and _selects(peer["podSelector"], labels):
            return True
    return False


def _port_allows(ports: list[dict[str, Any]] | None, port: int) -> bool:
    return not ports or any(p.get("port") == port and p["protocol"] == "TCP" for p in ports)


def _allowed(
    policies: list[dict[str, Any]],
    direction: str,
    pod: dict[str, str],
    peer: dict[str, str] | None,
    port: int,
) -> bool:
    """NetworkPolicy semantics: isolated in a direction once selected; rules add up."""
    kind = "Ingress" if direction == "ingress" else "Egress"
    field = "from" if direction == "ingress" else "to"
    selecting = [
        p
        for p in policies
        if _selects(p["spec"]["podSelector"], pod) and kind in p["spec"]["policyTypes"]
    ]
    if not selecting:
        return True
    return any(
        _peer_allows(rule.get(field), peer) and _port_allows(rule.get("ports"), port)
        for policy in selecting
        for rule in policy["spec"].get(direction, [])
    )


def _labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "pagi"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_network_policies_allow_exactly_the_contract_calls(rendered, variant: str) -> None:
    manifests = rendered[variant]
    policies = manifests.of_kind("NetworkPolicy")
    for deployment in manifests.of_kind("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels == _labels(deployment["metadata"]["name"])
    allowed = set()
    for source, target in product(SERVICES, SERVICES):
        for port in set(CONTRACT_PORTS.values()):
            out = _allowed(policies, "egress", _labels(source), _labels(target), port)
            inbound = _allowed(policies, "ingress", _labels(target), _labels(source), port)
            if out and inbound and port == CONTRACT_PORTS[target]:
                allowed.add((source, target, port))
            if source != target:
                assert not (out and inbound and port != CONTRACT_PORTS[target]), (
                    source,
                    target,
                    port,
                )
    assert allowed == ALLOWED_CALLS
    # From outside the namespace, only the bff (the frontend's entry point).
    for name in SERVICES:
        reachable = _allowed(policies, "ingress", _labels(name), None, CONTRACT_PORTS[name])
        assert reachable == (name == "bff"), name


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_sandbox_pod_has_no_egress_at_all(rendered, variant: str) -> None:
    policies = rendered[variant].of_kind("NetworkPolicy")
    sandbox = _labels("sandbox")
    selecting = [p for p in policies if _selects(p["spec"]["podSelector"], sandbox)]
    assert selecting, "no policy isolates the sandbox"
    assert any("Egress" in p["spec"]["policyTypes"] for p in selecting)
    rules = [rule for p in selecting for rule in p["spec"].get("egress", [])]
    egress_component = variant == "production+kata"
    if not egress_component:
        assert rules == [], f"the sandbox may open connections: {rules}"
    for port in (53, 80, 443, 5432, *CONTRACT_PORTS.values()):
        # Never PAGI's own services, whatever the component opens.
        for name in SERVICES:
            assert not _allowed(policies, "egress", sandbox, _labels(name), port)
        public = _allowed(policies, "egress", sandbox, None, port)
        assert public == (egress_component and port in (80, 443)), port
    if egress_component:
        # The egress proxy's outer bound: public addresses only.
        blocks = [
            peer["ipBlock"] for rule in rules for peer in rule.get("to", []) if "ipBlock" in peer
        ]
        assert blocks and all(block["cidr"] == "0.0.0.0/0" for block in blocks)
        for block in blocks:
            assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= set(
                block["except"]
            )


@pytest.mark.parametrize("variant", VARIANTS)
def test_outside_the_cluster_only_what_a_component_opens(rendered, variant: str) -> None:
    policies = rendered[variant].of_kind("NetworkPolicy")
    options = variant == "evaluation+options"
    postgres = variant != "evaluation"
    for name in SERVICES:
        for port in (443, 5432, 80):
            reachable = _allowed(policies, "egress", _labels(name), None, port)
            expected = (
                (name == "gateway" and port == 443 and options)
                or (name == "memory" and port == 5432 and postgres)
                or (name == "sandbox" and port in (80, 443) and variant == "production+kata")
            )
            assert reachable == expected, (name, port)
    assert rendered[variant].get("NetworkPolicy", "default-deny")["spec"] == {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
    }


# ------------------------------------------------------------------ the policy


def test_the_policy_config_map_is_the_default_policy_under_a_fixed_name(rendered) -> None:
    for variant in VARIANTS:
        config = rendered[variant].get("ConfigMap", "pagi-sandbox-policy")
        # A hash suffix would roll the pods on every edit instead of reloading the policy.
        assert config["metadata"]["name"] == "pagi-sandbox-policy"
        assert config["data"] == {"sandbox.toml": (REPO / "policies/sandbox.toml").read_text()}
    spec = pod_spec(rendered["production"].get("Deployment", "sandbox"))
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "policy")
    # The directory, never a subPath: only a directory mount sees the kubelet's updates.
    assert mount["mountPath"] == "/etc/pagi/policies" and "subPath" not in mount
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["PAGI_SANDBOX_POLICY"] == "/etc/pagi/policies/sandbox.toml"


# -------------------------------------------------------------- the audit file


def test_the_audit_rotation_keeps_the_file_bounded(rendered, tmp_path: Path) -> None:
    spec = pod_spec(rendered["production"].get("Deployment", "sandbox"))
    sidecar = next(c for c in spec["containers"] if c["name"] == "audit-rotate")
    sandbox = next(c for c in spec["containers"] if c["name"] == "sandbox")
    env = {item["name"]: item["value"] for item in sidecar["env"]}
    sandbox_env = {item["name"]: item.get("value") for item in sandbox["env"]}
    assert env["AUDIT_FILE"] == sandbox_env["PAGI_SANDBOX_AUDIT_LOG"]
    audit_volume = next(v for v in spec["volumes"] if v["name"] == "audit")
    limit = int(audit_volume["emptyDir"]["sizeLimit"].removesuffix("Mi")) * 2**20
    assert 2 * int(env["AUDIT_MAX_BYTES"]) < limit, "two generations must fit the volume"

    audit = tmp_path / "sandbox-audit.jsonl"
    audit.write_bytes(b"x" * 2000)
    process = subprocess.Popen(
        sidecar["command"],
        env={
            **env,
            "AUDIT_FILE": str(audit),
            "AUDIT_MAX_BYTES": "1000",
            "AUDIT_CHECK_SECONDS": "0.1",
            "PATH": "/usr/bin:/bin",
        },
    )
    try:
        deadline = time.monotonic() + 10
        while audit.exists():
            assert time.monotonic() < deadline, "the audit file was not rotated"
            time.sleep(0.05)
        assert (tmp_path / "sandbox-audit.jsonl.1").stat().st_size == 2000
        audit.write_bytes(b"y" * 10)  # the sandbox's next record, in a new file: kept
        time.sleep(0.5)
        assert audit.read_bytes() == b"y" * 10
    finally:
        process.terminate()
        # TERM ends it at once (a shell as PID 1 would otherwise wait out the grace period).
        assert process.wait(timeout=5) == 0
