"""``/metrics``: route templates as labels, bounded series, the scrape token, the catalogue."""

from __future__ import annotations

import asyncio
import itertools
import re
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pagi import metric_catalogue
from pagi.app import create_app
from pagi.metrics import MAX_SERIES, OTHER, CounterFromTotal, Family, metrics_of
from pagi.settings import CommonSettings

REPO = Path(__file__).resolve().parents[3]
_names = itertools.count()


def fresh_service() -> str:
    """A service name of its own, so counts start at zero in every test."""
    return f"test{next(_names)}"


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample called ``name`` in an exposition, keyed by its sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def client_of(app) -> httpx.AsyncClient:  # noqa: ANN001
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://svc")


def demo_app(service: str, token: str | None = None, max_body_bytes: int = 1024):  # noqa: ANN201
    app = create_app(service, metrics_token=token, max_body_bytes=max_body_bytes)

    @app.get("/items/{item_id}")
    async def item(item_id: str) -> dict:
        return {"id": item_id}

    @app.post("/upload")
    async def upload(body: dict) -> dict:
        return {}

    @app.get("/boom")
    async def boom() -> dict:
        raise RuntimeError("bug")

    @app.get("/slow")
    async def slow() -> dict:
        await asyncio.sleep(30)
        return {}

    return app


async def test_requests_are_counted_by_route_template_never_by_raw_path() -> None:
    service = fresh_service()
    async with client_of(demo_app(service)) as client:
        for item_id in ("a", "b", "<script>", "x" * 300):
            assert (await client.get(f"/items/{item_id}")).status_code == 200
        assert (await client.get("/no/such/path/secret-123")).status_code == 404
        assert (await client.get("/boom")).status_code == 500
        text = (await client.get("/metrics")).text
    counts = samples(text, "pagi_http_requests_total")
    assert counts[(("method", "GET"), ("route", "/items/{item_id}"), ("status", "200"))] == 4
    assert counts[(("method", "GET"), ("route", "unmatched"), ("status", "404"))] == 1
    assert counts[(("method", "GET"), ("route", "/boom"), ("status", "500"))] == 1
    assert "secret-123" not in text and "<script>" not in text
    durations = samples(text, "pagi_http_request_duration_seconds_count")
    assert durations[(("method", "GET"), ("route", "/items/{item_id}"))] == 4


async def test_refusals_before_routing_are_counted() -> None:
    service = fresh_service()
    async with client_of(demo_app(service, max_body_bytes=16)) as client:
        answer = await client.post("/upload", content=b"{" + b" " * 64 + b"}")
        assert answer.status_code == 413
        text = (await client.get("/metrics")).text
    counts = samples(text, "pagi_http_requests_total")
    assert counts[(("method", "POST"), ("route", "unmatched"), ("status", "413"))] == 1


async def test_a_request_whose_client_goes_away_counts_as_499_and_is_no_longer_in_flight() -> None:
    service = fresh_service()
    app = demo_app(service)
    async with client_of(app) as client:
        call = asyncio.create_task(client.get("/slow"))
        await asyncio.sleep(0.2)
        text = metrics_of(service).exposition().decode()
        assert samples(text, "pagi_http_requests_in_flight")[()] == 1
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        text = metrics_of(service).exposition().decode()
    assert samples(text, "pagi_http_requests_in_flight")[()] == 0
    counts = samples(text, "pagi_http_requests_total")
    assert counts[(("method", "GET"), ("route", "/slow"), ("status", "499"))] == 1


async def test_unknown_methods_are_one_label() -> None:
    service = fresh_service()
    async with client_of(demo_app(service)) as client:
        await client.request("BREW", "/items/x")
        await client.request("PROPFIND", "/items/x")
        text = (await client.get("/metrics")).text
    counts = samples(text, "pagi_http_requests_total")  # the scrape itself is counted after it
    assert counts == {(("method", OTHER), ("route", "/items/{item_id}"), ("status", "405")): 2}


