"""The ``pagi`` command: run the stack, mint tokens, manage keys, check policies, build envs."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import threading
from pathlib import Path

from pagi import IDENTITIES, SERVICES
from pagi.auth import (
    DEFAULT_SIGN_IN_TTL,
    SIGN_IN_AUDIENCE,
    SIGN_IN_ISSUER,
    TokenSigner,
    generate_keys,
    is_person,
)
from pagi.health import check_service
from pagi.settings import CommonSettings
from pagi.stack import Stack

_print_lock = threading.Lock()


def _print_line(service: str, line: str) -> None:
    with _print_lock:
        print(f"{service:<8}| {line}", flush=True)


def cmd_up(args: argparse.Namespace) -> int:
    """Start every service, wait for health, stream logs, stop all on signal."""
    services = args.services or list(SERVICES)
    unknown = set(services) - set(SERVICES)
    if unknown:
        print(f"pagi up: unknown service(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    stack = Stack(env=dict(os.environ), services=services, sink=_print_line)
    created = stack.ensure_keys()
    if created:
        print(f"pagi up: created keys for {', '.join(created)} in {stack.settings.keys_dir}")
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        for name in services:
            stack.start_service(name)
            stack.wait_healthy(name, timeout=args.timeout)
        settings = stack.settings
        print("pagi up: all services healthy:", flush=True)
        for name in services:
            where = settings.gateway_target if name == "gateway" else settings.url_of(name)
            print(f"  {name:<8} {where}", flush=True)
        if "bff" in services:
            print(
                f"pagi up: the console is at {settings.url_of('bff')}/console/;"
                " `pagi console` prints a sign-in link",
                flush=True,
            )
        print("pagi up: Ctrl-C stops them all.", flush=True)
        while not stopping.wait(0.5):
            dead = stack.first_exited()
            if dead is not None:
                code = dead.process.returncode
                print(f"pagi up: {dead.name} exited with code {code}; stopping", file=sys.stderr)
                return 1
        return 0
    except (RuntimeError, TimeoutError) as exc:
        print(f"pagi up: {exc}; stopping", file=sys.stderr)
        return 1
    finally:
        stack.stop()


def cmd_serve(args: argparse.Namespace) -> int:
    """Run one service in the foreground."""
    module = importlib.import_module(f"{args.service}.main")
    module.main()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print each service's health; non-zero when one is down."""
    settings = CommonSettings()
    report = {name: check_service(name, settings, timeout=args.timeout) for name in SERVICES}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, state in report.items():
            mark = "ok  " if state["ok"] else "DOWN"
            extra = state.get("error") or state.get("status", "")
            print(f"{mark} {name:<8} {extra}")
    return 0 if all(s["ok"] for s in report.values()) else 1


def cmd_token(args: argparse.Namespace) -> int:
    """Print an operator token for ``--aud``."""
    settings = CommonSettings()
    try:
        signer = TokenSigner.from_keys_dir(settings.keys_dir, args.sub)
        print(signer.sign(args.aud, ttl=args.ttl))
    except (RuntimeError, ValueError) as exc:
        print(f"pagi token: {exc}", file=sys.stderr)
        return 1
    return 0


SIGN_IN_MAX_TTL = 600
"""The longest-lived link ``pagi console`` makes (the bff accepts up to its own setting)."""


def cmd_console(args: argparse.Namespace) -> int:
    """Print a one-time sign-in link to the console, signed with the operator's key."""
    settings = CommonSettings()
    person = args.person
    if not is_person(person):
        print(
            f"pagi console: {person!r} is not a person's name (lower-case letters, digits,"
            " '.', '_', '-'; not a service's name)",
            file=sys.stderr,
        )
        return 2
    if not 10 <= args.ttl <= SIGN_IN_MAX_TTL:
        print(f"pagi console: --ttl must be 10..{SIGN_IN_MAX_TTL} seconds", file=sys.stderr)
        return 2
    try:
        signer = TokenSigner.from_keys_dir(settings.keys_dir, SIGN_IN_ISSUER)
    except (RuntimeError, ValueError) as exc:
        print(f"pagi console: {exc}", file=sys.stderr)
        return 1
    subject = None if person == SIGN_IN_ISSUER else person
    token = signer.sign(SIGN_IN_AUDIENCE, ttl=args.ttl, subject=subject)
    base = (args.url or settings.bff_url).rstrip("/")
    # The token rides in the fragment: browsers never send it to a server, so it
    # reaches no access log; the page takes it out of the address bar at once.
    print(f"{base}/console/#sign-in={token}")
    print(
        f"pagi console: a link for {person}, good for one sign-in within {args.ttl} s",
        file=sys.stderr,
    )
    return 0


