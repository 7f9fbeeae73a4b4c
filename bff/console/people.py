"""The tokens the bff signs to act for a signed-in person.

Each call the console makes for a person carries a token the bff signs with
``sub`` = the person and ``act`` = bff (see :mod:`pagi.auth`): the agent and
the sandbox authorize the person, never the bff, and record both. One
token per person and service, reused until near its expiry.
"""

from __future__ import annotations

import threading

from pagi.auth import ReusedToken, TokenSigner

MAX_KEPT = 1024


class PersonTokens:
    """Tokens acting for people, by person and audience."""

    def __init__(self, signer: TokenSigner) -> None:
        self._signer = signer
        self._tokens: dict[tuple[str, str], ReusedToken] = {}
        self._lock = threading.Lock()

    def headers(self, person: str, audience: str) -> dict[str, str]:
        """The ``Authorization`` header of a call to ``audience`` for ``person``."""
        key = (person, audience)
        with self._lock:
            token = self._tokens.get(key)
            if token is None:
                if len(self._tokens) >= MAX_KEPT:
                    del self._tokens[next(iter(self._tokens))]
                token = self._tokens[key] = ReusedToken(self._signer, audience, subject=person)
            return {"Authorization": f"Bearer {token.get()}"}
