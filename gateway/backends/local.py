"""The built-in planner: a deterministic numbered plan from a prompt, no network.

It recognises what kind of work a prompt asks for (code, debugging, data,
writing, operations, a question) by keywords, and follows the prompt's own
sequence when it spells one out ("do A, then B; finally C"). The same
prompt always gives the same plan.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from gateway.backends.base import Deadline, PlanBackend
from gateway.backends.local_decide import decide_locally
from gateway.conversation import Conversation, Decision

MAX_GOAL_CHARS = 100
MAX_STEP_CHARS = 200

_KEYWORDS: dict[str, frozenset[str]] = {
    "debug": frozenset(
        "fix bug bugs error errors crash crashes crashing fails failing failure broken debug "
        "traceback exception regression".split()
    ),
    "data": frozenset(
        "analyze analyse analysis data dataset datasets csv statistics stats chart plot "
        "metrics spreadsheet trends aggregate".split()
    ),
    "ops": frozenset(
        "deploy deployment install configure setup set-up upgrade migrate migration backup "
        "server cluster kubernetes docker provision rollout".split()
    ),
    "writing": frozenset(
        "email essay letter blog article announcement draft memo proposal newsletter "
        "documentation readme post".split()
    ),
    "code": frozenset(
        "code script function program implement api class module refactor python javascript "
        "typescript rust go endpoint library cli app build tests test".split()
    ),
    "research": frozenset(
        "what why how explain compare research find summarize summarise investigate "
        "which who when evaluate review".split()
    ),
}

# When scores tie, the earlier kind wins: it is the more specific one.
_ORDER = ("debug", "data", "ops", "writing", "code", "research")

_MIDDLE: dict[str, tuple[str, ...]] = {
    "debug": (
        "Reproduce the problem with a minimal failing case",
        "Read the logs and trace the failure to its root cause",
        "Apply the smallest change that fixes the cause",
        "Add a regression test and run the whole test suite",
    ),
    "data": (
        "Load the data and check its schema, size and quality",
        "Clean and transform the data into the shape the analysis needs",
        "Compute the figures that answer the question",
        "Cross-check the results and chart the key findings",
    ),
    "ops": (
        "Check the current state and the prerequisites",
        "Prepare the configuration and a way to roll back",
        "Apply the change one step at a time",
        "Verify the services are healthy and behave as expected",
    ),
    "writing": (
        "Identify the audience, the tone and the key points",
        "Outline the structure",
        "Write a first draft",
        "Revise for clarity, accuracy and length",
    ),
    "code": (
        "Break the work into small units with clear interfaces",
        "Write the code, with tests alongside",
        "Run the tests in the sandbox and fix what fails",
        "Review the code for edge cases, error handling and security",
    ),
    "research": (
        "List the key questions and terms to look into",
        "Gather information from reliable sources",
        "Compare and cross-check what the sources say",
        "Draft a concise answer",
    ),
    "general": (
        "Gather the information and resources needed",
        "Break the work into concrete actions",
        "Carry out the actions in order",
        "Check the result against the success criteria",
    ),
}

_CLOSING: dict[str, str] = {
    "debug": "Report the cause, the fix and any remaining risk",
    "data": "Summarize the findings, with the figures behind them",
    "ops": "Document what changed and how to undo it",
    "writing": "Deliver the final text",
    "code": "Summarize what was built and how to use it",
    "research": "Present the answer with its sources",
    "general": "Summarize the outcome and the next steps",
}

_WORD = re.compile(r"[a-z][a-z0-9+#-]*")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# Verbs that start a new action after "and" ("summarise the notes and run the tests").
_ACTION_VERBS = (
    "run|write|send|create|check|deploy|test|build|fix|update|install|open|read|summari[sz]e|"
    "download|upload|plot|count|compute|save|store|delete|remove|review|compare|find|list|"
    "email|notify|report|commit|push|merge|restart|stop|start|back up|clean|draft|publish"
)
# Explicit sequencing in the prompt: "A, then B", "A; B", "after that", "finally", new lines,
# "A and <verb> B".
_SEQUENCE_SPLIT = re.compile(
    r"\s*(?:\n+|;|,?\s+and then\s+|,?\s+then\s+|,?\s+after that,?\s+|,?\s+finally,?\s+"
    rf"|,?\s+and\s+(?=(?:{_ACTION_VERBS})\b))\s*",
    re.IGNORECASE,
)
_LIST_MARKER = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022])\s+")
_LEADING_CONNECTOR = re.compile(r"^(?:and\s+)?(?:then|finally|after that|next)\b,?\s*", re.I)


def _clean(prompt: str) -> str:
    return _CONTROL.sub(" ", prompt).strip()


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[: limit - 1].rstrip() + "\u2026"


def _goal(text: str) -> str:
    lines = [_LIST_MARKER.sub("", line).strip().rstrip(":") for line in text.splitlines()]
    lines = [line for line in lines if line]
    if len(lines) > 1:
        # A prompt written as a list: its items are the goal.
        return _shorten("; ".join(lines), MAX_GOAL_CHARS)
    sentence = re.split(r"(?<=[.!?])\s", lines[0] if lines else "", maxsplit=1)[0]
    return _shorten(sentence.rstrip(".!"), MAX_GOAL_CHARS)


def classify(prompt: str) -> str:
    """The kind of work a prompt asks for: one of the template names."""
    words = _WORD.findall(prompt.lower())
    scores = {kind: sum(word in _KEYWORDS[kind] for word in words) for kind in _ORDER}
    best = max(_ORDER, key=lambda kind: (scores[kind], -_ORDER.index(kind)))
    return best if scores[best] > 0 else "general"


def _explicit_sequence(text: str) -> list[str]:
    parts = [
        _LEADING_CONNECTOR.sub("", _LIST_MARKER.sub("", part)).strip(" .,")
        for part in _SEQUENCE_SPLIT.split(text)
    ]
    parts = [part for part in parts if len(part.split()) >= 2]
    return parts if len(parts) >= 2 else []


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def _fit(steps: list[str], max_steps: int) -> list[str]:
    # Keep the opening steps and always the closing one.
    if len(steps) <= max_steps:
        return steps
    if max_steps == 1:
        return steps[:1]
    return steps[: max_steps - 1] + steps[-1:]


def plan_steps(prompt: str, max_steps: int) -> list[str]:
    """A deterministic plan for ``prompt`` with at most ``max_steps`` steps."""
    text = _clean(prompt)
    kind = classify(text)
    steps = [f'Clarify the goal and what "done" means: "{_goal(text)}"']
    sequence = _explicit_sequence(text)
    if sequence:
        steps += [_capitalize(_shorten(part, MAX_STEP_CHARS)) for part in sequence]
        steps.append("Check each result before moving on to the next")
        # The prompt set the order itself; a kind-specific ending could contradict it.
        steps.append(_CLOSING["general"])
    else:
        steps += _MIDDLE[kind]
        steps.append(_CLOSING[kind])
    return _fit(steps, max(1, max_steps))


class LocalPlanner(PlanBackend):
    """The embedded default backend: no network, no randomness."""

    name = "local"

    def __init__(self, model: str = "pagi-local-planner-1") -> None:
        self.model = model

    async def plan(self, prompt: str, max_steps: int, deadline: Deadline) -> list[str]:
        """The whole plan (computed in microseconds; the deadline cannot be missed)."""
        return plan_steps(prompt, max_steps)

    async def stream(self, prompt: str, max_steps: int, deadline: Deadline) -> AsyncIterator[str]:
        """The plan's steps one by one."""
        for step in plan_steps(prompt, max_steps):
            yield step
            await asyncio.sleep(0)

    async def decide(self, conversation: Conversation, deadline: Deadline) -> Decision:
        """Run the goal's Python code blocks, then answer with their output.

        Without code to run, the answer is the plan for the goal (see
        :mod:`gateway.backends.local_decide`).
        """
        return decide_locally(conversation, plan_steps)
