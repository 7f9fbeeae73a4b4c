"""Probing a service's health from outside: HTTP ``/health`` or gRPC health."""

from __future__ import annotations

from typing import Any

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pagi.settings import CommonSettings


def check_service(service: str, settings: CommonSettings, timeout: float = 1.0) -> dict[str, Any]:
    """``{"ok": bool, ...}`` for one service, never raising."""
    try:
        if service == "gateway":
            with grpc.insecure_channel(settings.gateway_target) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            return {"ok": status == "SERVING", "status": status}
        response = httpx.get(f"{settings.url_of(service)}/health", timeout=timeout, trust_env=False)
        body = response.json()
        if not isinstance(body, dict):
            return {"ok": False, "error": "health answer is not a JSON object"}
        # The name matters: when a port is reused, another service may answer there.
        ok = (
            response.status_code == 200
            and body.get("status") == "ok"
            and body.get("service") == service
        )
        return {**body, "ok": ok}
    except (grpc.RpcError, httpx.HTTPError, ValueError) as exc:
        return {"ok": False, "error": type(exc).__name__}
