"""Where a request asks to go: a CONNECT's ``host:port``, or an absolute-form ``http://`` URL.

Anything else (an origin-form path, an ``https://`` URL, user info in the
URL, a malformed host or port) is refused before any rule is consulted.
"""

from __future__ import annotations

import re

from sandbox.egress.ledger import Ruling
from sandbox.egress.refusal import Refusal
from sandbox.egress.rules import Target, TargetError, parse_target, split_host_port

_ABSOLUTE_HTTP = re.compile(rb"http://([^/?#]*)([/?][^#]*)?", re.IGNORECASE)


def _invalid(what: str, error: Exception) -> Refusal:
    return Refusal(Ruling("refused", "invalid_target", f"{what}: {error}"))


def _unsupported(detail: str) -> Refusal:
    return Refusal(Ruling("refused", "unsupported_request", detail))


def connect_target(raw: bytes) -> Target:
    """The destination of ``CONNECT host:port`` (authority form; the port is required)."""
    try:
        text = raw.decode("ascii")
        host, port = split_host_port(text)
        if port is None:
            raise ValueError("CONNECT needs host:port")
        return parse_target(host, port)
    except (UnicodeDecodeError, ValueError, TargetError) as exc:
        raise _invalid("CONNECT target", exc) from None


def http_target(raw: bytes) -> tuple[Target, bytes]:
    """(destination, origin-form path) of an absolute-form ``http://`` request target."""
    match = _ABSOLUTE_HTTP.fullmatch(raw)
    if match is None:
        if raw.lower().startswith(b"https://"):
            raise _unsupported("HTTPS goes through CONNECT (the proxy does not open TLS for you)")
        if raw.startswith(b"/"):
            raise _unsupported("not a proxy request: send an absolute http:// URL, or CONNECT")
        raise _unsupported("only http:// URLs and CONNECT")
    authority, path = match.group(1), match.group(2) or b"/"
    if path.startswith(b"?"):
        path = b"/" + path
    try:
        text = authority.decode("ascii")
        if "@" in text:
            raise ValueError("user info in the URL")
        host, port = split_host_port(text)
        return parse_target(host, port or 80), path
    except (UnicodeDecodeError, ValueError, TargetError) as exc:
        raise _invalid("request target", exc) from None
