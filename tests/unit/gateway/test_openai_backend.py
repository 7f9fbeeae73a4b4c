"""The OpenAI-compatible backend against a real HTTP server on loopback."""

from __future__ import annotations

import random
import time

import pytest

from gateway.backends.base import BackendError, Deadline, ErrorCode
from gateway.backends.openai import OpenAIBackend
from testing.fake_openai import PLAN_STEPS, FakeOpenAI
from testing.stack import closed_port

API_KEY = "sk-test-7f3a9c1e-DO-NOT-LEAK"


def backend_for(url: str, **overrides: object) -> OpenAIBackend:
    options: dict[str, object] = {
        "model": "fake-model",
        "api_key": API_KEY,
        "max_retries": 3,
        "retry_base_seconds": 0.05,
        "retry_cap_seconds": 0.2,
    }
    options.update(overrides)
    return OpenAIBackend(url, **options)  # type: ignore[arg-type]


async def plan(url: str, seconds: float = 5.0, **overrides: object) -> list[str]:
    backend = backend_for(url, **overrides)
    try:
        return await backend.plan("analyse yesterday's errors", 8, Deadline.after(seconds))
    finally:
        await backend.aclose()


async def stream(url: str, seconds: float = 5.0, got: list[str] | None = None) -> list[str]:
    backend = backend_for(url)
    steps = got if got is not None else []
    try:
        async for step in backend.stream("analyse yesterday's errors", 8, Deadline.after(seconds)):
            steps.append(step)
    finally:
        await backend.aclose()
    return steps


async def failure_of(coroutine: object) -> BackendError:
    with pytest.raises(BackendError) as caught:
        await coroutine  # type: ignore[misc]
    return caught.value


# ---------------------------------------------------------------------- success


async def test_plan_from_a_json_reply(fake_openai: FakeOpenAI) -> None:
    assert await plan(fake_openai.url("ok")) == PLAN_STEPS
    [request] = fake_openai.of("ok")
    assert request.path == "/ok/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.body["model"] == "fake-model"
    assert request.body["stream"] is False
    system, user = request.body["messages"]
    assert system["role"] == "system" and "numbered plan" in system["content"]
    assert user == {"role": "user", "content": "analyse yesterday's errors"}


async def test_plan_ignores_preamble_and_markdown(fake_openai: FakeOpenAI) -> None:
    assert await plan(fake_openai.url("chatty")) == PLAN_STEPS


async def test_stream_from_server_sent_events(fake_openai: FakeOpenAI) -> None:
    assert await stream(fake_openai.url("ok")) == PLAN_STEPS
    [request] = fake_openai.of("ok")
    assert request.body["stream"] is True
    assert "text/event-stream" in request.headers["accept"]


async def test_stream_of_a_chatty_reply(fake_openai: FakeOpenAI) -> None:
    assert await stream(fake_openai.url("chatty")) == PLAN_STEPS


async def test_stream_from_a_server_that_ignores_stream_true(fake_openai: FakeOpenAI) -> None:
    assert await stream(fake_openai.url("nostream")) == PLAN_STEPS


async def test_max_steps_bounds_the_plan(fake_openai: FakeOpenAI) -> None:
    backend = backend_for(fake_openai.url("ok"))
    try:
        assert await backend.plan("x", 2, Deadline.after(5)) == PLAN_STEPS[:2]
        streamed = [s async for s in backend.stream("x", 3, Deadline.after(5))]
        assert streamed == PLAN_STEPS[:3]
    finally:
        await backend.aclose()


async def test_no_authorization_header_without_a_key(fake_openai: FakeOpenAI) -> None:
    assert await plan(fake_openai.url("ok"), api_key=None) == PLAN_STEPS
    assert "authorization" not in fake_openai.of("ok")[0].headers


# ---------------------------------------------------------------------- retries


