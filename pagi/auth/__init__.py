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

Modules: :mod:`.claims` (what a token says, the limits), :mod:`.keys` (key
pairs), :mod:`.signing`, :mod:`.verifying`.
"""

from pagi.auth.claims import (
    ACTS_FOR_PEOPLE,
    ALGORITHM,
    CLOCK_SKEW_SECONDS,
    DEFAULT_SIGN_IN_TTL,
    MAX_TOKEN_BYTES,
    OPERATOR_TOKEN_MAX_TTL,
    PERSON_PATTERN,
    SERVICE_TOKEN_MAX_TTL,
    SIGN_IN_AUDIENCE,
    SIGN_IN_ISSUER,
    VERIFIED_TOKENS_REMEMBERED,
    AuthError,
    Claims,
    is_person,
)
from pagi.auth.keys import generate_keys, load_key, missing_keys, private_key_path, public_key_path
from pagi.auth.signing import ReusedToken, TokenSigner
from pagi.auth.verifying import TokenVerifier, TrustStore, bearer_token

__all__ = [
    "ACTS_FOR_PEOPLE",
    "ALGORITHM",
    "AuthError",
    "CLOCK_SKEW_SECONDS",
    "Claims",
    "DEFAULT_SIGN_IN_TTL",
    "MAX_TOKEN_BYTES",
    "OPERATOR_TOKEN_MAX_TTL",
    "PERSON_PATTERN",
    "ReusedToken",
    "SERVICE_TOKEN_MAX_TTL",
    "SIGN_IN_AUDIENCE",
    "SIGN_IN_ISSUER",
    "TokenSigner",
    "TokenVerifier",
    "TrustStore",
    "VERIFIED_TOKENS_REMEMBERED",
    "bearer_token",
    "generate_keys",
    "is_person",
    "load_key",
    "missing_keys",
    "private_key_path",
    "public_key_path",
]
