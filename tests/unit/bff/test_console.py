"""The console's sign-in, sessions, CSRF guard, headers and the person it acts for.

The bff runs in-process; the agent and the sandbox are a fake on loopback
that records what it was sent, so the token acting for the person can be
checked as the sandbox would check it.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from jose import jwt

from bff.app import create_app
from bff.console.headers import CONTENT_SECURITY_POLICY
from bff.settings import BffSettings
from pagi.auth import (
    ACTS_FOR_PEOPLE,
    SIGN_IN_AUDIENCE,
    TokenSigner,
    TokenVerifier,
    TrustStore,
    private_key_path,
)
from testing.fake_downstream import Behaviour, FakeDownstream

BASE = "http://bff.test"
SAME_ORIGIN = {"Origin": BASE, "Sec-Fetch-Site": "same-origin"}


@pytest.fixture
def fake(fake_server: tuple[FakeDownstream, str]) -> FakeDownstream:
    server, _ = fake_server
    server.received = []
    server.behaviours = {
        "/api/v1/policy": Behaviour(body={"version": "v1", "caller": "?"}),
        "/api/v1/execute_tool": Behaviour(
            status=403,
            body={"error": "forbidden", "detail": "caller 'alice' may not run tool 'python'"},
        ),
        "/api/v1/runs": Behaviour(body={"service": "agent", "count": 0, "runs": []}),
    }
    return server


@asynccontextmanager
async def console(keys_dir: Path, url: str, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        BffSettings(
            _env_file=None,
            pagi_keys_dir=keys_dir,
            py_agent_url=url,
            rust_sandbox_url=url,
            memory_url=url,
            **settings,
        )
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
            yield http


@pytest.fixture
async def client(
    keys_dir: Path, fake_server: tuple[FakeDownstream, str]
) -> AsyncIterator[httpx.AsyncClient]:
    async with console(keys_dir, fake_server[1]) as http:
        yield http


@pytest.fixture
def link(keys_dir: Path) -> Callable[..., str]:
    """``link(person="operator", ttl=120)``: a sign-in link's token, as `pagi console` makes it."""
    operator = TokenSigner.from_keys_dir(keys_dir, "operator")

    def make(person: str = "operator", ttl: int = 120) -> str:
        subject = None if person == "operator" else person
        return operator.sign(SIGN_IN_AUDIENCE, ttl=ttl, subject=subject)

    return make


async def sign_in(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/console/api/session", json={"token": token}, headers=SAME_ORIGIN)


def changing(session: dict[str, Any]) -> dict[str, str]:
    return {**SAME_ORIGIN, "X-CSRF-Token": session["csrf_token"]}


# --------------------------------------------------------------------------- signing in


async def test_a_link_opens_a_session_held_in_an_httponly_strict_cookie(client, link) -> None:
    answer = await sign_in(client, link())
    assert answer.status_code == 200, answer.text
    session = answer.json()
    assert session["person"] == "operator" and session["role"] == "operator"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("pagi_console=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP: a Secure cookie would never come back
    assert "Max-Age=28800" in cookie
    # The cookie's value is no token: it names a session the server keeps.
    assert "." not in cookie.split(";")[0].split("=", 1)[1]
    again = await client.get("/console/api/session")
    assert again.status_code == 200 and again.json()["person"] == "operator"


async def test_over_https_the_cookie_is_secure_and_host_only(keys_dir, fake_server, link) -> None:
    async with console(keys_dir, fake_server[1]) as http:
        http.base_url = httpx.URL("https://bff.test")
        answer = await http.post(
            "/console/api/session",
            json={"token": link()},
            headers={"Origin": "https://bff.test", "Sec-Fetch-Site": "same-origin"},
        )
    assert answer.status_code == 200, answer.text
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("__Host-pagi_console=") and "Secure" in cookie
    assert answer.headers["strict-transport-security"].startswith("max-age=")


async def test_a_link_works_once(client, link) -> None:
    token = link()
    assert (await sign_in(client, token)).status_code == 200
    again = await sign_in(client, token)
    assert again.status_code == 401
    assert again.json()["detail"] == "this sign-in link was used already"


async def test_a_person_named_by_the_operator_signs_in_as_that_person(client, link) -> None:
    session = (await sign_in(client, link("alice"))).json()
    assert session["person"] == "alice" and session["role"] == "member"


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda keys, link: "not.a.token", "malformed"),
        (lambda keys, link: link()[:-6] + "AAAAAA", "signature"),
        # An ordinary token for the bff is no sign-in link.
        (lambda keys, link: TokenSigner.from_keys_dir(keys, "operator").sign("bff"), "audience"),
        # Only the operator's key signs links, not a service's.
        (
            lambda keys, link: TokenSigner.from_keys_dir(keys, "bff").sign(SIGN_IN_AUDIENCE),
            "operator's key",
        ),
        (lambda keys, link: link(ttl=3600), "lives too long"),
    ],
)
async def test_links_that_are_not_the_operators_one_use_link_are_refused(
    client, link, keys_dir, make, reason
) -> None:
    answer = await sign_in(client, make(keys_dir, link))
    assert answer.status_code == 401
    assert reason in answer.json()["detail"]
    assert "set-cookie" not in answer.headers


async def test_an_expired_link_is_refused(client, keys_dir) -> None:
    now = int(time.time())
    claims = {
        "iss": "operator",
        "sub": "operator",
        "aud": SIGN_IN_AUDIENCE,
        "iat": now - 400,
        "exp": now - 200,
        "jti": "old",
    }
    pem = private_key_path(keys_dir, "operator").read_bytes()
    answer = await sign_in(client, jwt.encode(claims, pem, algorithm="ES256"))
    assert answer.status_code == 401 and "expired" in answer.json()["detail"]


