"""What a verified token says, and the rules every token keeps (lifetimes, sizes, names)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pagi import SERVICES

ALGORITHM = "ES256"
SERVICE_TOKEN_MAX_TTL = 300
"""Service-to-service tokens live at most five minutes."""
OPERATOR_TOKEN_MAX_TTL = 24 * 3600
"""Tokens minted for a person with ``pagi token`` live at most a day."""
MAX_TOKEN_BYTES = 4096
CLOCK_SKEW_SECONDS = 30
VERIFIED_TOKENS_REMEMBERED = 1024
"""Tokens whose claims a verifier keeps (see :class:`TokenVerifier`)."""
PERSON_PATTERN = re.compile(r"^[a-z][a-z0-9._-]{0,63}$")
"""What a person's name looks like: lower-case, as the policy's ``[callers.NAME]`` keys."""


SIGN_IN_AUDIENCE = "console"
"""The audience of console sign-in links (``pagi console``): no service takes them as a
token; the bff reads them only to open a session."""
SIGN_IN_ISSUER = "operator"
"""Only the operator's key signs sign-in links (for the operator, or acting for a person)."""
DEFAULT_SIGN_IN_TTL = 120

ACTS_FOR_PEOPLE = frozenset({"bff"})
"""The services that act for signed-in people (the bff, for console users): the
``delegators`` of the services a console reaches (agent, sandbox)."""


def is_person(name: object) -> bool:
    """Whether ``name`` can name a person (well-formed, and not a service's name)."""
    return isinstance(name, str) and bool(PERSON_PATTERN.match(name)) and name not in SERVICES


class AuthError(Exception):
    """A token was refused; ``reason`` is safe to show the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Claims:
    """The verified identity behind a request.

    ``subject`` is who the request is for, and whom to authorize; ``actor``
    is the service that sent it on their behalf, None when the subject
    signed the token itself.
    """

    subject: str
    audience: str
    jti: str
    issued_at: int
    expires_at: int
    actor: str | None = None

    @property
    def issuer(self) -> str:
        """The identity whose key signed the token."""
        return self.actor or self.subject
