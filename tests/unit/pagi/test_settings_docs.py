"""docs/settings.md against the settings classes: every variable listed, with its default."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from pagi.settings import CommonSettings
from testing import REPO

SETTINGS_CLASSES = (
    "agent.settings:AgentSettings",
    "bff.settings:BffSettings",
    "gateway.settings:GatewaySettings",
    "memory.settings:MemorySettings",
    "sandbox.settings:SandboxSettings",
)
SETTINGS_DOC = REPO / "docs" / "settings.md"
TABLES = (
    SETTINGS_DOC,
    REPO / "docs" / "agent.md",
    REPO / "docs" / "console.md",
    REPO / "gateway" / "README.md",
)
"""Every table of settings, with the defaults it states."""
READ_ELSEWHERE = frozenset({"OTEL_EXPORTER_OTLP_ENDPOINT"})
"""Variables the docs list that no settings class reads (the OpenTelemetry SDK reads this one)."""
LITERAL = re.compile(r"^`?[\w.:/,-]+`?$")


def settings_classes() -> list[type[CommonSettings]]:
    classes = []
    for spec in SETTINGS_CLASSES:
        module, name = spec.split(":")
        classes.append(getattr(importlib.import_module(module), name))
    return classes


def variables() -> dict[str, object]:
    """Every variable a service reads, with its default."""
    found: dict[str, object] = {}
    for settings_class in settings_classes():
        for field, variable in settings_class.environment_variables().items():
            found[variable] = settings_class.model_fields[field].default
    return found


def rows(path: Path) -> list[tuple[list[str], list[str]]]:
    """(variables, their defaults) of each table row naming variables in its first cell."""
    found = []
    for line in path.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("| `") or len(cells) < 3:
            continue
        names = re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0])
        if names:
            found.append((names, [part.strip() for part in cells[1].split(" / ")]))
    return found


def same(documented: str, default: object) -> bool:
    text = documented.strip("`")
    if isinstance(default, bool):
        return text == str(default).lower()
    if isinstance(default, int | float):
        return float(text) == float(default)
    if isinstance(default, tuple | list):
        return True  # listed in words ("a stdlib set")
    return text == str(default)


def test_every_variable_is_in_the_settings_doc():
    documented = {name for names, _ in rows(SETTINGS_DOC) for name in names}
    missing = sorted(set(variables()) - documented)
    assert not missing, f"not in docs/settings.md: {missing}"


@pytest.mark.parametrize("path", TABLES, ids=lambda path: str(path.relative_to(REPO)))
def test_every_documented_variable_is_read_with_the_stated_default(path):
    known = variables()
    problems = []
    for names, defaults in rows(path):
        for name in names:
            if name not in known and name not in READ_ELSEWHERE:
                problems.append(f"{name}: no service reads it")
        if len(names) != len(defaults):
            continue
        for name, documented in zip(names, defaults, strict=True):
            default = known.get(name)
            if default is None or not LITERAL.match(documented):
                continue  # a default in words ("half of ...", "the real base CPython binary")
            if not same(documented, default):
                problems.append(f"{name}: documented {documented}, is {default!r}")
    assert problems == []


def test_the_check_catches_a_wrong_default(tmp_path):
    doc = tmp_path / "settings.md"
    doc.write_text("| `PAGI_MEMORY_MAX_RUNS` | 999 | runs kept |\n| `NO_SUCH_THING` | 1 | x |\n")
    known = variables()
    (names, defaults), (unknown, _) = rows(doc)
    assert not same(defaults[0], known[names[0]])
    assert unknown[0] not in known
