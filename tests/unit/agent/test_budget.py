"""The caller's budget: when to answer, and how long a call may take."""

from __future__ import annotations

import pytest

from agent.budget import MIN_CALL_SECONDS, answer_by, within


def test_no_budget_means_no_deadline() -> None:
    assert answer_by(None, now=100.0) is None
    assert within(2.0, None, now=100.0) == 2.0


@pytest.mark.parametrize(
    ("budget_ms", "deadline"), [(1000, 100.8), (2000, 101.6), (10_000, 108.0), (1, 100.8)]
)
def test_the_answer_is_due_before_the_budget_with_a_reply_margin(
    budget_ms: int, deadline: float
) -> None:
    assert answer_by(budget_ms, now=100.0) == pytest.approx(deadline)


def test_calls_are_shortened_to_the_time_left_but_never_to_nothing() -> None:
    assert within(2.0, 101.0, now=100.5) == pytest.approx(0.5)
    assert within(0.2, 101.0, now=100.5) == 0.2
    assert within(2.0, 101.0, now=102.0) == MIN_CALL_SECONDS
