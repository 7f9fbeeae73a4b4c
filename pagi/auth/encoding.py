"""A JWT's compact form: canonical base64url segments and the one accepted ES256 signature."""

from __future__ import annotations

import base64
import json
from typing import Any

_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def is_canonical_b64url(segment: str) -> bool:
    """Whether `segment` is base64url as a JWT writes it: no padding, one spelling only."""
    if not set(segment) <= _B64URL or len(segment) % 4 == 1:
        return False
    return b64encode(b64decode(segment)) == segment


# The order of the P-256 group: (r, s) and (r, n - s) are both valid ECDSA
# signatures of the same message. PAGI signs with the low s and accepts only
# that one, so a token has exactly one accepted spelling.
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
SIGNATURE_BYTES = 64


def b64encode(data: bytes) -> str:
    """`data` as an unpadded base64url segment."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(segment: str) -> bytes:
    """The bytes of an unpadded base64url segment."""
    return base64.urlsafe_b64decode((segment + "=" * (-len(segment) % 4)).encode("ascii"))


def high_s(signature: bytes) -> bool:
    """Whether an ES256 signature (r || s) has the high one of its two s values."""
    return int.from_bytes(signature[32:], "big") > _P256_ORDER // 2


def with_low_s(token: str) -> str:
    """`token` with its signature in the low-s form, the only one PAGI accepts."""
    head, body, signature_b64 = token.split(".")
    signature = b64decode(signature_b64)
    if not high_s(signature):
        return token
    s = _P256_ORDER - int.from_bytes(signature[32:], "big")
    low = signature[:32] + s.to_bytes(32, "big")
    return f"{head}.{body}.{b64encode(low)}"


def b64json(segment: str) -> Any:
    """The JSON value of an unpadded base64url segment."""
    return json.loads(b64decode(segment))
