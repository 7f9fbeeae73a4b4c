"""The gateway's gRPC server: ModelGateway + health + reflection, behind the auth interceptor."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway.admission import Admission
from gateway.backends.base import PlanBackend
from gateway.backends.local import LocalPlanner
from gateway.backends.openai import OpenAIBackend
from gateway.grpc_metrics import MetricsInterceptor
from gateway.interceptor import AuthInterceptor
from gateway.metrics import GatewayMetrics
from gateway.service import ModelGatewayService, ServiceLimits
from gateway.settings import GatewaySettings
from pagi import metric_catalogue as prometheus
from pagi.auth import TokenVerifier, TrustStore
from pagi.logging import log_event
from pagi.metrics import CounterFromTotal
from proto import model_gateway_pb2, model_gateway_pb2_grpc

logger = logging.getLogger(__name__)

SERVICE_NAME = model_gateway_pb2.DESCRIPTOR.services_by_name["ModelGateway"].full_name
# Room for the other PlanRequest fields and framing on top of the prompt (or
# conversation) limit: a slightly oversized request still gets a clear
# INVALID_ARGUMENT, a far larger message is refused by gRPC itself
# (RESOURCE_EXHAUSTED).
MESSAGE_OVERHEAD_BYTES = 4096
MAX_CONCURRENT_RPCS = 512


def max_receive_bytes(settings: GatewaySettings) -> int:
    """The largest message the gateway reads; gRPC refuses a larger one unparsed.

    Room for the largest request a setting allows (a prompt or a whole
    conversation), plus the message's own framing.
    """
    largest = max(
        settings.pagi_gateway_max_prompt_bytes, settings.pagi_gateway_max_conversation_bytes
    )
    return largest + MESSAGE_OVERHEAD_BYTES


def build_backend(settings: GatewaySettings) -> PlanBackend:
    """The backend the settings choose (raises RuntimeError when it cannot be built)."""
    if settings.model_backend == "openai":
        return OpenAIBackend(
            base_url=settings.model_base_url,
            model=settings.model,
            api_key=settings.api_key(),
            max_retries=settings.pagi_gateway_max_retries,
            retry_base_seconds=settings.pagi_gateway_retry_base_seconds,
            retry_cap_seconds=settings.pagi_gateway_retry_cap_seconds,
            max_connections=settings.pagi_gateway_max_concurrent_calls,
        )
    return LocalPlanner(model=settings.model)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


@dataclass
class GatewayServer:
    """A started gateway: the gRPC server, the port it listens on, its parts."""

    server: grpc.aio.Server
    port: int
    backend: PlanBackend
    health: health.aio.HealthServicer
    service: ModelGatewayService

    async def stop(self, grace: float | None = 2.0) -> None:
        """Report NOT_SERVING, finish in-flight calls within ``grace``, release the backend."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await self.backend.aclose()
        log_event(logger, "gateway_stopped", port=self.port)


async def start_server(
    settings: GatewaySettings,
    trust: TrustStore | None = None,
    backend: PlanBackend | None = None,
    port: int | None = None,
) -> GatewayServer:
    """Build and start the gateway on PAGI_BIND_HOST and ``port`` (default: the contract's).

    Port 0 picks a free port; :attr:`GatewayServer.port` tells which.
    """
    trust = trust or TrustStore.from_keys_dir(settings.keys_dir)
    backend = backend or build_backend(settings)
    verifier = TokenVerifier(audience="gateway", trust=trust)
    server = grpc.aio.server(
        # Metrics first (outermost): calls the auth interceptor refuses are counted too.
        interceptors=[MetricsInterceptor(), AuthInterceptor(verifier, settings.allowed_callers)],
        options=[
            ("grpc.max_receive_message_length", max_receive_bytes(settings)),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            # Without this a second gateway on the same port would silently
            # share it instead of failing to start.
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
    )
    service = ModelGatewayService(
        backend=backend,
        limits=ServiceLimits(
            max_prompt_bytes=settings.pagi_gateway_max_prompt_bytes,
            default_max_steps=min(
                settings.pagi_gateway_default_max_steps, settings.pagi_gateway_max_steps
            ),
            max_steps=settings.pagi_gateway_max_steps,
            max_deadline_seconds=settings.pagi_gateway_max_deadline_seconds,
            max_conversation_bytes=settings.pagi_gateway_max_conversation_bytes,
        ),
        admission=Admission(
            settings.pagi_gateway_max_concurrent_calls,
            settings.pagi_gateway_queue_timeout_seconds,
        ),
        metrics=GatewayMetrics(),
    )
    model_gateway_pb2_grpc.add_ModelGatewayServicer_to_server(service, server)
    retries = CounterFromTotal(prometheus.MODEL_UPSTREAM_RETRIES.labels(backend.name))

    def count_live_state() -> None:
        prometheus.MODEL_CALLS_IN_FLIGHT.labels().set(service.admission.in_flight)
        retries.set_total(backend.counters().get("upstream_retries", 0))

    prometheus.GATEWAY.refresh_on_scrape("gateway", count_live_state)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = _address(
        settings.pagi_bind_host, settings.model_gateway_grpc_port if port is None else port
    )
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if not bound:
        await backend.aclose()
        raise RuntimeError(f"cannot listen on {address} (in use, or not a local address)")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log_event(
        logger,
        "gateway_started",
        host=settings.pagi_bind_host,
        port=bound,
        **backend.describe(),
        max_concurrent_calls=settings.pagi_gateway_max_concurrent_calls,
    )
    if backend.name == "local":
        log_event(
            logger,
            "gateway_backend_hint",
            hint="plans come from the built-in planner; to use a model server set "
            "MODEL_BACKEND=openai and MODEL_BASE_URL=http://HOST:PORT/v1 "
            "(optionally MODEL_NAME, MODEL_API_KEY or MODEL_API_KEY_FILE)",
        )
    return GatewayServer(server, bound, backend, health_servicer, service)
