"""``python -m sandbox``: serve the sandbox on RUST_SANDBOX_PORT."""

from __future__ import annotations

from fastapi import FastAPI

from pagi.server import serve_http_service
from sandbox.audit import AuditLog
from sandbox.policy import PolicyError
from sandbox.settings import SandboxSettings


def build_app(settings: SandboxSettings) -> FastAPI:
    """The sandbox app, or RuntimeError when it cannot start safely.

    That is: an invalid policy, no keys to verify tokens with, or an audit
    file that cannot be written.
    """
    from sandbox.app import create_app

    try:
        app = create_app(settings)
    except PolicyError as exc:
        raise RuntimeError(f"the policy is invalid:\n{exc.render()}") from None
    audit = AuditLog(settings.audit_log_path)
    audit.open()
    audit.close()
    if audit.error is not None:
        raise RuntimeError(audit.error)
    return app


def main() -> None:
    """Serve the sandbox; exit 2 with a message when it cannot start safely."""
    serve_http_service("sandbox", SandboxSettings, build_app)
