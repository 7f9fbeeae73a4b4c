"""Rendered manifests, shared by the checks of this folder (rendering costs ~1 s each)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.manifests import (
    KUBERNETES,
    OVERLAYS,
    Rendered,
    render,
    with_components,
)


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendered]:
    """Each overlay, and each with the optional components an operator may add."""
    work: Path = tmp_path_factory.mktemp("kustomize")
    variants = {name: render(KUBERNETES / "overlays" / name) for name in OVERLAYS}
    variants["evaluation+options"] = with_components(
        work / "options",
        "evaluation",
        ["memory-postgresql", "openai-backend", "sandbox-gvisor", "sandbox-apparmor-unconfined"],
    )
    variants["production+kata"] = with_components(
        work / "kata", "production", ["sandbox-kata", "sandbox-egress"]
    )
    return variants
