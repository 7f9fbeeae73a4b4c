"""Reading a policy file and validating it into a :class:`PolicySnapshot`.

Errors come as one :class:`~sandbox.policy.errors.PolicyError` naming the
file, each key path and its line.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import sys
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from sandbox.policy.checks import semantic_problems
from sandbox.policy.errors import PolicyError, PolicyProblem, dotted_key
from sandbox.policy.limits import MAX_POLICY_FILE_BYTES
from sandbox.policy.lines import key_lines, line_of
from sandbox.policy.network import UNION_TAGS
from sandbox.policy.schema import PolicyDocument
from sandbox.policy.snapshot import PolicyContext, PolicySnapshot
from sandbox.spec import RunLimits


def read_policy_bytes(path: Path) -> bytes:
    """The bytes of a policy file, or :class:`PolicyError` (missing, unreadable, too large)."""

    def refuse(message: str) -> PolicyError:
        return PolicyError(path, [PolicyProblem("", None, message)])

    try:
        # O_NONBLOCK: a FIFO put at the path must not hang the service.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise refuse("file not found") from None
    except OSError as exc:
        raise refuse(f"cannot read the file: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise refuse("is a directory, not a file")
        if not stat.S_ISREG(mode):
            raise refuse("not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(MAX_POLICY_FILE_BYTES + 1)
    except OSError as exc:
        raise refuse(f"cannot read the file: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_POLICY_FILE_BYTES:
        raise refuse(f"file larger than {MAX_POLICY_FILE_BYTES} bytes")
    return data


_TOML_LINE = re.compile(r"\(at line (\d+), column \d+\)")


def _parse_toml(path: Path, data: bytes) -> tuple[str, dict[str, Any]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise PolicyError(path, [PolicyProblem("", line, "not valid UTF-8")]) from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_LINE.search(message)
        line = int(match.group(1)) if match else None
        clean = _TOML_LINE.sub("", message).strip()
        raise PolicyError(path, [PolicyProblem("", line, f"invalid TOML: {clean}")]) from None
    except RecursionError:
        problem = PolicyProblem("", None, "invalid TOML: nested too deeply")
        raise PolicyError(path, [problem]) from None


_PATTERN_MESSAGES = {
    "tools": "a tool name is lowercase letters, digits, '_' or '-', starting with a letter",
    "argv": "an argument is a non-empty string without NUL characters",
    "readable_paths": "a readable path must be absolute (start with '/')",
    "denied_syscalls": "a system call name is lowercase letters, digits and '_'",
    "env": "an environment variable name is letters, digits and '_' (values without NUL)",
    "code_file": "code_file is a plain file name (letters, digits, '_', '-', '.')",
    "callers": 'a caller\'s tools are tool names or "*"',
    "package_envs": "an environment name is lowercase letters, digits, '_' or '-'",
    "package_env": "an environment name is lowercase letters, digits, '_' or '-'",
    "preload": "a module name is dotted Python identifiers (matplotlib.pyplot)",
    "requirements": "requirements is a relative path to a .txt file beside the policy",
}


def _friendly_message(error: Any) -> str:
    kind = error.get("type")
    message = str(error.get("msg", "invalid"))
    if kind == "extra_forbidden":
        return "unknown key (not part of the policy format)"
    if kind == "missing":
        return "required key is missing"
    if kind == "too_short" and tuple(error.get("loc", ()))[-1:] == ("allow",):
        return "allow lists at least one host (a tool that reaches nothing needs no network table)"
    if kind == "string_pattern_mismatch":
        names = [part for part in error.get("loc", ()) if isinstance(part, str)]
        for name in reversed(names):
            if name in _PATTERN_MESSAGES:
                return _PATTERN_MESSAGES[name]
    return message.removeprefix("Value error, ")


def _validation_problems(
    exc: ValidationError, lines: dict[tuple[str, ...], int]
) -> list[PolicyProblem]:
    problems = []
    for error in exc.errors(include_url=False):
        loc = tuple(part for part in error.get("loc", ()) if part not in UNION_TAGS)
        problems.append(
            PolicyProblem(dotted_key(loc), line_of(lines, loc), _friendly_message(error))
        )
    return sorted(problems, key=lambda p: p.line or 0)


def _effective_limits(document: PolicyDocument) -> dict[str, RunLimits]:
    base = document.defaults.model_dump()
    return {
        name: RunLimits(**(base | tool.limits.model_dump(exclude_none=True)))
        for name, tool in document.tools.items()
    }


def parse_policy(data: bytes, source: Path, context: PolicyContext | None = None) -> PolicySnapshot:
    """Validate the bytes of a policy file into a snapshot, or raise :class:`PolicyError`."""
    if not data.strip():
        # An empty file is what a reader sees while an editor rewrites it in
        # place; it is never taken as a policy.
        raise PolicyError(source, [PolicyProblem("", None, "file is empty")])
    text, raw = _parse_toml(source, data)
    lines = key_lines(text)
    try:
        document = PolicyDocument.model_validate(raw)
    except ValidationError as exc:
        raise PolicyError(source, _validation_problems(exc, lines)) from None
    problems = semantic_problems(document, context or PolicyContext(), lines)
    if problems:
        raise PolicyError(source, sorted(problems, key=lambda p: p.line or 0))
    return PolicySnapshot(
        document=document,
        version=hashlib.sha256(data).hexdigest()[:16],
        source=source,
        loaded_at=datetime.now(UTC),
        limits=MappingProxyType(_effective_limits(document)),
        egress=MappingProxyType(
            {
                name: tool.egress.egress_policy()
                for name, tool in document.tools.items()
                if tool.egress
            }
        ),
    )


def load_policy(path: Path, context: PolicyContext | None = None) -> PolicySnapshot:
    """Read and validate the policy file at ``path``."""
    return parse_policy(read_policy_bytes(path), path, context)


def deployment_context(settings: Any) -> PolicyContext:
    """The paths of this deployment that no tool may be allowed to read."""
    source_root = Path(__file__).resolve().parents[2]
    protected = [
        settings.keys_dir,
        settings.pagi_state_dir,
        settings.audit_log_path,
        settings.pagi_sandbox_policy.parent,
        source_root,
    ]
    if sys.prefix != sys.base_prefix:
        protected.append(Path(sys.prefix))
    return PolicyContext(protected_paths=tuple(Path(os.path.abspath(p)) for p in protected))
