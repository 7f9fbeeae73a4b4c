"""Console sessions, kept on the server: the browser holds only an opaque cookie.

A session is made from a sign-in link (``pagi console``) and names the
person it is for. The cookie value is 32 random bytes; the server keeps
only its SHA-256, with the person, a per-session CSRF token, and two
deadlines: the session's whole life and the longest it may sit unused.
Sessions live in the bff's memory: restarting the bff signs everyone out.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta


def _digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode("ascii", "replace")).hexdigest()


@dataclass
class Session:
    """One signed-in person."""

    person: str
    operator: bool
    csrf_token: str
    started_at: datetime
    expires_at: datetime
    _deadline: float = field(repr=False, default=0.0)
    _idle_deadline: float = field(repr=False, default=0.0)

    @property
    def role(self) -> str:
        """``operator`` (sees every run and the audit log) or ``member``."""
        return "operator" if self.operator else "member"


class SessionStore:
    """The sessions of one bff process."""

    def __init__(self, lifetime_seconds: int, idle_seconds: int, max_sessions: int) -> None:
        self.lifetime_seconds = lifetime_seconds
        self.idle_seconds = idle_seconds
        self.max_sessions = max_sessions
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def start(self, person: str, operator: bool) -> tuple[str, Session]:
        """A new session for ``person``: the cookie value to set, and the session."""
        cookie = secrets.token_urlsafe(32)
        now = time.monotonic()
        started = datetime.now(UTC)
        session = Session(
            person=person,
            operator=operator,
            csrf_token=secrets.token_urlsafe(32),
            started_at=started,
            expires_at=started + timedelta(seconds=self.lifetime_seconds),
            _deadline=now + self.lifetime_seconds,
            _idle_deadline=now + self.idle_seconds,
        )
        with self._lock:
            self._forget_ended(now)
            while len(self._sessions) >= self.max_sessions:
                del self._sessions[next(iter(self._sessions))]  # the oldest
            self._sessions[_digest(cookie)] = session
        return cookie, session

    def find(self, cookie: str | None) -> Session | None:
        """The live session of this cookie value (its idle deadline moved on), or None."""
        if not cookie:
            return None
        key = _digest(cookie)
        now = time.monotonic()
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if now >= session._deadline or now >= session._idle_deadline:
                del self._sessions[key]
                return None
            session._idle_deadline = min(now + self.idle_seconds, session._deadline)
            return session

    def end(self, cookie: str | None) -> bool:
        """End the session of this cookie value; whether there was one."""
        if not cookie:
            return False
        with self._lock:
            return self._sessions.pop(_digest(cookie), None) is not None

    def count(self) -> int:
        """Sessions alive now."""
        with self._lock:
            self._forget_ended(time.monotonic())
            return len(self._sessions)

    def _forget_ended(self, now: float) -> None:
        ended = [
            key
            for key, session in self._sessions.items()
            if now >= session._deadline or now >= session._idle_deadline
        ]
        for key in ended:
            del self._sessions[key]


class UsedLinks:
    """Ids of the sign-in links used, kept until the link would have expired: each works once."""

    MAX_REMEMBERED = 10_000

    def __init__(self) -> None:
        self._used: dict[str, float] = {}
        self._lock = threading.Lock()

    def use(self, jti: str, expires_at: int) -> bool:
        """Mark the link used; False when it was used before."""
        now = time.time()
        with self._lock:
            for old in [key for key, until in self._used.items() if until < now]:
                del self._used[old]
            if jti in self._used:
                return False
            if len(self._used) >= self.MAX_REMEMBERED:
                del self._used[next(iter(self._used))]
            # Kept past the expiry by the clock skew a verifier allows.
            self._used[jti] = expires_at + 60
            return True
