"""The caller's time budget: answer before the caller gives up.

A caller (the bff's dashboard) may send ``X-Request-Timeout-Ms``. The agent
then answers by that time minus a reply margin, whatever its own deadlines
say: a stalled gateway becomes a 504 naming the gateway that reaches the
caller, instead of the caller cutting the agent off and blaming it.
"""

from __future__ import annotations

MAX_BUDGET_MS = 600_000
MIN_BUDGET_MS = 1_000
"""Smaller budgets count as this: too little for any plan, so a 504 would only punish."""
MIN_REPLY_MARGIN_SECONDS = 0.2
REPLY_MARGIN_FRACTION = 0.2
MIN_CALL_SECONDS = 0.05
"""A follow-up call gets at least this long, even when the budget is spent."""


def answer_by(budget_ms: int | None, now: float) -> float | None:
    """The loop time by which to answer, or None when the caller set no budget."""
    if budget_ms is None:
        return None
    budget = max(budget_ms, MIN_BUDGET_MS) / 1000
    return now + budget - max(MIN_REPLY_MARGIN_SECONDS, REPLY_MARGIN_FRACTION * budget)


def within(timeout_seconds: float, deadline: float | None, now: float) -> float:
    """``timeout_seconds``, shortened to what is left before ``deadline``."""
    if deadline is None:
        return timeout_seconds
    return min(timeout_seconds, max(deadline - now, MIN_CALL_SECONDS))
