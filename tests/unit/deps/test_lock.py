"""The lock in requirements/ covers pyproject.toml, and .venv is what it says."""

from __future__ import annotations

import tomllib
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from testing.lockfile import DEV_LOCK, REPO, RUNTIME_LOCK, Pin, read_lock

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
RUNTIME = [Requirement(text) for text in PYPROJECT["project"]["dependencies"]]
TEST = [Requirement(text) for text in PYPROJECT["project"]["optional-dependencies"]["test"]]
BUILD = [
    Requirement(line)
    for line in (REPO / "requirements" / "build.in").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]
DEV_PINS = read_lock(DEV_LOCK)
RUNTIME_PINS = read_lock(RUNTIME_LOCK)


def _check_covered(requirements: list[Requirement], pins: dict[str, Pin], lock: str) -> list[str]:
    problems = []
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        pin = pins.get(name)
        if pin is None:
            problems.append(f"{requirement} is missing from {lock}")
        elif not requirement.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{lock} pins {name}=={pin.version}, outside {requirement}")
        for extra in requirement.extras:
            # An extra's own dependencies must be locked too (python-jose[cryptography]).
            for needed in metadata.requires(requirement.name) or ():
                needed_requirement = Requirement(needed)
                marker = needed_requirement.marker
                if marker is not None and marker.evaluate({"extra": extra}):
                    if canonicalize_name(needed_requirement.name) not in pins:
                        problems.append(f"{needed_requirement.name} ({requirement}) not in {lock}")
    return problems


def test_the_dev_lock_covers_every_dependency_within_its_range() -> None:
    assert _check_covered(RUNTIME + TEST + BUILD, DEV_PINS, "requirements/dev.txt") == []


def test_the_runtime_lock_covers_the_runtime_within_its_range() -> None:
    assert _check_covered(RUNTIME + BUILD, RUNTIME_PINS, "requirements/runtime.txt") == []


def test_both_locks_pin_the_same_versions() -> None:
    differ = {
        name: (pin.version, DEV_PINS[name].version if name in DEV_PINS else None)
        for name, pin in RUNTIME_PINS.items()
        if name not in DEV_PINS or DEV_PINS[name].version != pin.version
    }
    assert differ == {}, "runtime.txt and dev.txt disagree (runtime, dev): run `make lock`"


def test_test_tools_stay_out_of_the_image_lock() -> None:
    test_only = {canonicalize_name(r.name) for r in TEST} - {
        canonicalize_name(r.name) for r in RUNTIME
    }
    # Some test tools are also dependencies of runtime packages; those may stay.
    direct_test_tools = {"pytest", "hypothesis", "ruff", "schemathesis", "uv"} & test_only
    assert direct_test_tools and not direct_test_tools & set(RUNTIME_PINS)


@pytest.mark.parametrize("pins", [DEV_PINS, RUNTIME_PINS], ids=["dev", "runtime"])
def test_every_pin_is_exact_and_hash_checked(pins: dict[str, Pin]) -> None:
    assert pins, "an empty lock"
    for pin in pins.values():
        assert pin.hashes, f"{pin.name} has no --hash"
        assert all(h.startswith("sha256:") and len(h) == 7 + 64 for h in pin.hashes), pin.name


def test_the_installed_environment_is_the_lock() -> None:
    mismatched = {}
    for pin in DEV_PINS.values():
        if not pin.applies():
            continue
        try:
            installed = metadata.version(pin.name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != pin.version:
            mismatched[pin.name] = (pin.version, installed)
    assert mismatched == {}, "(locked, installed) differ: run `make install`"


def test_the_lock_reader_refuses_what_is_not_a_pin(tmp_path) -> None:
    lock = tmp_path / "lock.txt"
    lock.write_text("fastapi>=0.115 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    with pytest.raises(ValueError, match="not an exact pin"):
        read_lock(lock)
    lock.write_text("a==1 --hash=sha256:" + "0" * 64 + "\nA==2 --hash=sha256:" + "1" * 64 + "\n")
    with pytest.raises(ValueError, match="pinned twice"):
        read_lock(lock)
