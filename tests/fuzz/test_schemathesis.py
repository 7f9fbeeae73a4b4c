"""schemathesis against each HTTP service's own OpenAPI document, over loopback.

For every operation in a running service's ``/openapi.json``, schemathesis
generates requests that fit the schema and requests that do not, sends
them with a valid token, and runs its checks: no server error, status code,
content type and body as documented, invalid input refused. The schema is
loaded from the live process (not built in-process) so what is checked is
exactly what a client sees; the `st run` command a user would type runs too.
Example counts stay modest to keep CI fast.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from schemathesis import GenerationMode
from schemathesis.openapi.loaders import from_url

from pagi.stack import Stack
from testing.live import HTTP_SERVICES

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 40
CLI_EXAMPLES_PER_OPERATION = 25
_INPUT_LOCATIONS = ("path_parameters", "headers", "cookies", "query", "body")


def _has_inputs(operation) -> bool:
    return any(len(getattr(operation, location)) for location in _INPUT_LOCATIONS)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("service", HTTP_SERVICES)
def test_service_matches_its_openapi(
    live_stack: Stack, token_for: Callable[..., str], service: str, mode: GenerationMode
):
    base_url = live_stack.settings.url_of(service)
    schema = from_url(f"{base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, f"{service} documents no operation"
    failures: list[str] = []
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not _has_inputs(operation):
            continue  # nothing in the request that could be made invalid

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case):
            case.call_and_validate(
                base_url=base_url,
                headers={"Authorization": f"Bearer {token_for(service)}"},
                timeout=20,
            )

        try:
            check()
        except Exception as exc:  # noqa: BLE001 - every operation is checked, then all reported
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("service", HTTP_SERVICES)
def test_schemathesis_cli_finds_no_issue(live_stack: Stack, token_for, service: str):
    """The command a user runs: every phase (examples, coverage, fuzzing), every check."""
    st = Path(sys.executable).with_name("st")
    token = token_for(service, ttl=3600)
    result = subprocess.run(
        [
            str(st),
            "run",
            f"{live_stack.settings.url_of(service)}/openapi.json",
            "--header",
            f"Authorization: Bearer {token}",
            "--checks",
            "all",
            "--max-examples",
            str(CLI_EXAMPLES_PER_OPERATION),
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
