"""A gateway served in-process on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from gateway.backends.base import PlanBackend
from gateway.server import GatewayServer, start_server
from gateway.settings import GatewaySettings
from proto import model_gateway_pb2_grpc


@dataclass
class RunningGateway:
    """A gateway serving on a free loopback port, with a channel to it."""

    server: GatewayServer
    channel: grpc.aio.Channel
    stub: model_gateway_pb2_grpc.ModelGatewayStub

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"


def gateway_settings(keys_dir: Path, **overrides: object) -> GatewaySettings:
    """Settings for a test gateway; the process environment cannot change them."""
    values: dict[str, object] = {
        "pagi_keys_dir": keys_dir,
        "pagi_bind_host": "127.0.0.1",
        "model_backend": "local",
        "model_name": None,
        "model_api_key": None,
        "model_api_key_file": None,
    }
    values.update(overrides)
    return GatewaySettings(_env_file=None, **values)  # type: ignore[arg-type]


@asynccontextmanager
async def serve_gateway(
    keys_dir: Path, backend: PlanBackend | None = None, port: int = 0, **overrides: object
) -> AsyncIterator[RunningGateway]:
    """Start a gateway (on a free port by default) and stop it afterwards."""
    settings = gateway_settings(keys_dir, **overrides)
    server = await start_server(settings, backend=backend, port=port)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield RunningGateway(server, channel, model_gateway_pb2_grpc.ModelGatewayStub(channel))
    finally:
        await channel.close()
        await server.stop(grace=0)


def auth(token: str, request_id: str | None = None) -> tuple[tuple[str, str], ...]:
    """gRPC metadata carrying a bearer token (and a request id)."""
    metadata = [("authorization", f"Bearer {token}")]
    if request_id:
        metadata.append(("x-request-id", request_id))
    return tuple(metadata)
