"""Signing tokens for one identity, and reusing one per audience until near its expiry."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from jose import jwt

from pagi.auth.claims import (
    ALGORITHM,
    OPERATOR_TOKEN_MAX_TTL,
    SERVICE_TOKEN_MAX_TTL,
    is_person,
)
from pagi.auth.encoding import with_low_s
from pagi.auth.keys import load_key, private_key_path


class TokenSigner:
    """Signs tokens for one identity with its private key (parsed once)."""

    def __init__(self, identity: str, private_pem: bytes) -> None:
        self.identity = identity
        self._key = load_key(private_pem, f"private key of {identity}")

    @classmethod
    def from_keys_dir(cls, keys_dir: Path, identity: str) -> TokenSigner:
        """Load ``identity``'s private key from the keys dir."""
        path = private_key_path(keys_dir, identity)
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise RuntimeError(
                f"cannot read the private key of {identity!r} at {path}: {exc.strerror}"
                " (run `pagi keys init`)"
            ) from exc
        return cls(identity, pem)

    def sign(self, audience: str, ttl: int = 60, subject: str | None = None) -> str:
        """A fresh token from this identity to ``audience``, valid ``ttl`` seconds.

        With ``subject`` (a person), the token is this identity acting for
        that person (``sub = subject``, ``act = {"sub": identity}``).
        """
        limit = OPERATOR_TOKEN_MAX_TTL if self.identity == "operator" else SERVICE_TOKEN_MAX_TTL
        if not 1 <= ttl <= limit:
            raise ValueError(f"ttl must be between 1 and {limit} seconds for {self.identity}")
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.identity,
            "sub": self.identity,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
        }
        if subject is not None and subject != self.identity:
            if not is_person(subject):
                raise ValueError(f"{subject!r} is not a person's name")
            claims["sub"] = subject
            claims["act"] = {"sub": self.identity}
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"typ": "JWT"})
        return with_low_s(token)


class ReusedToken:
    """One identity's token for one audience, signed again only when near its expiry.

    Outgoing calls to a service reuse it: signing costs the caller ~50 µs
    and, a new token every call, the callee a full verification each time
    (a verifier remembers the tokens it has checked, see :class:`TokenVerifier`).
    """

    TTL_SECONDS = 120
    REFRESH_MARGIN_SECONDS = 30
    """Signed again this long before it expires, so no call carries an almost-dead token."""

    def __init__(self, signer: TokenSigner, audience: str, subject: str | None = None) -> None:
        self._signer = signer
        self._audience = audience
        self._subject = subject
        self._token = ""
        self._renew_at = 0.0

    def get(self) -> str:
        """The current token (a fresh one when the last is near its expiry)."""
        now = time.monotonic()
        if now >= self._renew_at:
            if self._subject is None:
                self._token = self._signer.sign(self._audience, ttl=self.TTL_SECONDS)
            else:
                self._token = self._signer.sign(
                    self._audience, ttl=self.TTL_SECONDS, subject=self._subject
                )
            self._renew_at = now + self.TTL_SECONDS - self.REFRESH_MARGIN_SECONDS
        return self._token
