"""The generated modules in proto/ are exactly what the .proto produces."""

from __future__ import annotations

from pathlib import Path

from proto import generate, model_gateway_pb2


def test_regenerating_changes_nothing(tmp_path: Path) -> None:
    generated = generate.generate(tmp_path)
    assert len(generated) == 3
    for path in generated:
        committed = generate.PACKAGE_DIR / path.name
        assert path.read_bytes() == committed.read_bytes(), (
            f"{committed.name} is stale: run `python -m proto.generate`"
        )


def test_generated_code_imports_as_a_package() -> None:
    text = (generate.PACKAGE_DIR / "model_gateway_pb2_grpc.py").read_text()
    assert "from proto import model_gateway_pb2" in text


def test_the_first_release_fields_keep_their_numbers_and_types() -> None:
    """Old clients send prompt=1 and read steps=1, model=2, latency_ms=3."""
    request = model_gateway_pb2.PlanRequest.DESCRIPTOR.fields_by_name
    response = model_gateway_pb2.PlanResponse.DESCRIPTOR.fields_by_name
    assert (request["prompt"].number, request["prompt"].type) == (1, 9)  # string
    assert (response["steps"].number, response["steps"].type) == (1, 9)
    assert response["steps"].is_repeated
    assert (response["model"].number, response["model"].type) == (2, 9)
    assert (response["latency_ms"].number, response["latency_ms"].type) == (3, 1)  # double
    service = model_gateway_pb2.DESCRIPTOR.services_by_name["ModelGateway"]
    assert service.full_name == "pagi.gateway.v1.ModelGateway"
    assert {m.name for m in service.methods} >= {"GetPlan", "StreamPlan", "GetMetrics"}
