"""Who is asking the console's API, and whether a state-changing request is really theirs.

- The session cookie is ``HttpOnly`` (no script reads it), ``SameSite=Strict``
  (no other site's page sends it), and ``Secure`` with the ``__Host-`` prefix
  when the request came over HTTPS (or ``PAGI_CONSOLE_SECURE_COOKIE=always``).
- Every request that changes something (POST, DELETE) must also carry the
  session's CSRF token in ``X-CSRF-Token`` (the page gets it from ``GET
  /console/api/session`` and keeps it in memory), and, when the browser
  says where it comes from (``Origin``, ``Sec-Fetch-Site``), come from the
  console's own origin. Signing in, which has no session yet, needs the
  same origin.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request, Response

from bff.console.sessions import Session, SessionStore
from pagi.errors import ApiError

COOKIE = "pagi_console"
SECURE_COOKIE = "__Host-pagi_console"
CSRF_HEADER = "X-CSRF-Token"


def sessions_of(request: Request) -> SessionStore:
    """The bff's session store."""
    return request.app.state.console_sessions


def _secure(request: Request) -> bool:
    mode = request.app.state.console_secure_cookie
    return mode == "always" or (mode == "auto" and request.url.scheme == "https")


def cookie_value(request: Request) -> str | None:
    """The session cookie the request carries (the secure one first)."""
    return request.cookies.get(SECURE_COOKIE) or request.cookies.get(COOKIE)


def set_session_cookie(request: Request, response: Response, value: str, max_age: int) -> None:
    """Give the browser its session cookie."""
    secure = _secure(request)
    response.set_cookie(
        SECURE_COOKIE if secure else COOKIE,
        value,
        max_age=max_age,
        path="/",
        secure=secure,
        httponly=True,
        samesite="strict",
    )


def clear_session_cookie(response: Response) -> None:
    """Tell the browser to drop the session cookie, whichever it holds."""
    for name, secure in ((COOKIE, False), (SECURE_COOKIE, True)):
        response.delete_cookie(name, path="/", secure=secure, httponly=True, samesite="strict")


def require_same_origin(request: Request) -> None:
    """403 unless the browser's own headers, where present, say the request is same-origin."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise ApiError(403, "cross_site_request", "the console only answers its own pages")
    origin = request.headers.get("origin")
    if origin is not None:
        expected = f"{request.url.scheme}://{request.url.netloc}"
        if origin != expected:
            raise ApiError(403, "cross_site_request", "the console only answers its own pages")


def _signed_out() -> ApiError:
    return ApiError(401, "signed_out", "sign in with a link from `pagi console`")


async def console_session(request: Request) -> Session:
    """Dependency: the signed-in person's session, or 401."""
    session = sessions_of(request).find(cookie_value(request))
    if session is None:
        raise _signed_out()
    return session


async def console_change(request: Request) -> Session:
    """Dependency: the session of a state-changing request, CSRF-checked, or 401/403."""
    session = await console_session(request)
    require_same_origin(request)
    given = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(given.encode("utf-8", "replace"), session.csrf_token.encode()):
        raise ApiError(403, "csrf_token_invalid", f"send the session's {CSRF_HEADER}")
    return session


ConsoleUser = Annotated[Session, Depends(console_session)]
"""A route parameter: the signed-in person (reading)."""
ConsoleChange = Annotated[Session, Depends(console_change)]
"""A route parameter: the signed-in person (changing something: CSRF-checked)."""
