"""Token signing and verification: valid tokens pass, every forgery is refused."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jose import jwt

from pagi.auth import (
    AuthError,
    ReusedToken,
    TokenSigner,
    TokenVerifier,
    TrustStore,
    bearer_token,
    generate_keys,
    missing_keys,
    private_key_path,
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict, claims: dict, signature: bytes = b"sig") -> str:
    return ".".join(
        [b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), b64(signature)]
    )


def claims_for(aud: str = "sandbox", identity: str = "operator", **over: object) -> dict:
    now = int(time.time())
    base = {"iss": identity, "sub": identity, "aud": aud, "iat": now, "exp": now + 60, "jti": "x1"}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def hs256_with_public_key(keys_dir: Path, identity: str, form: str, claims: dict) -> str:
    pem = (keys_dir / f"{identity}.pub").read_bytes()
    public = serialization.load_pem_public_key(pem)
    if form == "pem":
        secret = pem
    elif form == "der":
        secret = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        secret = public.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    mac = hmac.HMAC(secret, hashes.SHA256())
    mac.update(f"{header}.{body}".encode())
    return f"{header}.{body}.{b64(mac.finalize())}"


@pytest.fixture
def verifier(trust: TrustStore) -> TokenVerifier:
    return TokenVerifier("sandbox", trust)


def test_valid_token_round_trip(verifier: TokenVerifier, token_for: Callable[..., str]) -> None:
    claims = verifier.verify(token_for("sandbox", sub="bff"))
    assert claims.subject == "bff"
    assert claims.audience == "sandbox"
    assert claims.expires_at > claims.issued_at


def test_operator_token_for_curl(verifier: TokenVerifier, token_for: Callable[..., str]) -> None:
    assert verifier.verify(token_for("sandbox", sub="operator", ttl=3600)).subject == "operator"


def test_wrong_audience_refused(verifier: TokenVerifier, token_for: Callable[..., str]) -> None:
    with pytest.raises(AuthError, match="audience"):
        verifier.verify(token_for("agent"))


def test_tampered_claims_refused(verifier: TokenVerifier, token_for: Callable[..., str]) -> None:
    header, _, sig = token_for("sandbox", sub="bff").split(".")
    body = b64(json.dumps(claims_for(identity="operator")).encode())
    with pytest.raises(AuthError):
        verifier.verify(f"{header}.{body}.{sig}")


@pytest.mark.parametrize("form", ["pem", "der", "openssh"])
def test_hs256_signed_with_public_key_refused(
    verifier: TokenVerifier, keys_dir: Path, form: str
) -> None:
    token = hs256_with_public_key(keys_dir, "operator", form, claims_for())
    with pytest.raises(AuthError, match="algorithm"):
        verifier.verify(token)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "", "HS256", "RS256", "ES384", "EdDSA"])
def test_other_algorithms_refused(verifier: TokenVerifier, alg: str) -> None:
    with pytest.raises(AuthError, match="algorithm"):
        verifier.verify(forge({"alg": alg, "typ": "JWT"}, claims_for(), b"forged"))


def test_alg_none_with_empty_signature_refused(verifier: TokenVerifier) -> None:
    with pytest.raises(AuthError):
        verifier.verify(forge({"alg": "none"}, claims_for(), b""))


@pytest.mark.parametrize("param", ["jku", "x5u", "jwk", "x5c", "crit"])
def test_key_carrying_header_parameters_refused(
    verifier: TokenVerifier, keys_dir: Path, param: str
) -> None:
    # A validly signed token that *also* names a key source must not be accepted:
    # nothing in the header may steer which key verifies it.
    pem = private_key_path(keys_dir, "operator").read_bytes()
    token = jwt.encode(claims_for(), pem, algorithm="ES256", headers={param: "https://x/k"})
    with pytest.raises(AuthError, match="header"):
        verifier.verify(token)


def test_token_from_foreign_key_refused(verifier: TokenVerifier) -> None:
    foreign = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    token = TokenSigner("operator", foreign).sign("sandbox")
    with pytest.raises(AuthError, match="signature"):
        verifier.verify(token)


def test_unknown_issuer_refused(verifier: TokenVerifier, tmp_path: Path) -> None:
    generate_keys(tmp_path, ("mallory",))
    token = TokenSigner.from_keys_dir(tmp_path, "mallory").sign("sandbox")
    with pytest.raises(AuthError, match="issuer"):
        verifier.verify(token)


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 3660}, "expired"),
        ({"nbf": int(time.time()) + 3600}, "not yet valid"),
        ({"iat": int(time.time()) + 3600, "exp": int(time.time()) + 3660}, "future"),
        ({"aud": None}, "claim"),
        ({"jti": None}, "claim"),
        ({"exp": None}, "claim"),
        ({"iat": None}, "claim"),
        ({"sub": "agent"}, "subject"),
        ({"exp": int(time.time()) + 10 * 24 * 3600}, "lifetime"),
    ],
)
def test_bad_claims_refused(
    verifier: TokenVerifier, keys_dir: Path, override: dict, reason: str
) -> None:
    pem = private_key_path(keys_dir, "operator").read_bytes()
    token = jwt.encode(claims_for(**override), pem, algorithm="ES256")
    with pytest.raises(AuthError, match=reason):
        verifier.verify(token)


def test_service_token_lifetime_capped(keys_dir: Path) -> None:
    with pytest.raises(ValueError):
        TokenSigner.from_keys_dir(keys_dir, "bff").sign("sandbox", ttl=3600)


@pytest.mark.parametrize(
    "token", ["", "a", "a.b", "a.b.c", "....", "é.é.é", "x" * 10_000, "e30.e30.e30"]
)
def test_garbage_refused(verifier: TokenVerifier, token: str) -> None:
    with pytest.raises(AuthError):
        verifier.verify(token)


@pytest.mark.parametrize("value", [None, "", "Basic abc", "Bearer", "Bearer   ", "token"])
def test_bearer_header_parsing_refuses_malformed(value: str | None) -> None:
    with pytest.raises(AuthError):
        bearer_token(value)


def test_keys_are_private(tmp_path: Path) -> None:
    created = generate_keys(tmp_path / "k")
    assert "operator" in created
    assert missing_keys(tmp_path / "k") == []
    assert (private_key_path(tmp_path / "k", "sandbox").stat().st_mode & 0o777) == 0o600
    assert generate_keys(tmp_path / "k") == []  # idempotent: never replaces keys silently


def test_signatures_are_low_s_and_the_flipped_twin_is_refused(
    verifier: TokenVerifier, token_for: Callable[..., str]
) -> None:
    # (r, s) and (r, n - s) both verify under plain ECDSA: accept only one spelling.
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    for _ in range(20):
        token = token_for("sandbox")
        head, body, sig = token.split(".")
        raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
        s = int.from_bytes(raw[32:], "big")
        assert s <= order // 2
        verifier.verify(token)
        twin = raw[:32] + (order - s).to_bytes(32, "big")
        forged = f"{head}.{body}.{b64(twin)}"
        with pytest.raises(AuthError, match="signature"):
            verifier.verify(forged)


def test_a_remembered_token_still_expires(
    verifier: TokenVerifier, token_for: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = token_for("sandbox", sub="operator")
    claims = verifier.verify(token)
    assert verifier.verify(token) is claims  # remembered: no second signature check
    later = claims.expires_at + 31  # past the 30 s clock-skew allowance
    monkeypatch.setattr("pagi.auth.verifying.time.time", lambda: float(later))
    with pytest.raises(AuthError, match="expired"):
        verifier.verify(token)
    with pytest.raises(AuthError, match="expired"):
        verifier.verify(token)  # and it stays refused


def test_remembered_tokens_are_bounded_and_exact(
    verifier: TokenVerifier, token_for: Callable[..., str]
) -> None:
    from pagi.auth import VERIFIED_TOKENS_REMEMBERED

    first = token_for("sandbox", sub="operator")
    verifier.verify(first)
    for _ in range(VERIFIED_TOKENS_REMEMBERED):
        verifier.verify(token_for("sandbox", sub="operator"))  # a fresh jti each time
    assert len(verifier._verified) == VERIFIED_TOKENS_REMEMBERED
    assert first not in verifier._verified  # the oldest went first
    head, body, signature = first.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    with pytest.raises(AuthError):
        verifier.verify(f"{head}.{body}.{flipped}")


def test_reused_token_is_signed_again_only_near_expiry(
    keys_dir: Path, verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr("pagi.auth.signing.time.monotonic", lambda: clock[0])
    reused = ReusedToken(TokenSigner.from_keys_dir(keys_dir, "bff"), "sandbox")
    first = reused.get()
    assert verifier.verify(first).subject == "bff"
    clock[0] += ReusedToken.TTL_SECONDS - ReusedToken.REFRESH_MARGIN_SECONDS - 1
    assert reused.get() == first
    clock[0] += 1  # within the margin of its expiry: never sent that late
    second = reused.get()
    assert second != first
    assert verifier.verify(second).subject == "bff"
