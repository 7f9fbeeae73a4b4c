"""``python -m sandbox``: serve the sandbox on RUST_SANDBOX_PORT."""

from __future__ import annotations

import logging
import sys

from pagi.logging import configure_logging, log_event
from pagi.server import run_http_service
from sandbox.audit import AuditLog
from sandbox.policy import PolicyError
from sandbox.settings import SandboxSettings

logger = logging.getLogger("sandbox.main")


def main() -> None:
    """Load settings and the policy, then serve; exit 2 when it cannot start safely.

    That is: an invalid policy, no keys to verify tokens with, or an audit
    file that cannot be written.
    """
    settings = SandboxSettings()
    configure_logging("sandbox", settings.log_level)
    from sandbox.app import create_app

    try:
        app = create_app(settings)
    except PolicyError as exc:
        log_event(logger, "policy_invalid", logging.CRITICAL, error=exc.render())
        print(
            f"sandbox: refusing to start, the policy is invalid:\n{exc.render()}", file=sys.stderr
        )
        sys.exit(2)
    except (RuntimeError, ValueError) as exc:  # e.g. no keys to verify tokens with
        log_event(logger, "startup_failed", logging.CRITICAL, error=str(exc))
        print(f"sandbox: refusing to start: {exc}", file=sys.stderr)
        sys.exit(2)
    audit = AuditLog(settings.audit_log_path)
    audit.open()
    audit.close()
    if audit.error is not None:
        print(f"sandbox: refusing to start: {audit.error}", file=sys.stderr)
        sys.exit(2)
    run_http_service(app, "sandbox", settings)
