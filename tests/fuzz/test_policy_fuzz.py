"""hypothesis against the policy loader: it never crashes, and what it accepts is bounded.

Three kinds of input: arbitrary bytes, arbitrary TOML documents, and
documents of the policy's own shape filled with random values (including
negative, huge, non-finite and wrongly typed ones). The loader must answer
each with a snapshot or a :class:`PolicyError` — nothing else — and every
snapshot it accepts must lie within the hard ceilings.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pagi import IDENTITIES
from sandbox.policy import (
    ALL_TOOLS,
    HARD_CEILINGS,
    LAYERS,
    LIMIT_FLOORS,
    MAX_ARGV_CODE_BYTES,
    MAX_CODE_BYTES_CEILING,
    MAX_CONCURRENT_RUNS_CEILING,
    PYTHON_PLACEHOLDER,
    QUEUE_LENGTH_CEILING,
    QUEUE_WAIT_SECONDS_CEILING,
    PolicyError,
    PolicySnapshot,
    parse_policy,
)

SOURCE = Path("/fuzz/sandbox.toml")
FUZZ = settings(max_examples=300, deadline=None)


# --------------------------------------------------------------------------- TOML writing


def toml_key(key: str) -> str:
    return json.dumps(key)  # a quoted key is always valid (or refused as a whole)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def toml_document(tables: dict[str, Any]) -> str:
    """Top-level tables written as ``[name]`` sections, nested values inline."""
    lines = []
    for name, table in tables.items():
        if isinstance(table, dict):
            lines.append(f"[{toml_key(name)}]")
            for key, value in table.items():
                lines.append(f"{toml_key(key)} = {toml_value(value)}")
        else:
            lines.insert(0, f"{toml_key(name)} = {toml_value(table)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- checks


def load(data: bytes) -> PolicySnapshot | None:
    try:
        return parse_policy(data, SOURCE)
    except PolicyError as exc:
        assert exc.problems, "a refusal must say why"
        for problem in exc.problems:
            assert problem.message
            assert problem.line is None or problem.line >= 1
        return None


def assert_within_ceilings(snapshot: PolicySnapshot) -> None:
    doc = snapshot.document
    assert 1 <= doc.sandbox.max_concurrent_runs <= MAX_CONCURRENT_RUNS_CEILING
    assert 0 <= doc.sandbox.queue_length <= QUEUE_LENGTH_CEILING
    assert 0 <= doc.sandbox.queue_wait_seconds <= QUEUE_WAIT_SECONDS_CEILING
    assert set(doc.sandbox.required_layers) <= set(LAYERS)
    for name, tool in doc.tools.items():
        limits = snapshot.limits[name]
        for field, value in limits.model_dump().items():
            assert math.isfinite(value)
            assert getattr(LIMIT_FLOORS, field) <= value <= getattr(HARD_CEILINGS, field), field
        assert 0 <= tool.max_code_bytes <= MAX_CODE_BYTES_CEILING
        if tool.code == "argv":
            assert tool.max_code_bytes <= MAX_ARGV_CODE_BYTES
        assert tool.argv and (tool.argv[0] == PYTHON_PLACEHOLDER or tool.argv[0].startswith("/"))
        assert all(path.startswith("/") for path in tool.readable_paths)
        assert not any(key.startswith("LD_") for key in tool.env)
        if tool.host_network:
            assert doc.sandbox.dangerously_allow_host_network
        if tool.egress is not None:
            assert tool.egress.allow and snapshot.egress_of(name) is not None
    for caller, rules in doc.callers.items():
        assert caller in IDENTITIES
        assert all(ref == ALL_TOOLS or ref in doc.tools for ref in rules.tools)
    # Nobody is allowed a tool that does not exist.
    for caller in IDENTITIES:
        assert set(snapshot.tools_of(caller)) <= set(doc.tools)


# --------------------------------------------------------------------------- strategies

scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
any_document = st.dictionaries(st.text(max_size=12), values, max_size=6)

numbers = st.one_of(
    st.integers(min_value=1, max_value=64),  # often plausible, so many documents pass
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 2**31, 2**63 - 1]),
)
sizes = st.one_of(
    st.builds("{} MiB".format, st.integers(min_value=1, max_value=4096)),
    numbers,
    st.builds(
        lambda n, unit: f"{n} {unit}",
        st.integers(min_value=-5, max_value=10**6),
        st.sampled_from(["B", "KiB", "MiB", "GiB", "K", "M", "G", "TB", "", "kib"]),
    ),
)
limit_table = st.fixed_dictionaries(
    {},
    optional={
        "wall_seconds": numbers,
        "cpu_seconds": numbers,
        "memory_bytes": sizes,
        "file_size_bytes": sizes,
        "open_files": numbers,
        "processes": numbers,
        "output_bytes": sizes,
        "stack_bytes": sizes,
        "surprise": scalars,
    },
)
tool_names = st.sampled_from(["demo", "python", "date", "Bad Name", "x" * 70, "*"])
paths = st.one_of(
    st.sampled_from(["/bin/echo", "/usr/bin/env", PYTHON_PLACEHOLDER, "echo", "", "/", "/usr/lib"]),
    st.text(max_size=10),
)
tool_table = st.fixed_dictionaries(
    {"argv": st.one_of(st.just(["/bin/echo", "hi"]), st.lists(paths, max_size=3))},
    optional={
        "code": st.sampled_from(["none", "stdin", "file", "argv", "eval"]),
        "code_file": st.sampled_from(["main.py", "../x", ".", "a b"]),
        "max_code_bytes": sizes,
        "limits": limit_table,
        "network": st.one_of(st.booleans(), st.integers()),
        "readable_paths": st.lists(paths, max_size=3),
        "denied_syscalls": st.lists(
            st.sampled_from(["ptrace", "mount", "nope", "BAD"]), max_size=3
        ),
        "env": st.dictionaries(
            st.sampled_from(["LANG", "LD_PRELOAD", "1X", "HOME"]), st.text(max_size=5), max_size=3
        ),
        "executor": st.sampled_from(["cold", "warm", "hot"]),
    },
)
plausible_limits = st.fixed_dictionaries(
    {},
    optional={
        "wall_seconds": st.floats(min_value=0.05, max_value=120),
        "cpu_seconds": st.integers(min_value=0, max_value=120),
        "memory_bytes": st.builds("{} MiB".format, st.integers(min_value=8, max_value=4096)),
        "open_files": st.integers(min_value=4, max_value=2048),
        "processes": st.integers(min_value=0, max_value=512),
        "output_bytes": st.integers(min_value=512, max_value=16 * 1024 * 1024),
    },
)
plausible_tool = st.fixed_dictionaries(
    {"argv": st.just(["/bin/echo", "hi"])},
    optional={
        "code": st.sampled_from(["none", "stdin", "argv"]),
        "max_code_bytes": st.integers(min_value=0, max_value=2 * 1024 * 1024),
        "limits": plausible_limits,
        "network": st.booleans(),
        "executor": st.sampled_from(["cold", "warm"]),
    },
)
structured_document = st.fixed_dictionaries(
    {},
    optional={
        "sandbox": st.fixed_dictionaries(
            {},
            optional={
                "max_concurrent_runs": numbers,
                "queue_length": numbers,
                "queue_wait_seconds": numbers,
                "required_layers": st.lists(st.sampled_from([*LAYERS, "warp"]), max_size=4),
            },
        ),
        "defaults": limit_table,
        "tools": st.dictionaries(tool_names, tool_table, max_size=3),
        "callers": st.dictionaries(
            st.sampled_from([*IDENTITIES, "stranger"]),
            st.fixed_dictionaries({"tools": st.lists(tool_names, max_size=3)}),
            max_size=3,
        ),
    },
)


plausible_document = st.fixed_dictionaries(
    {
        "defaults": plausible_limits,
        "tools": st.dictionaries(
            st.sampled_from(["demo", "date", "cat"]), plausible_tool, max_size=3
        ),
        "callers": st.dictionaries(
            st.sampled_from(IDENTITIES),
            st.fixed_dictionaries({"tools": st.lists(st.sampled_from(["demo", "*"]), max_size=2)}),
            max_size=3,
        ),
    }
)


def nested_toml(document: dict[str, Any]) -> str:
    """Tools and callers as ``[tools.NAME]`` sections, the rest inline."""
    lines = []
    for name in ("sandbox", "defaults"):
        if name in document:
            lines.append(f"[{name}]")
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in document[name].items()]
    for group in ("tools", "callers"):
        for name, table in document.get(group, {}).items():
            lines.append(f"[{group}.{toml_key(name)}]")
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- properties


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash_the_loader(data):
    snapshot = load(data)
    if snapshot is not None:
        assert_within_ceilings(snapshot)


@FUZZ
@given(any_document)
def test_arbitrary_toml_documents_never_crash_the_loader(document):
    snapshot = load(toml_document(document).encode("utf-8", "surrogatepass"))
    if snapshot is not None:
        assert_within_ceilings(snapshot)


@settings(max_examples=600, deadline=None)
@given(st.one_of(structured_document, plausible_document))
def test_random_values_in_the_policy_shape_are_refused_or_bounded(document):
    snapshot = load(nested_toml(document).encode("utf-8", "surrogatepass"))
    if snapshot is not None:
        assert_within_ceilings(snapshot)


def test_the_structured_strategy_does_reach_valid_policies():
    """Guard against a fuzz test that only ever sees refusals."""
    accepted_with_tools = 0

    @settings(max_examples=200, deadline=None, database=None)
    @given(plausible_document)
    def count(document: dict[str, Any]) -> None:
        nonlocal accepted_with_tools
        snapshot = load(nested_toml(document).encode("utf-8", "surrogatepass"))
        if snapshot is not None and snapshot.document.tools:
            accepted_with_tools += 1

    count()
    assert accepted_with_tools >= 10
