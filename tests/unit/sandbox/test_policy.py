"""The policy file: every kind of mistake is an error naming file, key path and line."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from cli.main import main as pagi_main
from cli.policy import check_command
from sandbox.policy import (
    DEFAULT_REQUIRED_LAYERS,
    HARD_CEILINGS,
    KIB,
    MIB,
    PolicyContext,
    PolicyError,
    load_policy,
    parse_policy,
)
from sandbox.spec import LIMIT_RANGES, RunLimits
from sandbox.tool_call import run_spec_for

REPO = Path(__file__).resolve().parents[3]
SOURCE = Path("/etc/pagi/sandbox.toml")

MINIMAL = """
[tools.demo]
argv = ["/bin/echo", "hi"]

[callers.operator]
tools = ["*"]
"""


def parse(text: str, context: PolicyContext | None = None):
    return parse_policy(textwrap.dedent(text).encode(), SOURCE, context)


def problems_of(
    text: str, context: PolicyContext | None = None
) -> list[tuple[str, int | None, str]]:
    with pytest.raises(PolicyError) as caught:
        parse(text, context)
    assert str(SOURCE) in str(caught.value)
    return [(p.key, p.line, p.message) for p in caught.value.problems]


def only_problem(text: str, context: PolicyContext | None = None) -> tuple[str, int | None, str]:
    problems = problems_of(text, context)
    assert len(problems) == 1, problems
    return problems[0]


# --------------------------------------------------------------------------- shipped files


def test_default_policy_is_valid_and_least_privilege():
    snapshot = load_policy(REPO / "policies" / "sandbox.toml")
    doc = snapshot.document
    assert {"demo", "python"} <= set(doc.tools)
    assert snapshot.tools_of("bff") == ["demo"]
    assert snapshot.tools_of("agent") == ["demo", "python", "python-data"]
    assert snapshot.tools_of("operator") == sorted(doc.tools)
    for caller in ("gateway", "memory", "sandbox"):
        assert snapshot.tools_of(caller) == []
    assert all(tool.network is False for tool in doc.tools.values())
    assert snapshot.required_layers == frozenset(DEFAULT_REQUIRED_LAYERS)
    assert "cgroup" not in snapshot.required_layers
    python = doc.tools["python"]
    assert python.argv[0] == "{python}" and "-I" in python.argv and "-S" in python.argv
    assert python.executor in ("cold", "warm")


def test_strict_example_is_valid_and_stricter_than_the_default():
    default = load_policy(REPO / "policies" / "sandbox.toml")
    strict = load_policy(REPO / "policies" / "examples" / "strict.toml")
    assert "cgroup" in strict.required_layers
    assert strict.required_layers > default.required_layers
    assert strict.tools_of("bff") == []
    sandbox = strict.document.sandbox
    assert sandbox.max_concurrent_runs <= default.document.sandbox.max_concurrent_runs
    for name, limits in strict.limits.items():
        for field, value in limits.model_dump().items():
            assert value <= getattr(default.limits[name], field), (name, field)


# --------------------------------------------------------------------------- defaults


def test_missing_keys_take_safe_defaults():
    snapshot = parse(MINIMAL)
    demo = snapshot.document.tools["demo"]
    assert demo.network is False and demo.code == "none" and demo.env == {}
    assert snapshot.required_layers == frozenset(DEFAULT_REQUIRED_LAYERS)
    assert snapshot.tools_of("bff") == []  # not listed: nothing


def test_empty_file_is_refused():
    # What a reader may see while an editor rewrites the file in place.
    for empty in ("", "\n", "  \n\t\n"):
        key, line, message = only_problem(empty)
        assert "empty" in message


def test_a_file_of_comments_allows_nothing():
    snapshot = parse("# every tool removed for now\n")
    assert snapshot.document.tools == {}
    assert snapshot.tools_of("operator") == []


def test_tool_limits_override_defaults_and_sizes_accept_units():
    snapshot = parse("""
        [defaults]
        wall_seconds = 3
        memory_bytes = "128 MiB"
        output_bytes = 2048

        [tools.demo]
        argv = ["/bin/echo"]
        limits = { wall_seconds = 1.5, output_bytes = "8KiB" }
    """)
    limits = snapshot.limits["demo"]
    assert limits.wall_seconds == 1.5
    assert limits.output_bytes == 8 * KIB
    assert limits.memory_bytes == 128 * MIB
    assert limits.cpu_seconds == 5  # built-in default


def test_version_is_the_content_hash():
    first = parse(MINIMAL)
    again = parse(MINIMAL)
    changed = parse(MINIMAL + "\n# a comment changes the version\n")
    assert first.version == again.version != changed.version
    assert len(first.version) == 16


# --------------------------------------------------------------------------- errors


def test_syntax_error_names_the_line():
    key, line, message = only_problem("""
        [tools.demo]
        argv = ["/bin/echo"
        code = "none"
    """)
    assert line == 4 and "invalid TOML" in message


def test_unknown_key_names_path_and_line():
    key, line, message = only_problem("""
        [tools.demo]
        argv = ["/bin/echo"]
        netwrok = true
    """)
    assert (key, line) == ("tools.demo.netwrok", 4)
    assert "unknown key" in message


def test_unknown_top_level_table():
    key, line, _ = only_problem("""
        [tool.demo]
        argv = ["/bin/echo"]
    """)
    assert key == "tool" and line == 2


def test_wrong_type_names_path_and_line():
    key, line, message = only_problem("""
        [defaults]
        cpu_seconds = "five"
    """)
    assert (key, line) == ("defaults.cpu_seconds", 3)
    assert "integer" in message


def test_booleans_are_not_numbers():
    key, _, _ = only_problem("[defaults]\nprocesses = true\n")
    assert key == "defaults.processes"


@pytest.mark.parametrize("value", ["-1", "0", "-0.5", "nan", "inf", "-inf"])
def test_negative_zero_and_non_finite_limits_are_refused(value):
    key, line, _ = only_problem(f"[defaults]\nwall_seconds = {value}\n")
    assert (key, line) == ("defaults.wall_seconds", 2)


def test_negative_size_is_refused():
    key, line, message = only_problem("""
        [tools.demo]
        argv = ["/bin/echo"]
        [tools.demo.limits]
        memory_bytes = -5
    """)
    assert (key, line) == ("tools.demo.limits.memory_bytes", 5)
    assert "greater than or equal" in message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("wall_seconds", HARD_CEILINGS.wall_seconds + 1),
        ("cpu_seconds", HARD_CEILINGS.cpu_seconds + 1),
        ("memory_bytes", HARD_CEILINGS.memory_bytes + 1),
        ("file_size_bytes", HARD_CEILINGS.file_size_bytes + 1),
        ("open_files", HARD_CEILINGS.open_files + 1),
        ("processes", HARD_CEILINGS.processes + 1),
        ("output_bytes", HARD_CEILINGS.output_bytes + 1),
        ("stack_bytes", HARD_CEILINGS.stack_bytes + 1),
    ],
)
def test_limits_above_the_hard_ceiling_are_refused(field, value):
    key, line, message = only_problem(f"""
        [tools.demo]
        argv = ["/bin/echo"]
        limits = {{ {field} = {value} }}
    """)
    assert key == f"tools.demo.limits.{field}" and line == 4
    assert "less than or equal" in message


@pytest.mark.parametrize("field", sorted(LIMIT_RANGES))
def test_a_run_takes_the_same_range_and_default_as_the_policy(field):
    bounds = LIMIT_RANGES[field]
    assert getattr(parse(MINIMAL).limits["demo"], field) == bounds.default
    assert getattr(RunLimits(), field) == bounds.default
    RunLimits(**{field: bounds.floor})
    RunLimits(**{field: bounds.ceiling})
    below = bounds.floor - 1 if isinstance(bounds.floor, int) else bounds.floor / 2
    for value in (below, bounds.ceiling + 1):
        with pytest.raises(ValidationError):
            RunLimits(**{field: value})


def test_size_string_above_ceiling_and_garbage_size():
    problems = problems_of("""
        [defaults]
        memory_bytes = "3 GiB"
        output_bytes = "a lot"
    """)
    assert [(k, line) for k, line, _ in problems] == [
        ("defaults.memory_bytes", 3),
        ("defaults.output_bytes", 4),
    ]


def test_service_wide_ceilings():
    problems = problems_of("""
        [sandbox]
        max_concurrent_runs = 1000
        queue_length = -1
        queue_wait_seconds = 3600
        required_layers = ["userns", "teleport"]
    """)
    assert [(k, line) for k, line, _ in problems] == [
        ("sandbox.max_concurrent_runs", 3),
        ("sandbox.queue_length", 4),
        ("sandbox.queue_wait_seconds", 5),
        ("sandbox.required_layers[1]", 6),
    ]


def test_tool_without_a_command():
    key, line, message = only_problem("""
        [tools.demo]
        code = "stdin"
    """)
    assert (key, line) == ("tools.demo.argv", 2)
    assert "missing" in message


def test_empty_argv():
    key, _, _ = only_problem("[tools.demo]\nargv = []\n")
    assert key == "tools.demo.argv"


def test_relative_program_is_refused():
    key, line, message = only_problem("""
        [tools.demo]
        argv = ["echo", "hi"]
    """)
    assert (key, line) == ("tools.demo", 2)
    assert "absolute" in message


def test_relative_readable_path_is_refused():
    key, line, message = only_problem("""
        [tools.demo]
        argv = ["/bin/echo"]
        readable_paths = ["/usr/share", "etc/passwd"]
    """)
    assert (key, line) == ("tools.demo.readable_paths[1]", 4)
    assert "absolute" in message


def test_dotdot_in_readable_path_is_refused():
    key, _, message = only_problem("""
        [tools.demo]
        argv = ["/bin/echo"]
        readable_paths = ["/usr/../etc"]
    """)
    assert key == "tools.demo.readable_paths[0]" and "'..'" in message


def test_readable_path_exposing_service_files_is_refused(tmp_path):
    keys = tmp_path / "state" / "keys"
    context = PolicyContext(protected_paths=(keys,))
    for exposing in (str(tmp_path), str(keys), str(keys / "sandbox.key"), "/"):
        key, _, message = only_problem(
            f'[tools.demo]\nargv = ["/bin/echo"]\nreadable_paths = ["{exposing}"]\n', context
        )
        assert key == "tools.demo.readable_paths[0]"
        assert "service's own files" in message
    assert parse('[tools.demo]\nargv = ["/bin/echo"]\nreadable_paths = ["/usr/lib"]\n', context)


def test_code_modes_are_consistent():
    key, _, message = only_problem('[tools.t]\nargv = ["/bin/cat"]\ncode = "file"\n')
    assert key == "tools.t" and "code_file" in message
    key, _, message = only_problem(
        '[tools.t]\nargv = ["/bin/cat"]\ncode = "stdin"\ncode_file = "x.py"\n'
    )
    assert "only meaningful" in message
    key, _, _ = only_problem('[tools.t]\nargv = ["/bin/cat"]\ncode = "eval"\n')
    assert key == "tools.t.code"
    key, _, message = only_problem(
        '[tools.t]\nargv = ["/bin/cat"]\ncode = "file"\ncode_file = "../escape.py"\n'
    )
    assert key == "tools.t.code_file"
    key, _, message = only_problem(
        '[tools.t]\nargv = ["/bin/sh", "-c"]\ncode = "argv"\nmax_code_bytes = "512 KiB"\n'
    )
    assert "128 KiB" in message or "131071" in message


def test_executor_values():
    assert (
        parse('[tools.t]\nargv = ["/bin/cat"]\nexecutor = "warm"\n').document.tools["t"].executor
        == "warm"
    )
    key, line, _ = only_problem('[tools.t]\nargv = ["/bin/cat"]\nexecutor = "hot"\n')
    assert (key, line) == ("tools.t.executor", 3)


def test_bad_tool_name():
    key, line, message = only_problem('[tools."Bad Name"]\nargv = ["/bin/cat"]\n')
    assert key.startswith('tools."Bad Name"') and line == 1
    assert "tool name" in message


def test_env_rules():
    key, line, _ = only_problem('[tools.t]\nargv = ["/bin/cat"]\nenv = { "1BAD" = "x" }\n')
    assert key.startswith("tools.t.env") and line == 3
    key, _, message = only_problem('[tools.t]\nargv = ["/bin/cat"]\nenv = { LD_PRELOAD = "/x" }\n')
    assert key == "tools.t.env.LD_PRELOAD" and "LD_" in message


def test_unknown_syscall_name():
    key, line, message = only_problem("""
        [tools.t]
        argv = ["/bin/cat"]
        denied_syscalls = ["ptrace", "no_such_call"]
    """)
    assert (key, line) == ("tools.t.denied_syscalls[1]", 4)
    assert "no_such_call" in message


def test_callers_must_name_existing_tools_and_known_subjects():
    problems = problems_of("""
        [tools.demo]
        argv = ["/bin/echo"]

        [callers.bff]
        tools = ["demo", "ghost"]

        [callers.bf]
        tools = ["demo"]
    """)
    assert problems[0][:2] == ("callers.bff.tools[1]", 6) and "ghost" in problems[0][2]
    assert problems[1][:2] == ("callers.bf", 8) and "unknown caller" in problems[1][2]


def test_not_utf8():
    with pytest.raises(PolicyError) as caught:
        parse_policy(b'[tools.demo]\nargv = ["\xff"]\n', SOURCE)
    (problem,) = caught.value.problems
    assert problem.line == 2 and "UTF-8" in problem.message


def test_deeply_nested_document_is_an_error_not_a_crash():
    deep = "x = " + "[" * 5000 + "]" * 5000 + "\n"
    with pytest.raises(PolicyError):
        parse_policy(deep.encode(), SOURCE)


def test_unreadable_missing_huge_files(tmp_path):
    with pytest.raises(PolicyError, match="file not found"):
        load_policy(tmp_path / "absent.toml")
    with pytest.raises(PolicyError, match="directory"):
        load_policy(tmp_path)
    huge = tmp_path / "huge.toml"
    huge.write_text("# " + "x" * (1024 * 1024 + 10))
    with pytest.raises(PolicyError, match="larger than"):
        load_policy(huge)


def test_error_text_names_file_line_and_key(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("[defaults]\nopen_files = 1\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(caught.value).startswith(f"{path}:2: defaults.open_files: ")


# --------------------------------------------------------------------------- pagi policy check


def test_check_command_prints_a_summary(capsys):
    assert check_command(REPO / "policies" / "sandbox.toml") == 0
    out = capsys.readouterr().out
    assert "valid" in out and "python" in out and "demo" in out
    assert "bff" in out and "wall=" in out and "required layers" in out


def test_check_command_prints_errors_and_fails(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('[defaults]\nwall_seconds = -1\ncolour = "red"\n')
    assert check_command(path) == 1
    err = capsys.readouterr().err
    assert f"{path}:2: defaults.wall_seconds" in err
    assert f"{path}:3: defaults.colour: unknown key" in err
    assert "INVALID (2 problem(s))" in err


def test_pagi_policy_check_cli_exit_codes(tmp_path, capsys):
    with pytest.raises(SystemExit) as ok:
        pagi_main(["policy", "check", str(REPO / "policies" / "examples" / "strict.toml")])
    assert ok.value.code == 0
    with pytest.raises(SystemExit) as bad:
        pagi_main(["policy", "check", str(tmp_path / "missing.toml")])
    assert bad.value.code == 1
    assert "file not found" in capsys.readouterr().err


def test_a_fifo_at_the_policy_path_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "sandbox.toml"
    os.mkfifo(fifo)
    with pytest.raises(PolicyError, match="not a regular file"):
        load_policy(fifo)


def test_a_device_at_the_policy_path_is_refused():
    with pytest.raises(PolicyError, match="not a regular file"):
        load_policy(Path("/dev/zero"))


# --------------------------------------------------------------------------- denials, W^X


def test_denials_are_explained_and_written_files_never_run_by_default(capsys):
    snapshot = parse(MINIMAL)
    tool = snapshot.tool("demo")
    assert tool is not None and (tool.explain_denials, tool.allow_exec_written) == (True, False)
    spec = run_spec_for(snapshot, "demo", tool, None, "/usr/bin/python3")
    assert (spec.explain_denials, spec.allow_exec_written) == (True, False)
    summary = snapshot.summary()["tools"]["demo"]
    assert (summary["explain_denials"], summary["allow_exec_written"]) == (True, False)


def test_a_tool_can_go_quiet_and_run_what_it_writes(tmp_path, capsys):
    text = MINIMAL.replace(
        "[tools.demo]\n", "[tools.demo]\nexplain_denials = false\nallow_exec_written = true\n"
    )
    snapshot = parse(text)
    tool = snapshot.tool("demo")
    assert tool is not None
    spec = run_spec_for(snapshot, "demo", tool, None, "/usr/bin/python3")
    assert (spec.explain_denials, spec.allow_exec_written) == (False, True)
    path = tmp_path / "sandbox.toml"
    path.write_text(text)
    assert check_command(path) == 0
    assert "denials on stderr=no written files run=yes" in capsys.readouterr().out


def test_the_denial_keys_are_booleans():
    key, _, message = only_problem(
        MINIMAL.replace("[tools.demo]\n", '[tools.demo]\nallow_exec_written = "yes"\n')
    )
    assert key == "tools.demo.allow_exec_written"