async def test_signing_in_from_another_site_is_refused(client, link) -> None:
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        answer = await client.post("/console/api/session", json={"token": link()}, headers=headers)
        assert answer.status_code == 403
        assert answer.json()["error"] == "cross_site_request"


async def test_a_new_sign_in_replaces_the_old_session(client, link) -> None:
    await sign_in(client, link())
    first = client.cookies.get("pagi_console")
    await sign_in(client, link("alice"))
    second = client.cookies.get("pagi_console")
    assert first != second
    client.cookies.set("pagi_console", first)
    assert (await client.get("/console/api/session")).status_code == 401


# --------------------------------------------------------------------------- the session


async def test_without_a_session_every_api_call_is_401(client) -> None:
    for path in ("/console/api/session", "/console/api/overview", "/console/api/runs"):
        answer = await client.get(path)
        assert answer.status_code == 401 and answer.json()["error"] == "signed_out"
    client.cookies.set("pagi_console", "guess")
    assert (await client.get("/console/api/policy")).status_code == 401


async def test_changes_need_the_csrf_token_and_the_same_origin(client, link, fake) -> None:
    session = (await sign_in(client, link())).json()
    body = {"tool_name": "python", "code": "print(1)"}
    without = await client.post("/console/api/execute", json=body, headers=SAME_ORIGIN)
    wrong = await client.post(
        "/console/api/execute", json=body, headers={**SAME_ORIGIN, "X-CSRF-Token": "x" * 43}
    )
    elsewhere = await client.post(
        "/console/api/execute",
        json=body,
        headers={**changing(session), "Origin": "http://attacker.test"},
    )
    sign_out = await client.delete("/console/api/session", headers=SAME_ORIGIN)
    assert [r.status_code for r in (without, wrong, elsewhere, sign_out)] == [403, 403, 403, 403]
    assert without.json()["error"] == "csrf_token_invalid"
    assert fake.received == []  # nothing reached the sandbox
    assert (await client.get("/console/api/session")).status_code == 200


async def test_signing_out_ends_the_session_on_the_server(client, link) -> None:
    session = (await sign_in(client, link())).json()
    cookie = client.cookies.get("pagi_console")
    answer = await client.delete("/console/api/session", headers=changing(session))
    assert answer.status_code == 200
    assert (
        'pagi_console=""' in answer.headers["set-cookie"]
        or "Max-Age=0" in (answer.headers["set-cookie"])
    )
    client.cookies.set("pagi_console", cookie)  # a copy of the cookie is worth nothing now
    assert (await client.get("/console/api/session")).status_code == 401


async def test_an_idle_session_ends(keys_dir, fake_server, link, monkeypatch) -> None:
    async with console(keys_dir, fake_server[1], pagi_console_idle_seconds=60) as http:
        await sign_in(http, link())
        assert (await http.get("/console/api/session")).status_code == 200
        later = time.monotonic() + 61
        monkeypatch.setattr("bff.console.sessions.time.monotonic", lambda: later)
        assert (await http.get("/console/api/session")).status_code == 401


# --------------------------------------------------------------------------- acting for the person


async def test_calls_carry_a_token_for_the_person_not_the_bff(
    client, link, fake, trust: TrustStore
) -> None:
    session = (await sign_in(client, link("alice"))).json()
    refused = await client.post(
        "/console/api/execute",
        json={"tool_name": "python", "code": "print(1)"},
        headers=changing(session),
    )
    await client.get("/console/api/runs")
    # The sandbox's refusal comes back with its status and words.
    assert refused.status_code == 403
    assert refused.json()["detail"] == "caller 'alice' may not run tool 'python'"
    (execute,) = [r for r in fake.received if r.path == "/api/v1/execute_tool"]
    (runs,) = [r for r in fake.received if r.path == "/api/v1/runs"]
    for received, audience in ((execute, "sandbox"), (runs, "agent")):
        token = received.headers["authorization"].removeprefix("Bearer ")
        claims = TokenVerifier(audience, trust, delegators=ACTS_FOR_PEOPLE).verify(token)
        assert (claims.subject, claims.actor) == ("alice", "bff")


# --------------------------------------------------------------------------- the page


async def test_the_page_and_api_carry_a_strict_content_security_policy(client, link) -> None:
    page = await client.get("/console/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert csp == CONTENT_SECURITY_POLICY
    for directive in (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
    ):
        assert directive in csp
    assert "unsafe" not in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    api = await client.get("/console/api/session")
    assert api.headers["content-security-policy"] == csp
    assert api.headers["cache-control"] == "no-store"
    # The rest of the bff is untouched (its /docs page loads its own scripts).
    assert "content-security-policy" not in (await client.get("/health")).headers


async def test_only_the_shipped_files_are_served(client) -> None:
    assert (await client.get("/")).headers["location"] == "/console/"
    script = await client.get("/console/static/app.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith(
        "text/javascript"
    )
    for name in ("../app.py", "..%2Fapp.py", "index.html", "nope.js", "app.JS", "x.py"):
        assert (await client.get(f"/console/static/{name}")).status_code in (404, 422), name


def test_the_page_has_no_inline_script_or_style_and_no_html_sinks() -> None:
    static = Path(__file__).resolve().parents[3] / "bff" / "console" / "static"
    page = (static / "index.html").read_text()
    assert "<script>" not in page and "style=" not in page and "<style" not in page
    assert not re.search(r"\son[a-z]+\s*=", page)  # no onclick= and the like
    for script in static.glob("*.js"):
        text = script.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in text, (script.name, sink)
        for storage in ("localStorage", "sessionStorage", "document.cookie", "indexedDB"):
            assert storage not in text, (script.name, storage)