async def test_the_scrape_token_is_asked_for_when_set() -> None:
    service = fresh_service()
    async with client_of(demo_app(service, token="s3cret-token")) as client:
        refused = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer s3cret-tokem"})
        right = await client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert refused.status_code == wrong.status_code == 401
    assert refused.json()["error"] == "unauthorized"
    assert right.status_code == 200
    assert right.headers["content-type"].startswith("text/plain")
    assert "pagi_http_requests_total" in right.text


async def test_metrics_are_open_by_default() -> None:
    async with client_of(demo_app(fresh_service())) as client:
        answer = await client.get("/metrics")
    assert answer.status_code == 200
    assert "process_cpu_seconds_total" in answer.text  # the process's own figures too


def test_the_token_file_setting(tmp_path: Path) -> None:
    assert CommonSettings(_env_file=None).metrics_token() is None
    token_file = tmp_path / "scrape"
    token_file.write_text("abc123\n")
    assert CommonSettings(_env_file=None, pagi_metrics_token_file=token_file).metrics_token() == (
        "abc123"
    )
    token_file.write_text("   \n")
    with pytest.raises(RuntimeError, match="one printable ASCII token"):
        CommonSettings(_env_file=None, pagi_metrics_token_file=token_file).metrics_token()
    with pytest.raises(RuntimeError, match="cannot read") as refused:
        CommonSettings(_env_file=None, pagi_metrics_token_file=tmp_path / "none").metrics_token()
    assert "abc123" not in str(refused.value)


def test_a_metric_keeps_a_bounded_number_of_series() -> None:
    service = metrics_of(fresh_service())
    family: Family = service.counter("pagi_test_things_total", "things", ("thing",))
    for number in range(MAX_SERIES + 50):
        family.labels(f"value-{number}").inc()
    values = samples(service.exposition().decode(), "pagi_test_things_total")
    assert len(values) == MAX_SERIES + 1
    assert values[(("thing", OTHER),)] == 50


def test_a_counter_fed_with_totals_follows_increases_and_resets() -> None:
    service = metrics_of(fresh_service())
    family = service.counter("pagi_test_restarts_total", "restarts")
    counter = CounterFromTotal(family.labels())
    for total in (0, 2, 2, 5, 1, 3):  # 1: its owner started again from zero
        counter.set_total(total)
    assert samples(service.exposition().decode(), "pagi_test_restarts_total")[()] == 5 + 3


def test_refreshers_run_at_each_scrape_and_a_broken_one_does_not_break_it() -> None:
    service = metrics_of(fresh_service())
    gauge = service.gauge("pagi_test_level", "level")
    levels = iter((3, 7))
    service.refresh_on_scrape("level", lambda: gauge.labels().set(next(levels)))
    service.refresh_on_scrape("broken", lambda: 1 / 0)
    assert samples(service.exposition().decode(), "pagi_test_level")[()] == 3
    assert samples(service.exposition().decode(), "pagi_test_level")[()] == 7


def catalogue_names() -> list[str]:
    families = [
        value
        for value in vars(metric_catalogue).values()
        if isinstance(value, Family) and value.metric._name.startswith("pagi_")
    ]
    assert families
    names = []
    for family in families:
        metric = family.metric
        name = metric._name + ("_total" if metric._type == "counter" else "")
        names.append(name)
    return names


def test_catalogue_names_follow_the_conventions() -> None:
    for name in catalogue_names():
        assert re.fullmatch(r"pagi_(sandbox|agent|gateway|bff|memory|grpc|http)_[a-z_]+", name)


def test_every_metric_is_documented() -> None:
    operations = (REPO / "docs" / "operations.md").read_text()
    http = ["pagi_http_requests_total", "pagi_http_request_duration_seconds"]
    missing = [name for name in [*catalogue_names(), *http] if f"`{name}`" not in operations]
    assert not missing, f"not in docs/operations.md: {missing}"
