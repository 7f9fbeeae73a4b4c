"""Tokens a service signs for a person: both identities seen, accepted only where allowed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from jose import jwt

from pagi.auth import (
    SERVICE_TOKEN_MAX_TTL,
    AuthError,
    ReusedToken,
    TokenSigner,
    TokenVerifier,
    TrustStore,
    is_person,
    private_key_path,
)


@pytest.fixture
def sandbox_verifier(trust: TrustStore) -> TokenVerifier:
    """A receiver that lets the bff act for people."""
    return TokenVerifier("sandbox", trust, delegators=frozenset({"bff"}))


def signed(keys_dir: Path, identity: str, **claims: object) -> str:
    """A token with exactly these claims, signed with ``identity``'s real key."""
    now = int(time.time())
    body = {"iss": identity, "aud": "sandbox", "iat": now, "exp": now + 60, "jti": "j1", **claims}
    pem = private_key_path(keys_dir, identity).read_bytes()
    return jwt.encode({k: v for k, v in body.items() if v is not None}, pem, algorithm="ES256")


def test_a_token_for_a_person_names_both(keys_dir: Path, sandbox_verifier: TokenVerifier) -> None:
    token = TokenSigner.from_keys_dir(keys_dir, "bff").sign("sandbox", subject="alice")
    claims = sandbox_verifier.verify(token)
    assert claims.subject == "alice"
    assert claims.actor == "bff"
    assert claims.issuer == "bff"


def test_a_service_token_has_no_actor(keys_dir: Path, sandbox_verifier: TokenVerifier) -> None:
    claims = sandbox_verifier.verify(TokenSigner.from_keys_dir(keys_dir, "bff").sign("sandbox"))
    assert claims.subject == "bff" and claims.actor is None


def test_the_operator_can_be_acted_for(keys_dir: Path, sandbox_verifier: TokenVerifier) -> None:
    token = TokenSigner.from_keys_dir(keys_dir, "bff").sign("sandbox", subject="operator")
    claims = sandbox_verifier.verify(token)
    assert (claims.subject, claims.actor) == ("operator", "bff")


def test_a_receiver_that_allows_no_delegation_refuses_it(keys_dir: Path, trust: TrustStore) -> None:
    token = TokenSigner.from_keys_dir(keys_dir, "bff").sign("sandbox", subject="alice")
    with pytest.raises(AuthError, match="bff may not act for others here"):
        TokenVerifier("sandbox", trust).verify(token)


def test_only_the_named_delegators_may_act(keys_dir: Path, sandbox_verifier: TokenVerifier) -> None:
    token = TokenSigner.from_keys_dir(keys_dir, "agent").sign("sandbox", subject="alice")
    with pytest.raises(AuthError, match="agent may not act for others here"):
        sandbox_verifier.verify(token)


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "alice", "act": {"sub": "agent"}},  # act does not name the issuer
        {"sub": "alice", "act": "bff"},
        {"sub": "alice", "act": {"sub": "bff", "act": {"sub": "agent"}}},  # a chain
        {"sub": "alice", "act": {"sub": "bff", "extra": 1}},
        {"sub": "alice", "act": {}},
        {"sub": "alice", "act": []},
    ],
)
def test_malformed_act_claims_are_refused(
    keys_dir: Path, sandbox_verifier: TokenVerifier, claims: dict
) -> None:
    with pytest.raises(AuthError, match="act claim"):
        sandbox_verifier.verify(signed(keys_dir, "bff", **claims))


@pytest.mark.parametrize("subject", ["agent", "sandbox", "bff", "Alice", "al ice", "", "a" * 65, 7])
def test_the_subject_of_a_delegated_token_must_be_a_person(
    keys_dir: Path, sandbox_verifier: TokenVerifier, subject: object
) -> None:
    with pytest.raises(AuthError):
        sandbox_verifier.verify(signed(keys_dir, "bff", sub=subject, act={"sub": "bff"}))


def test_without_act_the_subject_must_be_the_issuer(
    keys_dir: Path, sandbox_verifier: TokenVerifier
) -> None:
    with pytest.raises(AuthError, match="subject does not match issuer"):
        sandbox_verifier.verify(signed(keys_dir, "bff", sub="alice"))


def test_a_delegated_token_lives_no_longer_than_a_service_token(
    keys_dir: Path, sandbox_verifier: TokenVerifier
) -> None:
    now = int(time.time())
    token = signed(
        keys_dir, "bff", sub="alice", act={"sub": "bff"}, exp=now + SERVICE_TOKEN_MAX_TTL + 60
    )
    with pytest.raises(AuthError, match="lifetime"):
        sandbox_verifier.verify(token)


def test_a_signer_refuses_to_act_for_a_service(keys_dir: Path) -> None:
    signer = TokenSigner.from_keys_dir(keys_dir, "bff")
    for name in ("agent", "Not A Person"):
        with pytest.raises(ValueError, match="not a person"):
            signer.sign("sandbox", subject=name)


def test_a_reused_token_keeps_its_person(keys_dir: Path, sandbox_verifier: TokenVerifier) -> None:
    reused = ReusedToken(TokenSigner.from_keys_dir(keys_dir, "bff"), "sandbox", subject="bob")
    first = reused.get()
    assert reused.get() == first
    assert sandbox_verifier.verify(first).subject == "bob"


def test_person_names() -> None:
    assert is_person("alice") and is_person("operator") and is_person("j.doe-2")
    assert not any(is_person(n) for n in ("bff", "gateway", "Alice", "-x", "a/b", None, ""))
