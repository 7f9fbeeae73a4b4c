"""The one token verifier every service uses, attacked directly (many cases, fast).

The same forgeries are then sent over HTTP and gRPC to each running
service in ``test_forged_tokens_live.py``; here the point is volume.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pagi.auth import AuthError, TokenSigner, TokenVerifier, TrustStore
from testing.forged_tokens import (
    AttackerKeys,
    assemble,
    b64url,
    b64url_decode,
    byte_mutations,
    character_mutations,
    es256_signer,
    forged_tokens,
    good_claims,
)

SERVICES_WITH_AUTH = ("agent", "sandbox", "memory", "bff", "gateway")


@pytest.fixture(scope="module")
def attacker() -> AttackerKeys:
    return AttackerKeys()


def refused(verifier: TokenVerifier, token: str) -> str | None:
    """None when the token is refused with AuthError; else what happened instead."""
    try:
        claims = verifier.verify(token)
    except AuthError:
        return None
    except Exception as exc:  # noqa: BLE001 - anything but AuthError is the finding
        return f"raised {type(exc).__name__}: {exc}"
    return f"ACCEPTED as {claims}"


@pytest.mark.parametrize("audience", SERVICES_WITH_AUTH)
def test_every_forgery_is_refused(keys_dir: Path, trust: TrustStore, attacker, audience: str):
    verifier = TokenVerifier(audience, trust)
    other = "memory" if audience != "memory" else "agent"
    failures = [
        f"{what}: {problem}"
        for what, token in forged_tokens(keys_dir, audience, other, attacker)
        if (problem := refused(verifier, token)) is not None
    ]
    assert not failures, "\n".join(failures)


def test_the_genuine_token_passes(token_for, trust: TrustStore):
    """Guards the suite itself: the verifier under attack does accept real tokens."""
    claims = TokenVerifier("sandbox", trust).verify(token_for("sandbox"))
    assert claims.subject == "operator"


def test_each_decoded_byte_flip_is_refused(token_for, trust: TrustStore):
    verifier = TokenVerifier("agent", trust)
    token = token_for("agent")
    failures = [
        f"{what}: {problem}"
        for what, mutated in byte_mutations(token)
        if (problem := refused(verifier, mutated)) is not None
    ]
    assert not failures, "\n".join(failures[:20])


def test_each_character_substitution_is_refused(token_for, trust: TrustStore):
    """Only the exact string the issuer signed passes, not another encoding of it."""
    verifier = TokenVerifier("agent", trust)
    token = token_for("agent")
    failures = [
        f"{what}: {problem}"
        for what, mutated in character_mutations(token)
        if (problem := refused(verifier, mutated)) is not None
    ]
    assert not failures, f"{len(failures)} mutated tokens accepted:\n" + "\n".join(failures[:20])


@settings(max_examples=400, deadline=None)
@given(token=st.one_of(st.text(max_size=6000), st.from_regex(r"[A-Za-z0-9_\-=.+/]{0,600}")))
def test_random_strings_are_refused(trust: TrustStore, token: str):
    assert refused(TokenVerifier("agent", trust), token) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    header_extra=st.dictionaries(st.text(max_size=10), json_values, max_size=3),
    claim_overrides=st.dictionaries(
        st.sampled_from(["iss", "sub", "aud", "iat", "nbf", "exp", "jti", "x"]),
        json_values,
        max_size=3,
    ),
)
def test_trusted_signature_over_arbitrary_claims_never_crashes(
    keys_dir: Path, trust: TrustStore, header_extra: dict, claim_overrides: dict
):
    """Whatever a (compromised or buggy) trusted issuer signs: AuthError or sane claims."""
    verifier = TokenVerifier("agent", trust)
    sign = es256_signer((keys_dir / "operator.key").read_bytes())
    header = {"alg": "ES256", **{k: v for k, v in header_extra.items() if k != "alg"}}
    claims = {**good_claims("agent"), **claim_overrides}
    token = assemble(header, claims, sign)
    try:
        accepted = verifier.verify(token)
    except AuthError:
        return
    assert set(header) <= {"alg", "typ", "kid"}, f"accepted header {header}"
    assert header.get("typ", "JWT") == "JWT"
    assert claims["aud"] == "agent" or (
        isinstance(claims["aud"], list) and "agent" in claims["aud"]
    )
    assert claims["iss"] == claims["sub"] == "operator" == accepted.subject
    assert isinstance(claims["jti"], str) and claims["jti"]
    assert type(claims["exp"]) is int and type(claims["iat"]) is int


@settings(max_examples=200, deadline=None)
@given(raw_header=st.binary(max_size=64), raw_claims=st.binary(max_size=200))
def test_arbitrary_segment_bytes_are_refused(
    keys_dir: Path, trust: TrustStore, raw_header, raw_claims
):
    sign = es256_signer((keys_dir / "operator.key").read_bytes())
    token = assemble(raw_header, raw_claims, sign)
    assert refused(TokenVerifier("agent", trust), token) is None


def test_a_signer_key_cannot_sign_for_another_identity(keys_dir: Path, trust: TrustStore):
    """A service's own key signs only as that service: ``iss`` names the key owner."""
    token = TokenSigner.from_keys_dir(keys_dir, "memory").sign("sandbox")
    header, claims, signature = token.split(".")
    forged_claims = json.loads(b64url_decode(claims))
    forged_claims.update(iss="agent", sub="agent")
    forged = f"{header}.{b64url(json.dumps(forged_claims).encode())}.{signature}"
    assert refused(TokenVerifier("sandbox", trust), forged) is None
