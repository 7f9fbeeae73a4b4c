"""A real headless Chromium (Debian's package) driven by Playwright, against a real stack.

No browser is downloaded: Playwright drives ``/usr/bin/chromium`` (``make
test`` installs the ``chromium`` package when it is missing). Each person
gets a Chromium of their own with a fresh profile directory. When a test
fails, a screenshot of every page it opened is kept under
``$PAGI_TEST_ARTIFACTS`` (default ``.pagi/test-artifacts``)/browser.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, Playwright, sync_playwright

from pagi.stack import Stack
from testing.stack import REPO, launch_stack, stack_env
from tests.browser.payloads import POLICY_PAYLOAD

CHROMIUM = Path(os.environ.get("PAGI_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("PAGI_TEST_ARTIFACTS", REPO / ".pagi" / "test-artifacts"))
POLICY = REPO / "policies" / "sandbox.toml"


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Let fixtures see whether the test failed (for the screenshots)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: `make test` installs Debian's chromium package"
            " (apt-get install chromium)",
            pytrace=False,
        )
    return CHROMIUM


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the default policy whose demo tool's description is markup."""
    folder = tmp_path_factory.mktemp("browser-policy")
    path = folder / "sandbox.toml"
    original = '"Prints a fixed greeting; takes no code."'
    text = POLICY.read_text().replace(original, json.dumps(POLICY_PAYLOAD))  # a TOML string
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, keys_dir: Path, policy_file: Path
) -> Iterator[Stack]:
    env = stack_env(
        tmp_path_factory.mktemp("browser-stack"), keys_dir, PAGI_SANDBOX_POLICY=str(policy_file)
    )
    running = launch_stack(env)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def sign_in_link(stack: Stack) -> Callable[..., str]:
    """``sign_in_link(person)``: what `pagi console --as PERSON` prints for this stack."""

    def make(person: str = "operator") -> str:
        result = subprocess.run(
            [sys.executable, "-m", "cli", "console", "--as", person],
            env=stack.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    return make


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture
def open_browser(
    request: pytest.FixtureRequest,
    playwright: Playwright,
    chromium_path: Path,
    tmp_path: Path,
) -> Iterator[Callable[[str], Page]]:
    """``open_browser(name)``: a page in a Chromium of its own, fresh profile, failures recorded.

    Each page records its console errors, page errors, dialogs and
    Content-Security-Policy violations in ``page.problems``.
    """
    contexts: list[tuple[str, BrowserContext]] = []

    def launch(name: str) -> Page:
        profile = tmp_path / f"profile-{name}"
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(chromium_path),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        contexts.append((name, context))
        context.add_init_script(
            "document.addEventListener('securitypolicyviolation', (e) =>"
            " (window.__cspViolations = window.__cspViolations || []).push(e.violatedDirective));"
        )
        page = context.pages[0] if context.pages else context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))

        def on_console(message) -> None:  # noqa: ANN001 - Playwright's ConsoleMessage
            # A refused call (403 for a person without rights) is logged by the
            # browser as a failed load: expected, and not a script error.
            if message.type == "error" and not message.text.startswith("Failed to load resource"):
                problems.append(f"console {message.type}: {message.text}")

        page.on("console", on_console)

        def on_dialog(dialog) -> None:  # noqa: ANN001 - Playwright's Dialog
            problems.append(f"dialog: {dialog.message}")
            dialog.dismiss()

        page.on("dialog", on_dialog)
        page.problems = problems  # type: ignore[attr-defined]
        return page

    yield launch
    failed = any(
        getattr(getattr(request.node, f"report_{when}", None), "failed", False)
        for when in ("setup", "call")
    )
    for name, context in contexts:
        if failed:
            folder = ARTIFACTS / "browser" / request.node.name
            folder.mkdir(parents=True, exist_ok=True)
            for number, page in enumerate(context.pages):
                try:
                    page.screenshot(path=str(folder / f"{name}-{number}.png"), full_page=True)
                except Exception as exc:  # noqa: BLE001 - a failed screenshot must not hide the failure
                    (folder / f"{name}-{number}.txt").write_text(f"no screenshot: {exc}")
        context.close()


@pytest.fixture(scope="session", autouse=True)
def _fresh_artifacts() -> None:
    """Screenshots of an earlier run do not pass for this one's."""
    shutil.rmtree(ARTIFACTS / "browser", ignore_errors=True)
