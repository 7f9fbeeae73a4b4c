"""``pagi console``: a one-time sign-in link, the token in its fragment, signed by the operator."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.main import main
from pagi.auth import SIGN_IN_AUDIENCE, TokenVerifier, TrustStore


def run(capsys: pytest.CaptureFixture[str], monkeypatch, keys_dir: Path, *args: str):
    monkeypatch.setenv("PAGI_KEYS_DIR", str(keys_dir))
    monkeypatch.setenv("GO_BFF_URL", "http://127.0.0.1:8002")
    with pytest.raises(SystemExit) as ended:
        main(["console", *args])
    out = capsys.readouterr()
    return ended.value.code, out.out, out.err


def verify(token: str, trust: TrustStore):  # noqa: ANN201 - test helper
    return TokenVerifier(SIGN_IN_AUDIENCE, trust, delegators=frozenset({"operator"})).verify(token)


def test_the_link_carries_a_short_lived_token_in_its_fragment(
    capsys, monkeypatch, keys_dir: Path, trust: TrustStore
) -> None:
    code, out, err = run(capsys, monkeypatch, keys_dir)
    assert code == 0
    link = out.strip()
    assert link.startswith("http://127.0.0.1:8002/console/#sign-in=")
    claims = verify(link.split("#sign-in=", 1)[1], trust)
    assert (claims.subject, claims.actor) == ("operator", None)
    assert claims.expires_at - claims.issued_at == 120
    assert "one sign-in within 120 s" in err


def test_a_link_for_another_person_is_the_operator_acting_for_them(
    capsys, monkeypatch, keys_dir: Path, trust: TrustStore
) -> None:
    code, out, _ = run(
        capsys,
        monkeypatch,
        keys_dir,
        "--as",
        "alice",
        "--ttl",
        "30",
        "--url",
        "https://ops.example/",
    )
    assert code == 0
    assert out.startswith("https://ops.example/console/#sign-in=")
    claims = verify(out.strip().split("#sign-in=", 1)[1], trust)
    assert (claims.subject, claims.actor) == ("alice", "operator")
    assert claims.expires_at - claims.issued_at == 30


@pytest.mark.parametrize(
    "args, message",
    [
        (("--as", "sandbox"), "not a person's name"),
        (("--as", "Robert'); DROP"), "not a person's name"),
        (("--ttl", "3600"), "--ttl must be"),
        (("--ttl", "1"), "--ttl must be"),
    ],
)
def test_bad_requests_are_refused(capsys, monkeypatch, keys_dir: Path, args, message) -> None:
    code, out, err = run(capsys, monkeypatch, keys_dir, *args)
    assert code == 2 and out == "" and message in err


def test_without_the_operator_key_it_says_so(capsys, monkeypatch, tmp_path: Path) -> None:
    code, out, err = run(capsys, monkeypatch, tmp_path)
    assert code == 1 and out == "" and "pagi keys init" in err