def cmd_keys_init(args: argparse.Namespace) -> int:
    """Create missing key pairs (all of them with ``--force``)."""
    keys_dir = Path(args.dir) if args.dir else CommonSettings().keys_dir
    created = generate_keys(keys_dir, overwrite=args.force)
    if created:
        print(f"created key pairs in {keys_dir}: {', '.join(created)}")
    else:
        print(f"every key pair already exists in {keys_dir}")
    return 0


def cmd_policy_check(args: argparse.Namespace) -> int:
    """Validate a sandbox policy file."""
    from cli.policy import check_command

    return check_command(Path(args.file))


def cmd_env_build(args: argparse.Namespace) -> int:
    """Build the sandbox's package environments."""
    from cli.envs import build_command

    return build_command(args.names, args.force, Path(args.policy) if args.policy else None)


def cmd_env_status(args: argparse.Namespace) -> int:
    """Check the sandbox's package environments."""
    from cli.envs import status_command

    return status_command(args.names, args.json, Path(args.policy) if args.policy else None)


def cmd_audit_tail(args: argparse.Namespace) -> int:
    """Show the newest sandbox audit records."""
    from cli.audit import tail_command

    return tail_command(Path(args.file) if args.file else None, args.lines, args.follow)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pagi``."""
    parser = argparse.ArgumentParser(prog="pagi", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the whole stack and stream its logs")
    up.add_argument("services", nargs="*", help=f"subset of {', '.join(SERVICES)}")
    up.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for health")
    up.set_defaults(func=cmd_up)

    serve = sub.add_parser("serve", help="run one service in the foreground")
    serve.add_argument("service", choices=SERVICES)
    serve.set_defaults(func=cmd_serve)

    status = sub.add_parser("status", help="health of every service")
    status.add_argument("--json", action="store_true")
    status.add_argument("--timeout", type=float, default=2.0)
    status.set_defaults(func=cmd_status)

    token = sub.add_parser("token", help="print a token for curl")
    token.add_argument("--aud", required=True, choices=SERVICES, help="the service to call")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    token.add_argument("--sub", default="operator", choices=IDENTITIES, help=argparse.SUPPRESS)
    token.set_defaults(func=cmd_token)

    console = sub.add_parser("console", help="print a one-time sign-in link to the console")
    console.add_argument(
        "--as",
        dest="person",
        default=SIGN_IN_ISSUER,
        help="whom the session is for (default: operator); the policy's callers and"
        " PAGI_OPERATORS decide what they may do",
    )
    console.add_argument(
        "--ttl", type=int, default=DEFAULT_SIGN_IN_TTL, help="seconds the link stays usable"
    )
    console.add_argument("--url", help="the bff's address as the browser reaches it")
    console.set_defaults(func=cmd_console)

    keys = sub.add_parser("keys", help="key pairs")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    init = keys_sub.add_parser("init", help="create the key pair of every identity")
    init.add_argument("--dir", help="keys dir (default: PAGI_KEYS_DIR or .pagi/keys)")
    init.add_argument("--force", action="store_true", help="replace existing keys")
    init.set_defaults(func=cmd_keys_init)

    policy = sub.add_parser("policy", help="sandbox policy files")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_sub.add_parser("check", help="validate a policy file")
    check.add_argument("file")
    check.set_defaults(func=cmd_policy_check)

    env = sub.add_parser("env", help="package environments of sandbox tools")
    env_sub = env.add_subparsers(dest="env_command", required=True)
    env_build = env_sub.add_parser(
        "build", help="build the environments the policy names (those missing, or NAME...)"
    )
    env_build.add_argument("names", nargs="*", metavar="NAME")
    env_build.add_argument("--force", action="store_true", help="rebuild even when ready")
    env_build.add_argument("--policy", help="policy file (default: PAGI_SANDBOX_POLICY)")
    env_build.set_defaults(func=cmd_env_build)
    env_status = env_sub.add_parser("status", help="check each environment as the sandbox does")
    env_status.add_argument("names", nargs="*", metavar="NAME")
    env_status.add_argument("--json", action="store_true")
    env_status.add_argument("--policy", help="policy file (default: PAGI_SANDBOX_POLICY)")
    env_status.set_defaults(func=cmd_env_status)

    audit = sub.add_parser("audit", help="sandbox audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    tail = audit_sub.add_parser("tail", help="show the newest audit records")
    tail.add_argument("-n", "--lines", type=int, default=20)
    tail.add_argument("-f", "--follow", action="store_true")
    tail.add_argument("--file", help="audit file (default: from sandbox settings)")
    tail.set_defaults(func=cmd_audit_tail)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``pagi`` console script."""
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))
