"""Hostile JWTs: forgeries, algorithm confusion, bad claims and mutations.

Every token built here must be refused by every PAGI service. Tokens are
assembled by hand (not with python-jose) so that nothing a JWT library
would normally refuse to produce is out of reach: ``alg: none``, HMAC keyed
with a public key, key-carrying headers, non-canonical encodings.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

Signer = Callable[[bytes], bytes]
Forgery = tuple[str, str]
"""``(what the token tries, the token)``."""


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JWS uses."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: str) -> bytes:
    """Decode an unpadded base64url segment."""
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def assemble(header: dict[str, Any] | bytes, claims: dict[str, Any] | bytes, sign: Signer) -> str:
    """``header.claims.signature`` with ``sign`` applied to the signing input."""
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    body = claims if isinstance(claims, bytes) else json.dumps(claims).encode()
    signing_input = f"{b64url(head)}.{b64url(body)}".encode("ascii")
    return f"{signing_input.decode('ascii')}.{b64url(sign(signing_input))}"


# --------------------------------------------------------------------------- signers


def _ec_raw(key: ec.EllipticCurvePrivateKey, digest: hashes.HashAlgorithm, size: int) -> Signer:
    def sign(data: bytes) -> bytes:
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(digest)))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")

    return sign


def es256_signer(private_pem: bytes) -> Signer:
    """ES256 (raw r||s) with a PEM private key."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return _ec_raw(key, hashes.SHA256(), 32)


def hmac_signer(secret: bytes, digest: str = "sha256") -> Signer:
    """HS256/384/512 keyed with ``secret``."""
    return lambda data: hmac.new(secret, data, getattr(hashlib, digest)).digest()


def _no_signature(_: bytes) -> bytes:
    return b""


class AttackerKeys:
    """Key pairs the attacker controls, one per algorithm family."""

    def __init__(self) -> None:
        self.p256 = ec.generate_private_key(ec.SECP256R1())
        self.p384 = ec.generate_private_key(ec.SECP384R1())
        self.p521 = ec.generate_private_key(ec.SECP521R1())
        self.k256 = ec.generate_private_key(ec.SECP256K1())
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ed25519 = ed25519.Ed25519PrivateKey.generate()

    def p256_jwk(self) -> dict[str, str]:
        """The attacker's P-256 public key as a JWK (for ``jwk`` header tricks)."""
        numbers = self.p256.public_key().public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url(numbers.x.to_bytes(32, "big")),
            "y": b64url(numbers.y.to_bytes(32, "big")),
        }

    def signers(self) -> dict[str, Signer]:
        """``alg -> signer`` for every algorithm PAGI must refuse or not trust."""
        rsa_key = self.rsa

        def rs(digest: hashes.HashAlgorithm) -> Signer:
            return lambda data: rsa_key.sign(data, padding.PKCS1v15(), digest)

        def ps(digest: hashes.HashAlgorithm) -> Signer:
            pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            return lambda data: rsa_key.sign(data, pss, digest)

        return {
            "ES256": _ec_raw(self.p256, hashes.SHA256(), 32),
            "ES256K": _ec_raw(self.k256, hashes.SHA256(), 32),
            "ES384": _ec_raw(self.p384, hashes.SHA384(), 48),
            "ES512": _ec_raw(self.p521, hashes.SHA512(), 66),
            "RS256": rs(hashes.SHA256()),
            "RS512": rs(hashes.SHA512()),
            "PS256": ps(hashes.SHA256()),
            "EdDSA": self.ed25519.sign,
        }


# --------------------------------------------------------------------------- claims


def good_claims(audience: str, issuer: str = "operator", ttl: int = 120) -> dict[str, Any]:
    """Claims PAGI would accept from ``issuer`` (when correctly signed)."""
    now = int(time.time())
    return {
        "iss": issuer,
        "sub": issuer,
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
    }


def _without(claims: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in claims.items() if k != key}