async def test_429_then_200_retries_after_the_retry_after_delay(fake_openai: FakeOpenAI) -> None:
    started = time.monotonic()
    assert await plan(fake_openai.url("flaky429"), seconds=3) == PLAN_STEPS
    elapsed = time.monotonic() - started
    assert len(fake_openai.of("flaky429")) == 2
    assert 0.3 <= elapsed < 3.0  # the server asked for 0.3 s; the deadline is 3 s


async def test_5xx_is_retried_with_backoff_until_it_succeeds(fake_openai: FakeOpenAI) -> None:
    assert await plan(fake_openai.url("flaky503"), seconds=3) == PLAN_STEPS
    assert len(fake_openai.of("flaky503")) == 3


async def test_stream_retries_before_the_first_step(fake_openai: FakeOpenAI) -> None:
    assert await stream(fake_openai.url("flaky503")) == PLAN_STEPS
    assert len(fake_openai.of("flaky503")) == 3


async def test_persistent_5xx_gives_unavailable_after_bounded_retries(
    fake_openai: FakeOpenAI,
) -> None:
    started = time.monotonic()
    error = await failure_of(plan(fake_openai.url("down"), seconds=5))
    assert time.monotonic() - started < 3.0
    assert error.code == ErrorCode.UNAVAILABLE
    assert "503" in error.message and "the model is loading" in error.message
    assert len(fake_openai.of("down")) == 4  # the first try and max_retries=3 more


async def test_retries_stop_when_the_deadline_would_pass(fake_openai: FakeOpenAI) -> None:
    started = time.monotonic()
    # First backoff 0.4-0.8 s fits in 1 s; the second (0.8-1.6 s) does not.
    error = await failure_of(
        plan(fake_openai.url("down"), seconds=1.0, retry_base_seconds=0.8, retry_cap_seconds=2)
    )
    elapsed = time.monotonic() - started
    assert error.code == ErrorCode.UNAVAILABLE
    assert "gave up after 2 attempts" in error.message
    assert 0.4 <= elapsed < 1.0
    assert len(fake_openai.of("down")) == 2


async def test_retry_after_beyond_the_deadline_fails_at_once(fake_openai: FakeOpenAI) -> None:
    started = time.monotonic()
    error = await failure_of(plan(fake_openai.url("ratelimited"), seconds=3))
    assert time.monotonic() - started < 2.0
    assert error.code == ErrorCode.RESOURCE_EXHAUSTED
    assert "429" in error.message
    assert len(fake_openai.of("ratelimited")) == 1


