"""JWT between services: ES256, one key pair per identity, verified in one place.

Every identity (the five services and the human ``operator``) owns a P-256
key pair in the keys dir: ``NAME.key`` (PKCS#8 PEM, mode 0600) and
``NAME.pub`` (SubjectPublicKeyInfo PEM). A caller sends each outgoing call
with a short-lived token (``iss = sub = caller``, ``aud = target``, ``iat``,
``exp``, ``jti``), one per target reused until near its expiry
(:class:`ReusedToken`); the receiver picks the issuer's public key from its
trust store and verifies.

python-jose has had algorithm-confusion bugs (CVE-2024-33663 and a DER-key
variant), so the header is checked *before* python-jose sees the token:
only ``alg: ES256`` with no key-carrying header parameters is let through,
the key is a pre-built EC key object, and ``algorithms=["ES256"]`` is pinned
on decode.

**Acting for a person.** A service that works for a signed-in person (the
bff, for a console user) sends a token it signs itself whose subject is the
person and whose ``act`` claim names the service (RFC 8693):
``iss = bff, sub = alice, act = {"sub": "bff"}``. The receiver sees both
(:attr:`Claims.subject` is the person, :attr:`Claims.actor` the service) and
authorizes by the person. It accepts such a token only from the issuers it
was told may act for people (``delegators``); the subject must be a person's
name, never a service's. Without ``act`` the subject must be the issuer.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jose import jwk, jwt
from jose.backends.base import Key
from jose.exceptions import JOSEError

from pagi import IDENTITIES, SERVICES

ALGORITHM = "ES256"
SERVICE_TOKEN_MAX_TTL = 300
"""Service-to-service tokens live at most five minutes."""
OPERATOR_TOKEN_MAX_TTL = 24 * 3600
"""Tokens minted for a person with ``pagi token`` live at most a day."""
MAX_TOKEN_BYTES = 4096
CLOCK_SKEW_SECONDS = 30
VERIFIED_TOKENS_REMEMBERED = 1024
"""Tokens whose claims a verifier keeps (see :class:`TokenVerifier`)."""
_ALLOWED_HEADER_KEYS = frozenset({"alg", "typ", "kid"})
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


# --------------------------------------------------------------------------- keys


def private_key_path(keys_dir: Path, identity: str) -> Path:
    """Where an identity's private key lives."""
    return keys_dir / f"{identity}.key"


def public_key_path(keys_dir: Path, identity: str) -> Path:
    """Where an identity's public key lives."""
    return keys_dir / f"{identity}.pub"


def missing_keys(keys_dir: Path, identities: tuple[str, ...] = IDENTITIES) -> list[str]:
    """Identities whose key pair is incomplete in ``keys_dir``."""
    return [
        name
        for name in identities
        if not (
            private_key_path(keys_dir, name).is_file() and public_key_path(keys_dir, name).is_file()
        )
    ]


def generate_keys(
    keys_dir: Path, identities: tuple[str, ...] = IDENTITIES, overwrite: bool = False
) -> list[str]:
    """Create a P-256 key pair for each identity that lacks one; return those created."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    created = []
    for name in identities:
        if not overwrite and name not in missing_keys(keys_dir, (name,)):
            continue
        key = ec.generate_private_key(ec.SECP256R1())
        private_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        _write_atomic(private_key_path(keys_dir, name), private_pem, 0o600)
        _write_atomic(public_key_path(keys_dir, name), public_pem, 0o644)
        created.append(name)
    return created


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _construct(pem: bytes, what: str) -> Key:
    try:
        return jwk.construct(pem, ALGORITHM)
    except JOSEError as exc:
        raise ValueError(f"{what}: not an ES256 key ({exc})") from exc


# --------------------------------------------------------------------------- signing


class TokenSigner:
    """Signs tokens for one identity with its private key (parsed once)."""

    def __init__(self, identity: str, private_pem: bytes) -> None:
        self.identity = identity
        self._key = _construct(private_pem, f"private key of {identity}")

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
        return _with_low_s(token)


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


# --------------------------------------------------------------------------- verifying


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
                keys[name] = _construct(path.read_bytes(), f"public key {path}")
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


_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _is_canonical_b64url(segment: str) -> bool:
    if not set(segment) <= _B64URL or len(segment) % 4 == 1:
        return False
    padded = segment + "=" * (-len(segment) % 4)
    raw = base64.urlsafe_b64decode(padded.encode("ascii"))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") == segment


# The order of the P-256 group: (r, s) and (r, n - s) are both valid ECDSA
# signatures of the same message. PAGI signs with the low s and accepts only
# that one, so a token has exactly one accepted spelling.
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_SIGNATURE_BYTES = 64


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode((segment + "=" * (-len(segment) % 4)).encode("ascii"))


def _high_s(signature: bytes) -> bool:
    return int.from_bytes(signature[32:], "big") > _P256_ORDER // 2


def _with_low_s(token: str) -> str:
    head, body, signature_b64 = token.split(".")
    signature = _b64decode(signature_b64)
    if not _high_s(signature):
        return token
    s = _P256_ORDER - int.from_bytes(signature[32:], "big")
    low = signature[:32] + s.to_bytes(32, "big")
    return f"{head}.{body}.{base64.urlsafe_b64encode(low).rstrip(b'=').decode('ascii')}"


def _b64json(segment: str) -> Any:
    padded = segment + "=" * (-len(segment) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))


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
        if not all(_is_canonical_b64url(part) for part in parts):
            raise AuthError("malformed token")
        try:
            header = _b64json(parts[0])
            unverified = _b64json(parts[1])
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
        signature = _b64decode(parts[2])
        if len(signature) != _SIGNATURE_BYTES or _high_s(signature):
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
