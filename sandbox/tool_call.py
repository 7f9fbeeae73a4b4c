"""Turning an accepted request into a :class:`~sandbox.spec.RunSpec` for the runner."""

from __future__ import annotations

from pagi.errors import ApiError
from sandbox.policy import PYTHON_PLACEHOLDER, PolicySnapshot, ToolPolicy
from sandbox.spec import OutputCaps, RunSpec


def encode_code(code: str | None) -> bytes | None:
    """The code as UTF-8 bytes; 400 when it is not valid Unicode (lone surrogates)."""
    if code is None:
        return None
    try:
        return code.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "invalid_code", "code must be valid Unicode text") from None


def check_code(name: str, tool: ToolPolicy, code: bytes | None) -> None:
    """400 when the tool takes no code but got some (or needs code and got none); 413 if too big."""
    if tool.code == "none":
        if code is not None:
            raise ApiError(400, "code_not_accepted", f"tool {name!r} takes no code", tool=name)
        return
    if code is None:
        raise ApiError(400, "code_required", f"tool {name!r} needs code", tool=name)
    if len(code) > tool.max_code_bytes:
        raise ApiError(
            413,
            "code_too_large",
            f"code of {len(code)} bytes exceeds the {tool.max_code_bytes} bytes tool {name!r}"
            " accepts",
            tool=name,
            max_code_bytes=tool.max_code_bytes,
        )
    if tool.code == "argv" and b"\x00" in code:
        raise ApiError(400, "invalid_code", f"tool {name!r} takes code as an argument: no NUL")


def run_spec_for(
    snapshot: PolicySnapshot,
    name: str,
    tool: ToolPolicy,
    code: bytes | None,
    python: str,
    package_env: str | None = None,
    preload: tuple[str, ...] = (),
    request_id: str = "",
) -> RunSpec:
    """The run of ``tool`` with ``code`` under ``snapshot``'s limits, layers and egress rules.

    ``python``: what ``{python}`` stands for, the environment's interpreter
    when the tool has one; ``package_env``: that environment's directory,
    shown read-only in the jail at its own path; ``preload``: its modules
    the warm path imports ahead.
    """
    argv = [python if arg == PYTHON_PLACEHOLDER else arg for arg in tool.argv]
    stdin = b""
    files: dict[str, bytes] = {}
    if code is not None:
        if tool.code == "stdin":
            stdin = code
        elif tool.code == "file" and tool.code_file is not None:
            files[tool.code_file] = code
        elif tool.code == "argv":
            argv.append(code.decode("utf-8"))
    return RunSpec(
        tool=name,
        argv=tuple(argv),
        stdin=stdin,
        files=files,
        env=dict(tool.env),
        limits=snapshot.limits[name],
        network=tool.host_network,
        egress=snapshot.egress_of(name),
        request_id=request_id,
        readable_paths=tool.readable_paths,
        denied_syscalls=tool.denied_syscalls,
        required_layers=snapshot.required_layers,
        warm=tool.executor == "warm",
        package_env=package_env,
        preload=preload if package_env else (),
        outputs=OutputCaps(files=tool.files.output_files, bytes=tool.files.output_bytes),
        policy_version=snapshot.version,
        explain_denials=tool.explain_denials,
        allow_exec_written=tool.allow_exec_written,
    )
