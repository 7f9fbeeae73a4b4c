"""The Kubernetes manifests as a cluster would receive them: rendered by kustomize.

``kubectl kustomize`` (the kubectl of the lock, which embeds kustomize) renders
an overlay offline; nothing here talks to a cluster.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
KUBERNETES = REPO / "deploy" / "kubernetes"
KUBECTL = Path(sys.executable).with_name("kubectl")

OVERLAYS = ("evaluation", "production")
COMPONENTS = (
    "memory-postgresql",
    "openai-backend",
    "sandbox-apparmor-unconfined",
    "sandbox-egress",
    "sandbox-gvisor",
    "sandbox-kata",
)
VARIANTS = (*OVERLAYS, "evaluation+options", "production+kata")
"""What the checks render: each overlay, and each with its optional components."""
SERVICES = ("gateway", "agent", "bff", "memory", "sandbox")
CONTRACT_PORTS = {"agent": 8000, "sandbox": 8001, "bff": 8002, "memory": 8003, "gateway": 50051}


def kustomize(directory: Path) -> str:
    """The YAML stream ``kubectl kustomize DIRECTORY`` prints (AssertionError on failure)."""
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"kustomize {directory}: {result.stderr}"
    return result.stdout


@dataclass(frozen=True)
class Rendered:
    """The objects of one rendered kustomization."""

    name: str
    objects: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        """Every object of ``kind``."""
        return [item for item in self.objects if item["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        """The object of ``kind`` named ``name`` (a generated ConfigMap by its name's stem)."""
        found = [
            item
            for item in self.of_kind(kind)
            if item["metadata"]["name"] == name
            or (kind == "ConfigMap" and item["metadata"]["name"].rsplit("-", 1)[0] == name)
        ]
        assert len(found) == 1, f"{self.name}: {len(found)} {kind} named {name}"
        return found[0]

    def find(self, kind: str, name: str) -> dict[str, Any] | None:
        """The object of ``kind`` named ``name``, or None."""
        return next((item for item in self.of_kind(kind) if item["metadata"]["name"] == name), None)


def render(directory: Path, name: str | None = None) -> Rendered:
    """Render ``directory`` and parse its objects."""
    objects = [item for item in yaml.safe_load_all(kustomize(directory)) if item]
    return Rendered(name or directory.name, objects)


def with_components(workdir: Path, overlay: str, components: Iterable[str]) -> Rendered:
    """An overlay plus optional components, as an operator would list them."""
    workdir.mkdir(parents=True, exist_ok=True)

    def relative(path: Path) -> str:  # kustomize takes no absolute path
        return os.path.relpath(path, workdir)

    listed = "\n".join(f"  - {relative(KUBERNETES / 'components' / name)}" for name in components)
    (workdir / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {relative(KUBERNETES / 'overlays' / overlay)}\n"
        f"components:\n{listed}\n"
    )
    return render(workdir, f"{overlay}+{'+'.join(components)}")


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    """The pod template's spec of a Deployment."""
    return deployment["spec"]["template"]["spec"]


def containers(deployment: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every container of a Deployment's pods, init containers included."""
    spec = pod_spec(deployment)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]
