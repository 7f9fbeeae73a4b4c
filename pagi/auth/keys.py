"""Each identity's key pair in the keys dir: where it lives, how it is made and loaded."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jose import jwk
from jose.backends.base import Key
from jose.exceptions import JOSEError

from pagi import IDENTITIES
from pagi.auth.claims import (
    ALGORITHM,
)


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


def load_key(pem: bytes, what: str) -> Key:
    """An ES256 key object from PEM (``ValueError`` naming `what` if it is not one)."""
    try:
        return jwk.construct(pem, ALGORITHM)
    except JOSEError as exc:
        raise ValueError(f"{what}: not an ES256 key ({exc})") from exc
