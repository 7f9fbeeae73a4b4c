"""OpenTelemetry traces across the services, exported only when an OTLP endpoint is set.

With ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``)
set, a service exports its spans there (OTLP over HTTP, protobuf) in
batches: FastAPI's own telemetry makes a span for every HTTP request it
serves, reading the caller's W3C ``traceparent``; every outgoing httpx call
and every gRPC call, in and out, gets a span and carries ``traceparent``
on. Each server span holds the request's id as ``pagi.request_id``, so a
trace and the log lines of one request find each other.

Without the variable nothing is set up: no SDK, no instrumentation, no
span objects, nothing exported; FastAPI finds no tracer provider and
serves requests as before. ``OTEL_SDK_DISABLED=true`` turns tracing off
even with an endpoint. The SDK's other standard variables apply
(``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_SCHEDULE_DELAY``,
``OTEL_EXPORTER_OTLP_HEADERS``, ...).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, MutableMapping
from typing import Any

from pagi import __version__
from pagi.logging import log_event

logger = logging.getLogger(__name__)

REQUEST_ID_ATTRIBUTE = "pagi.request_id"
UNTRACED_PATHS = frozenset({"/health", "/metrics"})
"""Probes and scrapes: frequent, and no part of any request's story."""
UNTRACED_GRPC_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.")

_active = False


def tracing_wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces to be exported."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )


def tracing_active() -> bool:
    """Whether this process records and exports spans."""
    return _active


def configure_tracing(service: str) -> bool:
    """Set up tracing for ``service`` when the environment asks for it; whether it did.

    Call once, at start, before any app, HTTP client, gRPC server or channel
    is built (the instrumentation applies to those built afterwards).
    """
    global _active
    if _active or not tracing_wanted():
        return _active
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol.strip() != "http/protobuf":
        log_event(
            logger,
            "tracing_not_started",
            logging.WARNING,
            reason=f"OTLP protocol {protocol!r} is not supported: PAGI exports http/protobuf",
        )
        return False
    # Imported here: a process that does not trace never loads the SDK.
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.grpc import (
        GrpcAioInstrumentorClient,
        GrpcAioInstrumentorServer,
        filters,
    )
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create(
        {"service.name": service, "service.namespace": "pagi", "service.version": __version__}
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    untraced = filters.any_of(*(filters.service_prefix(name) for name in UNTRACED_GRPC_SERVICES))
    GrpcAioInstrumentorServer(filter_=filters.negate(untraced)).instrument(tracer_provider=provider)
    GrpcAioInstrumentorClient(filter_=filters.negate(untraced)).instrument(tracer_provider=provider)
    _active = True
    log_event(logger, "tracing_started", service=service)
    return True


def skip_tracing(scope: MutableMapping[str, Any]) -> bool:
    """FastAPI's ``telemetry["exclude"]``: no span for probes and scrapes."""
    return scope.get("path") in UNTRACED_PATHS


def annotate_request_id(request_id: str) -> None:
    """Put the request id on the span being served (nothing when tracing is off)."""
    if _active:
        from opentelemetry import trace

        trace.get_current_span().set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
