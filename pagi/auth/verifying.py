"""Verifying a token: the header checked before python-jose sees it, then the claims."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from jose import jwt
from jose.backends.base import Key
from jose.exceptions import JOSEError

from pagi import IDENTITIES
from pagi.auth.claims import (
    ALGORITHM,
    CLOCK_SKEW_SECONDS,
    MAX_TOKEN_BYTES,
    OPERATOR_TOKEN_MAX_TTL,
    SERVICE_TOKEN_MAX_TTL,
    VERIFIED_TOKENS_REMEMBERED,
    AuthError,
    Claims,
    is_person,
)
from pagi.auth.encoding import SIGNATURE_BYTES, b64decode, b64json, high_s, is_canonical_b64url
from pagi.auth.keys import load_key, public_key_path

_ALLOWED_HEADER_KEYS = frozenset({"alg", "typ", "kid"})


class TrustStore:
    """Public keys of the identities a service accepts tokens from."""

    def __init__(self, keys: dict[str, Key]) -> None:
        self._keys = dict(keys)

    @classmethod
    def from_keys_dir(cls, keys_dir: Path, identities: tuple[str, ...] = IDENTITIES) -> TrustStore:
        """Load every identity's public key found in the keys dir."""
        keys = {}
        for name in identities:
            path = public_key_path(keys_dir, name)
            if path.is_file():
                keys[name] = load_key(path.read_bytes(), f"public key {path}")
        if not keys:
            raise RuntimeError(f"no public keys in {keys_dir} (run `pagi keys init`)")
        return cls(keys)

    def key_for(self, issuer: str) -> Key | None:
        """The issuer's public key, or None when the issuer is not trusted."""
        return self._keys.get(issuer)

    @property
    def identities(self) -> list[str]:
        """The issuers this store trusts."""
        return sorted(self._keys)


class TokenVerifier:
    """Verifies tokens addressed to one audience (the receiving service).

    A caller sends the same token with every request until it expires, and
    the signature check is most of a request's authentication cost, so the
    claims of recently verified tokens are remembered (exact token string,
    bounded, until the token's expiry). Nothing else can change a verdict:
    the audience, the trusted keys and the ``delegators`` (issuers whose
    tokens may act for a person, see the module's docstring) are fixed for
    the verifier's life.
    """

    def __init__(
        self, audience: str, trust: TrustStore, delegators: frozenset[str] = frozenset()
    ) -> None:
        self.audience = audience
        self.trust = trust
        self.delegators = delegators
        self._verified: dict[str, Claims] = {}

    def verify(self, token: str) -> Claims:
        """The token's claims, or :class:`AuthError` saying why it is refused."""
        claims = self._verified.get(token)
        if claims is not None:
            if time.time() <= claims.expires_at + CLOCK_SKEW_SECONDS:
                return claims
            del self._verified[token]  # the full check below says why it is refused
        claims = self._verify(token)
        if len(self._verified) >= VERIFIED_TOKENS_REMEMBERED:
            del self._verified[next(iter(self._verified))]  # the oldest
        self._verified[token] = claims
        return claims

    def _verify(self, token: str) -> Claims:
        if not token:
            raise AuthError("missing token")
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError("token too large")
        if not token.isascii():
            raise AuthError("malformed token")
        parts = token.split(".")
        if len(parts) != 3 or not all(parts):
            raise AuthError("malformed token")
        # base64 decoders tolerate '+', '/' and stray low bits, so several strings
        # would carry the same signature: accept only the one the issuer produced.
        if not all(is_canonical_b64url(part) for part in parts):
            raise AuthError("malformed token")
        try:
            header = b64json(parts[0])
            unverified = b64json(parts[1])
        except (ValueError, UnicodeError):
            raise AuthError("malformed token") from None
        if not isinstance(header, dict) or not isinstance(unverified, dict):
            raise AuthError("malformed token")
        if header.get("alg") != ALGORITHM:
            raise AuthError(f"algorithm not allowed (only {ALGORITHM})")
        if set(header) - _ALLOWED_HEADER_KEYS:
            raise AuthError("token header carries parameters that are not accepted")
        if header.get("typ", "JWT") != "JWT":
            raise AuthError("token type not accepted")
        issuer = unverified.get("iss")
        if not isinstance(issuer, str):
            raise AuthError("token has no issuer")
        key = self.trust.key_for(issuer)
        if key is None:
            raise AuthError("unknown issuer")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=issuer,
                options={
                    "require_aud": True,
                    "require_iat": True,
                    "require_exp": True,
                    "require_iss": True,
                    "require_sub": True,
                    "require_jti": True,
                    "leeway": CLOCK_SKEW_SECONDS,
                },
            )
        except JOSEError as exc:
            raise AuthError(_describe(exc)) from None
        except Exception:  # noqa: BLE001 - any parser failure on hostile input is a refusal
            raise AuthError("invalid token") from None
        verified = self._check_claims(claims, issuer)
        signature = b64decode(parts[2])
        if len(signature) != SIGNATURE_BYTES or high_s(signature):
            raise AuthError("bad signature (not the canonical low-s form)")
        return verified

    def _check_claims(self, claims: dict[str, Any], issuer: str) -> Claims:
        subject, jti, iat, exp = (claims.get(k) for k in ("sub", "jti", "iat", "exp"))
        actor = self._actor(claims, issuer, subject)
        if not isinstance(jti, str) or not jti:
            raise AuthError("token has no id")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (iat, exp)):
            raise AuthError("token times must be integers")
        now = time.time()
        if iat > now + CLOCK_SKEW_SECONDS:
            raise AuthError("token issued in the future")
        if now > exp + CLOCK_SKEW_SECONDS:  # as jose checks it, on the clock the cache uses
            raise AuthError("token expired")
        limit = OPERATOR_TOKEN_MAX_TTL if issuer == "operator" else SERVICE_TOKEN_MAX_TTL
        if exp - iat > limit:
            raise AuthError("token lifetime too long")
        return Claims(
            subject=subject,
            audience=self.audience,
            jti=jti,
            issued_at=iat,
            expires_at=exp,
            actor=actor,
        )

    def _actor(self, claims: dict[str, Any], issuer: str, subject: object) -> str | None:
        """The service acting for the subject, None when the subject is the issuer."""
        if "act" not in claims:
            if subject != issuer:
                raise AuthError("subject does not match issuer")
            return None
        act = claims["act"]
        # Only one level, naming the issuer: a chain of actors is not accepted.
        if not isinstance(act, dict) or set(act) != {"sub"} or act["sub"] != issuer:
            raise AuthError("the act claim must name the issuer, and only it")
        if issuer not in self.delegators:
            raise AuthError(f"{issuer} may not act for others here")
        if not is_person(subject) or subject == issuer:
            raise AuthError("a token acting for someone must name a person as its subject")
        return issuer


def _describe(exc: JOSEError) -> str:
    text = str(exc).lower()
    if "expired" in text:
        return "token expired"
    if "audience" in text:
        return "wrong audience"
    if "issuer" in text:
        return "wrong issuer"
    if "before" in text or "nbf" in text:
        return "token not yet valid"
    if "signature" in text:
        return "bad signature"
    if "missing" in text:
        return "token misses a required claim"
    return "invalid token"


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer …`` value, or :class:`AuthError`."""
    if not authorization:
        raise AuthError("missing bearer token")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("authorization must be 'Bearer <token>'")
    return token.strip()
