"""The operator console in a real browser, against the whole stack.

A person signs in with a link from ``pagi console``, sees every panel filled
from the live stack, runs code and sees its output and what seccomp
refused, watches an agent run stream in, and signs out. Markup sent
through tool output, goals and the policy stays text; the session cannot
be read by the page's scripts; a person without rights is refused what
the bff itself may do.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect

from pagi.stack import Stack
from tests.browser.payloads import POLICY_PAYLOAD

WAIT_MS = 20_000
OUTPUT_PAYLOAD = "<img src=x onerror=\"window.__pwned='output'\"><b>bold</b>"
GOAL_PAYLOAD = "<script>window.__pwned='goal'</script><style>body{display:none}</style>"


def signed_in(page: Page, link: str) -> None:
    page.goto(link)
    expect(page.locator("#who")).to_be_visible(timeout=WAIT_MS)


def assert_nothing_injected(page: Page) -> None:
    """No markup from data ran, restyled or was added, and the browser saw no violation."""
    assert page.evaluate("window.__pwned") is None
    assert page.locator("img").count() == 0
    assert page.evaluate("document.querySelectorAll('style, script:not([src])').length") == 0
    expect(page.locator("main")).to_be_visible()
    assert page.evaluate("window.__cspViolations || []") == []
    assert page.problems == []  # type: ignore[attr-defined]


def run_tool(page: Page, tool: str, code: str | None = None) -> None:
    page.select_option("#tool-select", tool)
    if code is not None:
        page.fill("#tool-code", code)
    page.click("#tool-run")
    expect(page.locator("#tool-run")).to_be_enabled(timeout=WAIT_MS)


def test_an_operator_uses_every_panel_against_the_live_stack(
    stack: Stack, sign_in_link: Callable[..., str], open_browser, token_for, tmp_path: Path
) -> None:
    page = open_browser("operator")
    link = sign_in_link()
    token = link.split("#sign-in=", 1)[1]
    signed_in(page, link)
    expect(page.locator("#who-person")).to_have_text("operator")
    expect(page.locator("#who-role")).to_have_text("operator")

    # The sign-in token left the address bar; the session is out of the page's reach.
    assert page.url.endswith("/console/") and "#" not in page.url
    assert page.evaluate("document.cookie") == ""
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0
    (cookie,) = page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert token not in cookie["value"]

    # Services and the sandbox's own report.
    expect(page.locator("#services .service.up")).to_have_count(5, timeout=WAIT_MS)
    expect(page.locator("#isolation tbody tr").first).to_be_visible()
    assert page.locator("#isolation tbody tr").count() >= 10
    expect(page.locator("#isolation")).to_contain_text("seccomp")
    expect(page.locator("#warm-path")).to_contain_text("ready")
    expect(page.locator("#denials")).to_contain_text("seccomp")
    expect(page.locator("#admission")).to_contain_text("of 4")

    # The policy in force, as the sandbox states it.
    sandbox = stack.settings.url_of("sandbox")
    policy = httpx.get(
        f"{sandbox}/api/v1/policy", headers={"Authorization": f"Bearer {token_for('sandbox')}"}
    ).json()
    expect(page.locator("#policy-version")).to_have_text(policy["version"], timeout=WAIT_MS)
    # The operator may run every tool; the console lists them as the sandbox does.
    assert "python" in policy["caller_tools"]
    expect(page.locator("#policy-yours")).to_have_text(", ".join(policy["caller_tools"]))
    expect(page.locator("#policy-tools")).to_contain_text(POLICY_PAYLOAD)  # as text

    # Run code: its output, markup included, comes back as text.
    program = (
        f"print(6 * 7)\nprint({OUTPUT_PAYLOAD!r})\nimport sys; print('to stderr', file=sys.stderr)"
    )
    run_tool(page, "python", program)
    expect(page.locator("#tool-status")).to_contain_text("ok")
    expect(page.locator("#tool-stdout")).to_have_text(f"42\n{OUTPUT_PAYLOAD}\n")
    expect(page.locator("#tool-stderr")).to_have_text("to stderr\n")
    expect(page.locator("#tool-denials")).to_contain_text("seccomp refused nothing")

    # A denial: seccomp refuses an Internet socket, and the console says so.
    run_tool(
        page,
        "python",
        "import socket\ntry:\n    socket.socket(socket.AF_INET)\nexcept OSError as e:\n"
        "    print('refused:', e.strerror)",
    )
    expect(page.locator("#tool-stdout")).to_contain_text("refused: Operation not permitted")
    expect(page.locator("#tool-denials")).to_contain_text("seccomp refused 1 system call")
    expect(page.locator("#tool-denials")).to_contain_text("socket ×1")  # which call, by name

    # Watch a run: its steps appear while the tool still runs, then the end.
    page.fill(
        "#goal",
        f"Wait, then answer {GOAL_PAYLOAD}\n```python\nimport time\ntime.sleep(2)\n"
        f"print({OUTPUT_PAYLOAD!r})\n```",
    )
    page.click("#goal-start")
    events = page.locator("#run-events")
    expect(events.locator('[data-event="tool.call"]')).to_have_count(1, timeout=WAIT_MS)
    assert events.locator('[data-event="run.completed"]').count() == 0  # still going
    expect(events.locator('[data-event="run.completed"]')).to_have_count(1, timeout=WAIT_MS)
    names = events.locator("li").evaluate_all("items => items.map(i => i.dataset.event)")
    assert names == [
        "run.started",
        "model.message",
        "tool.call",
        "tool.result",
        "model.message",
        "run.completed",
    ]
    expect(events.locator(".answer")).to_have_text(OUTPUT_PAYLOAD)

    # The run is listed, by the operator through the bff, with its steps.
    runs = page.locator("#runs-table")
    expect(runs).to_contain_text("operator (via bff)", timeout=WAIT_MS)
    expect(runs).to_contain_text(GOAL_PAYLOAD)
    runs.locator("button[data-run]").first.click()
    expect(page.locator("#run-detail")).to_contain_text(GOAL_PAYLOAD)
    expect(page.locator("#run-detail .step")).to_have_count(2)

    # The audit tail names the person and the bff acting for them.
    audit = page.locator("#audit-table")
    expect(audit).to_contain_text("python", timeout=WAIT_MS)
    mine = audit.locator("tbody tr", has_text="python").filter(has_text="operator")
    expect(mine.first).to_contain_text("bff")  # the person, and the bff acting for them
    theirs = audit.locator("tbody tr", has_text="python").filter(has_text="agent")
    expect(theirs.first).to_be_visible()  # the run's tool call: the agent, as itself

    # Charts fill in as the console reads the metrics (every five seconds).
    for _ in range(3):
        run_tool(page, "demo")
    expect(page.locator("#charts figure")).to_have_count(4, timeout=WAIT_MS)
    tool_chart = page.locator("#charts figure", has_text="Tool runs per minute")
    expect(tool_chart.locator("svg.plot path")).not_to_have_count(0, timeout=WAIT_MS)
    expect(tool_chart.locator(".legend")).to_contain_text("ok")

    assert_nothing_injected(page)
    page.screenshot(path=str(tmp_path / "operator.png"), full_page=True)

    # Signing out ends the session on the server: the same browser is refused at once.
    page.click("#sign-out")
    expect(page.locator("#signed-out")).to_be_visible()
    expect(page.locator("#console")).to_be_hidden()
    status = page.evaluate("fetch('/console/api/session').then(r => r.status)")
    assert status == 401

    # The sign-in token reached no log line of any service.
    assert not any(token in line for _, line in stack.logs.lines)  # type: ignore[attr-defined]


def test_a_person_gets_their_own_rights_never_the_bffs(
    stack: Stack, sign_in_link: Callable[..., str], open_browser
) -> None:
    page = open_browser("alice")
    signed_in(page, sign_in_link("alice"))
    expect(page.locator("#who-role")).to_have_text("member")
    expect(page.locator("#policy-yours")).to_have_text("no tool", timeout=WAIT_MS)
    # The bff's own entry allows demo; alice's (none) does not: she is refused.
    expect(page.locator("#tool-select option", has_text="demo")).to_have_text(
        "demo (not allowed for you)"
    )
    run_tool(page, "demo")
    refusal = page.locator("#tool-refusal")
    expect(refusal).to_contain_text("403")
    expect(refusal).to_contain_text("caller 'alice' may not run tool 'demo'")
    expect(page.locator("#audit-refused")).to_have_text(
        "The audit log is for operators (PAGI_OPERATORS)."
    )
    # Her run is hers; nobody else's runs are listed for her.
    page.fill("#goal", "Answer:\n```python\nprint('from alice')\n```")
    page.click("#goal-start")
    expect(page.locator('#run-events [data-event="run.completed"]')).to_have_count(
        1, timeout=WAIT_MS
    )
    runs = page.locator("#runs-table")
    expect(runs).to_contain_text("alice (via bff)", timeout=WAIT_MS)
    callers = runs.locator("tbody tr td:nth-child(2)").all_inner_texts()
    assert callers and set(callers) == {"alice (via bff)"}
    assert_nothing_injected(page)


def test_policy_text_and_a_refused_edit_stay_text(
    stack: Stack, sign_in_link: Callable[..., str], open_browser, policy_file: Path
) -> None:
    page = open_browser("policy")
    signed_in(page, sign_in_link())
    expect(page.locator("#policy-tools")).to_contain_text(POLICY_PAYLOAD, timeout=WAIT_MS)
    good = policy_file.read_text()
    bad_key = '<img src=x onerror="window.__pwned=1">'  # a TOML literal key below
    draft = policy_file.with_name("draft.toml")
    draft.write_text(good.replace("[tools.python]\n", f"[tools.python]\n'{bad_key}' = 1\n"))
    draft.replace(policy_file)
    try:
        deadline = time.monotonic() + 20
        while "policy-error" not in page.content() or "unknown key" not in page.inner_text(
            "#policy"
        ):
            assert time.monotonic() < deadline, "the refused edit never showed"
            page.reload()
            page.wait_for_selector("#policy-version", timeout=WAIT_MS)
        error = page.locator("#policy-error")
        expect(error).to_contain_text(bad_key)
        expect(error).to_contain_text("unknown key")
        assert_nothing_injected(page)
    finally:
        draft.write_text(good)
        draft.replace(policy_file)


def test_a_sign_in_link_works_once(sign_in_link: Callable[..., str], open_browser) -> None:
    link = sign_in_link()
    first = open_browser("first")
    signed_in(first, link)
    second = open_browser("second")
    second.goto(link)
    expect(second.locator("#signed-out")).to_be_visible(timeout=WAIT_MS)
    expect(second.locator("#signed-out-reason")).to_contain_text("was used already")
    assert "#" not in second.url
    second.goto(re.sub(r"#.*", "", link))
    expect(second.locator("#signed-out")).to_be_visible(timeout=WAIT_MS)