def bad_claim_sets(audience: str, other_audience: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Claim sets a trusted issuer's correct signature must not make acceptable."""
    now = int(time.time())
    base = good_claims(audience)
    yield "expired", {**base, "iat": now - 3700, "nbf": now - 3700, "exp": now - 3600}
    yield "expired beyond the clock skew", {**base, "iat": now - 200, "exp": now - 90}
    yield "not yet valid (nbf in the future)", {**base, "nbf": now + 3600, "exp": now + 3700}
    yield "issued in the future", {**base, "iat": now + 3600, "nbf": now, "exp": now + 3700}
    yield "wrong audience", {**base, "aud": other_audience}
    yield "audience of an unknown service", {**base, "aud": "nobody"}
    yield "empty audience", {**base, "aud": ""}
    yield "audience list without the target", {**base, "aud": [other_audience, "nobody"]}
    yield "missing audience", _without(base, "aud")
    yield "missing issuer", _without(base, "iss")
    yield "issuer not a string", {**base, "iss": ["operator"]}
    yield "missing subject", _without(base, "sub")
    yield "subject differs from issuer", {**base, "sub": "sandbox"}
    yield "subject not a string", {**base, "sub": 1}
    yield "missing jti", _without(base, "jti")
    yield "empty jti", {**base, "jti": ""}
    yield "jti not a string", {**base, "jti": 12345}
    yield "missing exp", _without(base, "exp")
    yield "missing iat", _without(base, "iat")
    yield "exp as a string", {**base, "exp": str(now + 120)}
    yield "exp as a float", {**base, "exp": now + 120.5}
    yield "exp as a boolean", {**base, "exp": True}
    yield "iat as a boolean", {**base, "iat": True}
    yield "exp far in the future", {**base, "exp": now + 10 * 365 * 24 * 3600}
    yield "exp huge integer", {**base, "exp": 10**40}
    yield "claims are a list", [base]  # type: ignore[misc]


def bad_service_claim_sets(audience: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Claims signed by a service key that still must be refused."""
    base = good_claims(audience, issuer="agent")
    yield "service token living an hour", {**base, "exp": base["iat"] + 3600}


# --------------------------------------------------------------------------- forgeries


def _public_key_forms(pub_pem: bytes) -> dict[str, bytes]:
    key = serialization.load_pem_public_key(pub_pem)
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    openssh = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    point = key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return {
        "PEM": pub_pem,
        "PEM without trailing newline": pub_pem.rstrip(b"\n"),
        "DER": der,
        "OpenSSH": openssh,
        "raw point": point,
        "base64 DER": base64.b64encode(der),
    }


def forged_tokens(
    keys_dir: Path, audience: str, other_audience: str, attacker: AttackerKeys
) -> list[Forgery]:
    """Every forged or invalid token for a service whose identity is ``audience``."""
    forgeries: list[Forgery] = []
    claims = good_claims(audience)
    es256_header = {"alg": "ES256", "typ": "JWT"}
    trusted = es256_signer((keys_dir / "operator.key").read_bytes())

    # alg: none in its spellings, with and without a signature segment.
    for alg in ("none", "None", "NONE", "nOnE", "", None):
        header = {"alg": alg, "typ": "JWT"}
        forgeries.append((f"alg={alg!r}, empty signature", assemble(header, claims, _no_signature)))
        forgeries.append(
            (f"alg={alg!r}, junk signature", assemble(header, claims, lambda _: b"\x00" * 64))
        )
    forgeries.append(("no alg at all", assemble({"typ": "JWT"}, claims, trusted)))

    # HMAC keyed with a public key (algorithm confusion), in every form a key is found.
    for owner in ("operator", audience):
        pub_pem = (keys_dir / f"{owner}.pub").read_bytes()
        for form, secret in _public_key_forms(pub_pem).items():
            for alg, digest in (("HS256", "sha256"), ("HS384", "sha384"), ("HS512", "sha512")):
                token = assemble({"alg": alg, "typ": "JWT"}, claims, hmac_signer(secret, digest))
                forgeries.append((f"{alg} keyed with {owner}'s public key ({form})", token))
    forgeries.append(
        ("HS256 with an empty key", assemble({"alg": "HS256"}, claims, hmac_signer(b"")))
    )

    # Other algorithms, and ES256 itself, signed with keys the attacker owns.
    for alg, sign in attacker.signers().items():
        forgeries.append(
            (f"{alg} signed by an untrusted key", assemble({"alg": alg}, claims, sign))
        )
    attacker_es256 = attacker.signers()["ES256"]

    # Key-carrying or key-selecting headers pointing at the attacker's key.
    jwk = attacker.p256_jwk()
    tricks: dict[str, dict[str, Any]] = {
        "kid path traversal": {"kid": "../../../../dev/null"},
        "kid naming another identity": {"kid": "sandbox"},
        "kid SQL injection": {"kid": "x' UNION SELECT 'key"},
        "jku to loopback": {"jku": "http://127.0.0.1:1/jwks.json"},
        "x5u to loopback": {"x5u": "http://127.0.0.1:1/cert.pem"},
        "embedded jwk": {"jwk": jwk},
        "embedded x5c": {"x5c": ["MIIB"]},
        "crit extension": {"crit": ["exp"], "exp": 0},
        "b64 false": {"b64": False, "crit": ["b64"]},
    }
    for what, extra in tricks.items():
        header = {**es256_header, **extra}
        forgeries.append(
            (f"{what}, signed by the attacker", assemble(header, claims, attacker_es256))
        )
    for what in ("jku to loopback", "embedded jwk", "x5u to loopback"):
        header = {**es256_header, **tricks[what]}
        forgeries.append((f"{what}, trusted signature", assemble(header, claims, trusted)))
    forgeries.append(("typ JWE", assemble({**es256_header, "typ": "JWE"}, claims, trusted)))

    # Correct signature by a trusted key over claims that must not pass.
    for what, bad in bad_claim_sets(audience, other_audience):
        forgeries.append((what, assemble(es256_header, bad, trusted)))
    agent_signer = es256_signer((keys_dir / "agent.key").read_bytes())
    for what, bad in bad_service_claim_sets(audience):
        forgeries.append((what, assemble(es256_header, bad, agent_signer)))
    forgeries.append(
        (
            "issuer claims another identity than the signing key",
            assemble(es256_header, {**claims, "iss": "agent", "sub": "agent"}, trusted),
        )
    )
    forgeries.append(
        (
            "unknown issuer",
            assemble(es256_header, {**claims, "iss": "root", "sub": "root"}, trusted),
        )
    )

    # Shape: segments, sizes, encodings.
    valid = assemble(es256_header, claims, trusted)
    # ECDSA signatures are random: sign again until the base64url-only
    # characters appear, so that re-encoding really changes the string.
    with_url_chars = valid
    while not set(with_url_chars.rsplit(".", 1)[1]) & {"-", "_"}:
        with_url_chars = assemble(es256_header, {**claims, "jti": uuid.uuid4().hex}, trusted)
    head, body, signature = valid.split(".")
    json_string_header = b64url(b'"ES256"')
    unbalanced_claims = b64url(b"{{{")
    forgeries += [
        ("two segments", f"{head}.{body}"),
        ("four segments", f"{valid}.{signature}"),
        ("JWE-shaped five segments", f"{head}.{body}.{signature}.{signature}.{signature}"),
        ("empty signature segment", f"{head}.{body}."),
        ("signature of another token", f"{head}.{b64url(b'{}')}.{signature}"),
        ("padded segments", f"{head}==.{body}==.{signature}=="),
        ("standard base64 alphabet", with_url_chars.replace("-", "+").replace("_", "/")),
        ("whitespace inside", f"{head}. {body}.{signature}"),
        ("header not JSON", f"{b64url(b'not json')}.{body}.{signature}"),
        ("header a JSON string", f"{json_string_header}.{body}.{signature}"),
        ("claims not JSON", f"{head}.{unbalanced_claims}.{signature}"),
        ("huge token 8 KiB", f"{head}.{b64url(b'x' * 6000)}.{signature}"),
        ("huge token 64 KiB", f"{head}.{b64url(b'x' * 48000)}.{signature}"),
        ("huge header", assemble({**es256_header, "kid": "k" * 5000}, claims, trusted)),
        ("signature truncated", f"{head}.{body}.{signature[:-4]}"),
        ("signature doubled", f"{head}.{body}.{signature}{signature}"),
        ("signature DER encoded", f"{head}.{body}.{b64url(_as_der(b64url_decode(signature)))}"),
        ("non-ASCII", f"{head}.{body}.{signature}é"),
        ("NUL byte", f"{head}.{body}\x00.{signature}"),
        (
            "duplicate alg key in header",
            assemble(b'{"alg":"none","alg":"ES256"}', claims, _no_signature),
        ),
        (
            "duplicate alg key, none last",
            assemble(b'{"alg":"ES256","alg":"none"}', claims, _no_signature),
        ),
    ]
    return forgeries


def _as_der(raw: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    half = len(raw) // 2
    return encode_dss_signature(
        int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
    )


# --------------------------------------------------------------------------- mutations


def byte_mutations(token: str) -> Iterator[Forgery]:
    """The token with one bit flipped in each byte of each decoded segment."""
    segments = token.split(".")
    names = ("header", "claims", "signature")
    for index, segment in enumerate(segments):
        raw = bytearray(b64url_decode(segment))
        for position in range(len(raw)):
            for mask in (0x01, 0x80):
                mutated = bytearray(raw)
                mutated[position] ^= mask
                parts = list(segments)
                parts[index] = b64url(bytes(mutated))
                yield f"{names[index]} byte {position} ^ {mask:#04x}", ".".join(parts)


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def character_mutations(token: str) -> Iterator[Forgery]:
    """The token with each character replaced, once, by every other base64url character.

    This includes non-canonical encodings of the same bytes (the unused low
    bits of a segment's last character): a token string other than the one
    the issuer signed must not be accepted either.
    """
    for position, char in enumerate(token):
        if char == ".":
            continue
        for replacement in _ALPHABET:
            if replacement != char:
                yield (
                    f"char {position} {char!r}->{replacement!r}",
                    token[:position] + replacement + token[position + 1 :],
                )
