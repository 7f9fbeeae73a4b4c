"""Parsing a model's reply into steps, whole or fed in arbitrary pieces."""

from __future__ import annotations

import pytest

from gateway.backends.parsing import MAX_STEP_CHARS, StepParser, parse_steps

REPLY = (
    "Sure, here is the plan:\n"
    "1. **Collect** the logs\n"
    "2) Count errors\n"
    "Step 3: Plot them\n"
    "### 4. Share the chart\n"
    "- Celebrate\n"
    "Hope this helps!"
)
STEPS = ["Collect the logs", "Count errors", "Plot them", "Share the chart", "Celebrate"]


def test_list_items_are_the_steps() -> None:
    assert parse_steps(REPLY, 10) == STEPS


def test_a_reply_without_a_list_falls_back_to_its_lines() -> None:
    assert parse_steps("Plan:\ncheck the disk\n\nfree some space\n", 10) == [
        "check the disk",
        "free some space",
    ]


def test_years_and_numbers_in_text_are_not_list_items() -> None:
    assert parse_steps("2024-05 was busy\n1. Do it", 10) == ["Do it"]


def test_max_steps_stops_the_parser() -> None:
    assert parse_steps(REPLY, 2) == STEPS[:2]


@pytest.mark.parametrize("size", [1, 2, 5, 13, 1000])
def test_any_chunking_gives_the_same_steps(size: int) -> None:
    parser = StepParser(10)
    got = []
    for start in range(0, len(REPLY), size):
        got += parser.feed(REPLY[start : start + size])
    got += parser.finish()
    assert got == STEPS


def test_steps_are_cleaned_and_bounded() -> None:
    [step] = parse_steps("1. a\x1b[2J\x00b " + "x" * 5000, 5)
    assert step.startswith("a [2J b") and len(step) == MAX_STEP_CHARS
