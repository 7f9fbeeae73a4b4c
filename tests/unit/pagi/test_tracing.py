"""Tracing is off unless an OTLP endpoint is set: nothing loaded, nothing exported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pagi.tracing import tracing_wanted

REPO = Path(__file__).resolve().parents[3]

PROBE = """
import sys
from opentelemetry import trace
from pagi.tracing import configure_tracing, tracing_active
started = configure_tracing("sandbox")
import agent.app, bff.app, memory.app, sandbox.app, gateway.server  # every service's code
print(started, tracing_active(), "opentelemetry.sdk.trace" in sys.modules,
      type(trace.get_tracer_provider()).__name__)
"""


def probe(**env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\n")[-2]


def test_without_an_endpoint_nothing_is_set_up() -> None:
    assert probe() == "False False False ProxyTracerProvider"


def test_an_endpoint_sets_up_the_sdk() -> None:
    line = probe(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")
    assert line == "True True True TracerProvider"


def test_the_sdk_can_be_disabled_and_only_http_protobuf_is_exported() -> None:
    endpoint = "http://127.0.0.1:9"
    assert probe(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_SDK_DISABLED="true").startswith(
        "False False False"
    )
    assert probe(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_EXPORTER_OTLP_PROTOCOL="grpc") == (
        "False False False ProxyTracerProvider"
    )


def test_which_variables_ask_for_traces() -> None:
    assert not tracing_wanted({})
    assert not tracing_wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "})
    assert tracing_wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing_wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert not tracing_wanted(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_SDK_DISABLED": "TRUE"}
    )
