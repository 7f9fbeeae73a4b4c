"""The built-in planner: deterministic, numbered through the server, multi-step, sensible."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway.backends.base import Deadline
from gateway.backends.local import LocalPlanner, classify, plan_steps

PROMPTS = [
    "Write a Python script that parses nginx logs",
    "Why is the sky blue?",
    "fix the crash in the upload handler",
    "deploy the new version to the staging cluster",
    "Draft an email to the team announcing the release",
    "Analyze sales.csv for seasonal trends",
    "hello",
]


@pytest.mark.parametrize(
    ("prompt", "kind", "expected_step"),
    [
        (PROMPTS[0], "code", "Write the code, with tests alongside"),
        (PROMPTS[1], "research", "Gather information from reliable sources"),
        (PROMPTS[2], "debug", "Reproduce the problem with a minimal failing case"),
        (PROMPTS[3], "ops", "Prepare the configuration and a way to roll back"),
        (PROMPTS[4], "writing", "Write a first draft"),
        (PROMPTS[5], "data", "Load the data and check its schema, size and quality"),
        (PROMPTS[6], "general", "Break the work into concrete actions"),
    ],
)
def test_the_plan_fits_the_kind_of_work(prompt: str, kind: str, expected_step: str) -> None:
    assert classify(prompt) == kind
    steps = plan_steps(prompt, 8)
    assert expected_step in steps
    assert 4 <= len(steps) <= 8
    assert prompt.rstrip("?") in steps[0]  # the first step restates the goal
    assert len(set(steps)) == len(steps)


def test_an_explicit_sequence_in_the_prompt_is_followed() -> None:
    steps = plan_steps("download the logs, then count errors per hour; finally plot the counts", 8)
    assert steps[1:4] == ["Download the logs", "Count errors per hour", "Plot the counts"]
    assert steps[-1] == "Summarize the outcome and the next steps"


def test_actions_joined_by_and_become_steps() -> None:
    steps = plan_steps("Summarise the latest memory and run the demo tool", 8)
    assert steps[1:3] == ["Summarise the latest memory", "Run the demo tool"]
    # "and" between nouns is not a new action.
    assert plan_steps("Compare apples and oranges", 8)[1] != "Oranges"


def test_a_numbered_list_in_the_prompt_is_followed() -> None:
    steps = plan_steps(
        "Please:\n1. back up the database\n2. upgrade postgres\n3. run the smoke tests", 8
    )
    assert steps[1:4] == ["Back up the database", "Upgrade postgres", "Run the smoke tests"]
    assert steps[0].endswith(
        '"Please; back up the database; upgrade postgres; run the smoke tests"'
    )


@pytest.mark.parametrize("prompt", PROMPTS)
def test_the_same_prompt_gives_the_same_plan(prompt: str) -> None:
    assert plan_steps(prompt, 8) == plan_steps(prompt, 8)


def test_plans_do_not_depend_on_the_process() -> None:
    """No hash randomisation, clock or random numbers: a new interpreter agrees."""
    code = (
        "import json,sys; from gateway.backends.local import plan_steps; "
        f"print(json.dumps([plan_steps(p, 8) for p in {PROMPTS!r}]))"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    ]
    assert runs[0] == runs[1]
    assert runs[0].count("Clarify the goal") == len(PROMPTS)


@pytest.mark.parametrize("max_steps", [1, 2, 3, 5])
def test_max_steps_keeps_the_opening_and_the_closing_step(max_steps: int) -> None:
    full = plan_steps(PROMPTS[0], 20)
    steps = plan_steps(PROMPTS[0], max_steps)
    assert len(steps) == max_steps
    assert steps[0] == full[0]
    if max_steps > 1:
        assert steps[-1] == full[-1]


def test_hostile_prompts_give_clean_bounded_steps() -> None:
    prompt = "\x00\x1b[31mrm -rf /\x07 " + "word " * 5000 + "\nthen " + "y" * 10000
    steps = plan_steps(prompt, 20)
    assert 2 <= len(steps) <= 20
    for step in steps:
        assert len(step) <= 300
        assert not any(ord(ch) < 32 for ch in step)


async def test_the_stream_yields_the_plan() -> None:
    planner = LocalPlanner()
    deadline = Deadline.after(1)
    streamed = [step async for step in planner.stream(PROMPTS[0], 8, deadline)]
    assert streamed == await planner.plan(PROMPTS[0], 8, deadline)