def test_backoff_is_capped_exponential_with_jitter() -> None:
    backend = OpenAIBackend(
        "http://127.0.0.1:9/v1",
        model="m",
        retry_base_seconds=0.1,
        retry_cap_seconds=0.5,
        rng=random.Random(7),
    )
    for attempt, ceiling in ((1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (9, 0.5)):
        delays = [backend._backoff(attempt, None) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (attempt, delays)
        assert len(set(delays)) > 1  # jittered
    assert backend._backoff(1, 3.0) == 3.0  # Retry-After wins when longer


# ---------------------------------------------------------------------- failures


async def test_slow_server_gives_deadline_exceeded_on_time(fake_openai: FakeOpenAI) -> None:
    started = time.monotonic()
    error = await failure_of(plan(fake_openai.url("slow"), seconds=0.5))
    elapsed = time.monotonic() - started
    assert error.code == ErrorCode.DEADLINE_EXCEEDED
    assert 0.45 <= elapsed < 2.5


async def test_stream_stalling_mid_reply_gives_deadline_exceeded(fake_openai: FakeOpenAI) -> None:
    got: list[str] = []
    started = time.monotonic()
    error = await failure_of(stream(fake_openai.url("slowstream"), seconds=0.5, got=got))
    assert error.code == ErrorCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 2.5
    assert got == PLAN_STEPS[:1]


async def test_dead_address_gives_unavailable_quickly() -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    started = time.monotonic()
    error = await failure_of(plan(url, seconds=5))
    assert time.monotonic() - started < 3.0
    assert error.code == ErrorCode.UNAVAILABLE
    assert "unreachable" in error.message


@pytest.mark.parametrize("scenario", ["garbage", "nochoices", "empty"])
async def test_unparseable_replies_give_internal_with_the_reason(
    fake_openai: FakeOpenAI, scenario: str
) -> None:
    error = await failure_of(plan(fake_openai.url(scenario)))
    assert error.code == ErrorCode.INTERNAL
    expected = {"garbage": "not JSON", "nochoices": "no choices", "empty": "no plan steps"}
    assert expected[scenario] in error.message


@pytest.mark.parametrize("scenario", ["garbagestream", "nochoices", "empty"])
async def test_unparseable_streams_give_internal(fake_openai: FakeOpenAI, scenario: str) -> None:
    error = await failure_of(stream(fake_openai.url(scenario)))
    assert error.code == ErrorCode.INTERNAL


async def test_connection_closed_mid_stream_gives_unavailable(fake_openai: FakeOpenAI) -> None:
    got: list[str] = []
    error = await failure_of(stream(fake_openai.url("cutoff"), got=got))
    assert error.code == ErrorCode.UNAVAILABLE
    assert "mid-stream" in error.message or "before the reply was complete" in error.message
    assert got == PLAN_STEPS[:2]  # the steps that did arrive were passed on


async def test_connection_closed_mid_reply_gives_unavailable(fake_openai: FakeOpenAI) -> None:
    error = await failure_of(plan(fake_openai.url("cutoff")))
    assert error.code == ErrorCode.UNAVAILABLE


async def test_401_gives_failed_precondition_without_the_key(fake_openai: FakeOpenAI) -> None:
    error = await failure_of(plan(fake_openai.url("unauthorized")))
    assert error.code == ErrorCode.FAILED_PRECONDITION
    assert "MODEL_API_KEY" in error.message
    assert API_KEY not in error.message and API_KEY not in str(error)
    assert len(fake_openai.of("unauthorized")) == 1  # not retried


def test_key_like_text_from_upstream_is_redacted() -> None:
    backend = OpenAIBackend("http://127.0.0.1:9/v1", model="m", api_key=API_KEY)
    error = backend._status_error(400, f"bad: {API_KEY} and sk-proj-****abcd, Bearer xyz")
    assert error.code == ErrorCode.INVALID_ARGUMENT
    assert "sk-" not in error.message and "xyz" not in error.message
    assert "bad:" in error.message


async def test_403_gives_permission_denied(fake_openai: FakeOpenAI) -> None:
    error = await failure_of(stream(fake_openai.url("forbidden")))
    assert error.code == ErrorCode.PERMISSION_DENIED
    assert "fake-model" in error.message


async def test_404_names_the_settings_to_check(fake_openai: FakeOpenAI) -> None:
    error = await failure_of(plan(fake_openai.url("notfound")))
    assert error.code == ErrorCode.FAILED_PRECONDITION
    assert "MODEL_BASE_URL" in error.message and "MODEL_NAME" in error.message


async def test_the_api_key_never_reaches_the_logs(fake_openai, json_logs) -> None:
    for scenario in ("ok", "unauthorized", "flaky503", "cutoff", "garbage"):
        try:
            await plan(fake_openai.url(scenario))
        except BackendError as exc:
            assert API_KEY not in exc.message
        try:
            await stream(fake_openai.url(scenario))
        except BackendError as exc:
            assert API_KEY not in exc.message
    assert json_logs.lines, "the calls above must have logged something"
    assert "upstream_attempt_failed" in json_logs.text
    assert API_KEY not in json_logs.text
    assert "DO-NOT-LEAK" not in json_logs.text


def test_the_api_key_is_not_in_the_backend_repr() -> None:
    backend = OpenAIBackend("http://127.0.0.1:9/v1", model="m", api_key=API_KEY)
    assert API_KEY not in repr(backend)
    assert API_KEY not in repr(backend.describe())
    assert backend.describe()["api_key_set"] is True
