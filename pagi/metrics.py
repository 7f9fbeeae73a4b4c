"""Prometheus metrics: one registry per service, the HTTP middleware, ``GET /metrics``.

Every service exposes ``GET /metrics`` in the Prometheus text format (the
gateway on its own small HTTP port): request rate, errors and duration per
route template, the process's own figures, and PAGI's metrics, which are
all declared in :mod:`pagi.metric_catalogue`, one line each.

Label values never come from a request: routes are templates, methods
and statuses are the protocol's, tools come from the policy, reasons and
outcomes from fixed sets in the code. As a last guard each labelled metric
keeps at most :data:`MAX_SERIES` label combinations; any further one is
counted under ``other`` (and logged once), so no input can grow a scrape
without bound.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pagi.errors import ApiError
from pagi.logging import log_event

logger = logging.getLogger(__name__)

# ``*_created`` series double every counter for a figure no dashboard reads.
disable_created_metrics()

MAX_SERIES = 200
"""Label combinations one metric keeps; further ones are counted under ``other``."""
OTHER = "other"
UNMATCHED_ROUTE = "unmatched"
"""The route label of a request no route matched (a 404 from routing)."""

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
"""Seconds; fine at the bottom, where a warm tool run (~3 ms) and most calls fall."""

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

MetricT = TypeVar("MetricT", Counter, Gauge, Histogram)


class Family(Generic[MetricT]):
    """A labelled metric whose label combinations are capped at :data:`MAX_SERIES`."""

    def __init__(self, metric: MetricT, label_names: Sequence[str]) -> None:
        self.metric = metric
        self.label_names = tuple(label_names)
        self._children: dict[tuple[str, ...], MetricT] = {}
        self._lock = threading.Lock()
        self._overflowed = False

    def labels(self, *values: object) -> MetricT:
        """The series for these label values (``other`` once the cap is reached).

        A metric without labels is its own one series: ``labels()``.
        """
        if not self.label_names:
            return self.metric
        key = tuple(str(value) for value in values)
        child = self._children.get(key)
        if child is None:
            child = self._add(key)
        return child

    def _add(self, key: tuple[str, ...]) -> MetricT:
        with self._lock:
            child = self._children.get(key)
            if child is not None:
                return child
            if len(self._children) >= MAX_SERIES:
                if not self._overflowed:
                    self._overflowed = True
                    log_event(
                        logger,
                        "metric_series_capped",
                        logging.WARNING,
                        metric=self.metric._name,
                        limit=MAX_SERIES,
                    )
                return self.metric.labels(*(OTHER for _ in self.label_names))
            child = self.metric.labels(*key)
            self._children[key] = child
            return child

    def clear(self) -> None:
        """Forget every series (for gauges that describe the present only)."""
        with self._lock:
            self.metric.clear()
            self._children.clear()


class CounterFromTotal:
    """A counter fed with a running total kept elsewhere (e.g. restarts in a report).

    Only increases are added; a total that goes down (its owner restarted)
    counts from zero again, as Prometheus' ``rate`` expects of a reset.
    """

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self._last = 0.0

    def set_total(self, total: float) -> None:
        """Bring the counter up to ``total``."""
        delta = total - self._last if total >= self._last else total
        if delta > 0:
            self.counter.inc(delta)
        self._last = total


class ServiceMetrics:
    """One service's registry: its HTTP (or gRPC) figures, the process, its own metrics."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._refreshers: dict[str, Callable[[], None]] = {}
        self.http_requests = self.counter(
            "pagi_http_requests_total",
            "HTTP requests answered, by method, route template and status.",
            ("method", "route", "status"),
        )
        self.http_duration = self.histogram(
            "pagi_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by method and route.",
            ("method", "route"),
        )
        self.http_in_flight = self.gauge(
            "pagi_http_requests_in_flight", "HTTP requests being served now."
        )

    # -------------------------------------------------------------- declaring

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Family[Counter]:
        """A counter of this service (name ends in ``_total``)."""
        return Family(Counter(name, documentation, labels, registry=self.registry), labels)

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Family[Gauge]:
        """A gauge of this service."""
        return Family(Gauge(name, documentation, labels, registry=self.registry), labels)

    def histogram(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Family[Histogram]:
        """A histogram of this service (seconds unless the name says otherwise)."""
        metric = Histogram(name, documentation, labels, registry=self.registry, buckets=buckets)
        return Family(metric, labels)

    # -------------------------------------------------------------- exposing

    def refresh_on_scrape(self, key: str, refresh: Callable[[], None]) -> None:
        """Call ``refresh()`` before each scrape (to set gauges read from live state).

        One refresher per ``key``: a service built again (as tests do) replaces its own.
        """
        self._refreshers[key] = refresh

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format, refreshed."""
        for key, refresh in list(self._refreshers.items()):
            try:
                refresh()
            except Exception as exc:  # a broken refresher must not break the scrape
                log_event(logger, "metrics_refresh_failed", logging.ERROR, key=key, error=repr(exc))
        return generate_latest(self.registry)


_SERVICES: dict[str, ServiceMetrics] = {}
_SERVICES_LOCK = threading.Lock()


def metrics_of(service: str) -> ServiceMetrics:
    """The metrics of ``service`` (created on first use, one per process and service)."""
    with _SERVICES_LOCK:
        found = _SERVICES.get(service)
        if found is None:
            found = _SERVICES[service] = ServiceMetrics(service)
        return found


# --------------------------------------------------------------------------- HTTP


def route_of(scope: Scope) -> str:
    """The template of the route that served ``scope`` (never the raw path)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


class HttpMetricsMiddleware:
    """Pure ASGI middleware: counts and times every request by route template.

    It wraps the request-id and body-limit middleware, so that refusals
    made before routing (a 413) are counted too; a handler cancelled
    because its client went away counts as status 499.
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def _series_of(self, method: str, route: str, status: int) -> tuple[Counter, Histogram]:
        key = (method, route, status)
        found = self._series.get(key)
        if found is None:
            found = (
                self.metrics.http_requests.labels(method, route, status),
                self.metrics.http_duration.labels(method, route),
            )
            if len(self._series) < MAX_SERIES:
                self._series[key] = found
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in HTTP_METHODS else OTHER
        started = time.perf_counter()
        status = 0
        done = False

        def finish(final_status: int) -> None:
            nonlocal done
            if done:
                return
            done = True
            requests, duration = self._series_of(method, route_of(scope), final_status)
            requests.inc()
            duration.observe(time.perf_counter() - started)

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                finish(status)

        in_flight = self.metrics.http_in_flight.labels()
        in_flight.inc()
        try:
            await self.app(scope, receive, counting_send)
        except BaseException as exc:
            cancelled = not isinstance(exc, Exception)
            finish(499 if cancelled else 500)
            raise
        finally:
            in_flight.dec()
            finish(status or 499)


def metrics_router(service: str, token: str | None) -> APIRouter:
    """``GET /metrics`` of ``service``; with ``token``, only for ``Authorization: Bearer TOKEN``."""
    router = APIRouter()
    metrics = metrics_of(service)
    expected = f"Bearer {token}".encode() if token else None

    @router.get("/metrics", include_in_schema=False)
    async def scrape(request: Request) -> Response:
        if expected is not None:
            given = request.headers.get("authorization", "").encode("latin-1", "replace")
            if not hmac.compare_digest(given, expected):
                raise ApiError(
                    401,
                    "unauthorized",
                    "/metrics needs the scrape token (PAGI_METRICS_TOKEN_FILE)",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return router
