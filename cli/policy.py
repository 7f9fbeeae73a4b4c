"""``pagi policy check``: a policy file's summary, or its problems."""

from __future__ import annotations

import sys
from pathlib import Path

from sandbox.policy import KIB, MIB, PolicyError, PolicySnapshot, deployment_context, load_policy
from sandbox.settings import SandboxSettings


def _format_summary(snapshot: PolicySnapshot) -> str:
    summary = snapshot.summary()
    sandbox = summary["sandbox"]
    out = [
        f"{snapshot.source}: valid (version {snapshot.version})",
        f"sandbox: {sandbox['max_concurrent_runs']} concurrent runs,"
        f" queue {sandbox['queue_length']} (wait <= {sandbox['queue_wait_seconds']} s)",
        f"required layers: {', '.join(sandbox['required_layers']) or '(none)'}",
    ]
    if snapshot.document.sandbox.dangerously_allow_host_network:
        hosts = ", ".join(snapshot.host_network_tools) or "(no tool uses it)"
        out.append(f"WARNING: dangerously_allow_host_network: the host's whole network for {hosts}")
    out.append("tools:")
    for name, tool in summary["tools"].items():
        limits = tool["limits"]
        code = tool["code"] if tool["code"] != "file" else f"file {tool['code_file']}"
        network = "host" if tool["host_network"] else "egress" if tool["egress"] else "off"
        out.append(
            f"  {name:<12} code={code} executor={tool['executor']} network={network}"
            + (f" max_code={tool['max_code_bytes']}B" if tool["code"] != "none" else "")
        )
        out.append(
            f"  {'':<12} wall={limits['wall_seconds']}s cpu={limits['cpu_seconds']}s"
            f" memory={limits['memory_bytes'] // MIB}MiB processes={limits['processes']}"
            f" open_files={limits['open_files']} output={limits['output_bytes'] // KIB}KiB"
        )
        files = tool["files"]
        out.append(
            f"  {'':<12} files in={files['input_files']}"
            f" ({files['input_bytes'] // KIB}KiB, depth {files['input_depth']})"
            f" out={files['output_files']} ({files['output_bytes'] // KIB}KiB)"
            + (f" package_env={tool['package_env']}" if tool["package_env"] else "")
        )
        out.append(
            f"  {'':<12} denials on stderr={'yes' if tool['explain_denials'] else 'no'}"
            f" written files run={'yes' if tool['allow_exec_written'] else 'no'}"
        )
        egress = tool["egress"]
        if egress:
            out.append(f"  {'':<12} allow: {', '.join(egress['allow'])}")
            if egress["deny"]:
                out.append(f"  {'':<12} deny: {', '.join(egress['deny'])}")
            if egress["allow_private"]:
                out.append(f"  {'':<12} allow_private: {', '.join(egress['allow_private'])}")
            out.append(
                f"  {'':<12} max_connections={egress['max_connections']}"
                f" max_transfer={egress['max_transfer_bytes'] // KIB}KiB"
                f" connect_timeout={egress['connect_timeout_seconds']}s"
                f" idle_timeout={egress['idle_timeout_seconds']}s"
            )
    if summary["package_envs"]:
        out.append("package environments:")
        for name, env in summary["package_envs"].items():
            preload = ", ".join(env["preload"]) or "(nothing)"
            out.append(f"  {name:<12} {env['requirements']} preload: {preload}")
    out.append("callers:")
    for caller, tools in summary["callers"].items():
        out.append(f"  {caller:<12} {', '.join(tools) or '(nothing)'}")
    return "\n".join(out)


def check_command(path: Path) -> int:
    """``pagi policy check FILE``: print a summary or the errors; 0 when valid."""
    try:
        context = deployment_context(SandboxSettings())
        snapshot = load_policy(path, context)
    except PolicyError as exc:
        print(exc.render(), file=sys.stderr)
        print(f"{path}: INVALID ({len(exc.problems)} problem(s))", file=sys.stderr)
        return 1
    print(_format_summary(snapshot))
    return 0
