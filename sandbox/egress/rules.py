"""Egress rules: the hosts and ports a tool may reach, parsed and matched as pure code.

A rule is a string of ``[tools.NAME.network]`` ``allow`` or ``deny``:

=====================  ==========================================================
``example.com``        that host only
``*.example.com``      any strict subdomain (``a.example.com``, ``a.b.example.com``),
                       never ``example.com`` itself
``93.184.216.34``      that IPv4 address, when a request names it (a name that
                       resolves to it is not a match)
``[2001:db8::1]``      that IPv6 address, likewise; IPv6 is always in brackets
``RULE:PORT``          that port only
=====================  ==========================================================

Without a port an allow rule covers ports 80 and 443, a deny rule every
port. Deny rules are checked first. Names are compared in one canonical
form: IDNA (UTS #46) A-labels, lower case, no trailing dot; addresses in
their compressed form. A rule never matches more than its text says: a
name rule never matches an address, an address rule never matches a name,
and a wildcard never matches the domain it hangs from.

Refused as errors: a bare ``*``, a wildcard anywhere but a whole first
label, a wildcard over a public suffix (``*.com``, ``*.co.uk``,
``*.github.io``: anyone can register a name there), a port out of 1-65535,
an IPv4 address in any form but ``a.b.c.d``, zone ids, user info, spaces.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from functools import cache
from ipaddress import IPv4Address, IPv6Address
from typing import Literal

import idna
from publicsuffixlist import PublicSuffixList

from sandbox.egress.addresses import IPAddress

DEFAULT_ALLOW_PORTS = frozenset({80, 443})
"""Ports an allow rule without ``:PORT`` covers."""

RuleKind = Literal["name", "wildcard", "address"]
RefusalReason = Literal["denied", "host_not_allowed", "port_not_allowed"]

_PORT = re.compile(r"[1-9][0-9]{0,4}")
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
MAX_RULE_LENGTH = 260


class RuleError(ValueError):
    """A rule's text is not a valid rule; the message says why, for the policy error."""


class TargetError(ValueError):
    """A request's destination is not a host the proxy will consider."""


@cache
def _public_suffixes() -> PublicSuffixList:
    # The list shipped inside the package, pinned by the lock: never fetched.
    return PublicSuffixList()


def canonical_name(text: str) -> str:
    """The comparable form of a host name: IDNA A-labels, lower case, no trailing dot.

    Raises :class:`ValueError` (with a reason) when ``text`` is not a host name.
    """
    if not text or len(text) > MAX_RULE_LENGTH:
        raise ValueError("a host name is 1 to 253 characters")
    name = text[:-1] if text.endswith(".") else text
    if not name:
        raise ValueError("empty host name")
    if name.isascii():
        name = name.lower()
    else:
        try:
            name = idna.encode(name, uts46=True, transitional=False).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise ValueError(f"not a valid internationalised host name ({exc})") from None
        if name.endswith("."):
            # A full-width or ideographic full stop at the end, mapped to '.' by UTS #46.
            name = name[:-1]
    if len(name) > 253:
        raise ValueError("a host name is at most 253 characters")
    labels = name.split(".")
    for label in labels:
        if not _LDH_LABEL.fullmatch(label):
            raise ValueError(
                f"label {label!r}: a host name is letters, digits and '-' in labels of"
                " 1 to 63 characters (no '_', no '-' at either end)"
            )
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except (idna.IDNAError, UnicodeError):
                raise ValueError(f"label {label!r} is not a valid IDNA A-label") from None
    if labels[-1].isdigit():
        raise ValueError("the last label of a host name is never all digits (an IPv4 address?)")
    try:
        socket.inet_aton(name)
    except OSError:
        pass
    else:
        raise ValueError("an IPv4 address is written as four decimal numbers, a.b.c.d")
    return name


def _parse_address(text: str) -> IPAddress | None:
    """An IP literal (``a.b.c.d`` or ``[v6]``), None when ``text`` is not one."""
    if text.startswith("["):
        if not text.endswith("]"):
            raise ValueError("an IPv6 address is written in brackets: [2001:db8::1]")
        inner = text[1:-1]
        if "%" in inner:
            raise ValueError("an IPv6 zone id (%...) is not allowed")
        try:
            return IPv6Address(inner)
        except ValueError:
            raise ValueError(f"{inner!r} is not an IPv6 address") from None
    if re.fullmatch(r"[0-9.]+", text):
        try:
            return IPv4Address(text)
        except ValueError:
            # Digits and dots that are not a.b.c.d: octal, short or out of range.
            raise ValueError(
                f"{text!r} is not an IPv4 address (written as four decimal numbers, a.b.c.d)"
            ) from None
    if ":" in text:
        raise ValueError("an IPv6 address is written in brackets: [2001:db8::1]")
    return None


def split_host_port(text: str) -> tuple[str, int | None]:
    """``host:port`` -> (host, port); ``[v6]:port`` keeps the brackets; no port -> None."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError("an IPv6 address is written in brackets: [2001:db8::1]")
        host, rest = text[: end + 1], text[end + 1 :]
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise ValueError(f"unexpected {rest!r} after the address")
        return host, parse_port(rest[1:])
    if text.count(":") > 1:
        raise ValueError("an IPv6 address is written in brackets: [2001:db8::1]:443")
    if ":" in text:
        host, port = text.split(":")
        return host, parse_port(port)
    return text, None


def parse_port(text: str) -> int:
    """A port number 1-65535 in plain decimal."""
    if not _PORT.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise ValueError(f"port {text!r} is not a number from 1 to 65535")
    return int(text)


@dataclass(frozen=True)
class Target:
    """Where a request wants to go, in canonical form."""

    host: str
    """A canonical name, or the address's text (IPv6 without brackets)."""
    port: int
    address: IPAddress | None = None
    """Set when the request named an IP address instead of a name."""

    @property
    def authority(self) -> str:
        """``host:port`` as it appears in a request (IPv6 in brackets)."""
        host = f"[{self.host}]" if isinstance(self.address, IPv6Address) else self.host
        return f"{host}:{self.port}"


def parse_target(host: str, port: int) -> Target:
    """The canonical :class:`Target` for a request's host text and port, or :class:`TargetError`."""
    if not 1 <= port <= 65535:
        raise TargetError(f"port {port} is out of range")
    if not host or len(host) > MAX_RULE_LENGTH or any(c.isspace() for c in host):
        raise TargetError("not a host name")
    try:
        address = _parse_address(host)
        if address is not None:
            return Target(host=str(address), port=port, address=address)
        return Target(host=canonical_name(host), port=port)
    except ValueError as exc:
        raise TargetError(str(exc)) from None


@dataclass(frozen=True)
class Rule:
    """One parsed allow or deny rule."""

    text: str
    """As the operator wrote it (what denials and audit records name)."""
    kind: RuleKind
    host: str
    """Canonical name; for a wildcard, the domain it hangs from; for an address, its text."""
    ports: frozenset[int] | None
    """The ports covered; None means every port (a deny rule without a port)."""
    address: IPAddress | None = None

    def matches_host(self, target: Target) -> bool:
        """Whether the rule names ``target``'s host (whatever the port)."""
        if self.kind == "address":
            return target.address is not None and target.address == self.address
        if target.address is not None:
            return False
        if self.kind == "name":
            return target.host == self.host
        return target.host.endswith("." + self.host)

    def matches(self, target: Target) -> bool:
        """Whether the rule covers ``target``, host and port."""
        return self.matches_host(target) and (self.ports is None or target.port in self.ports)


def parse_rule(text: str, *, deny: bool = False) -> Rule:
    """Parse one allow (or, with ``deny``, deny) rule; :class:`RuleError` says what is wrong."""
    if not isinstance(text, str) or not text:
        raise RuleError("a rule is a non-empty string")
    if len(text) > MAX_RULE_LENGTH:
        raise RuleError(f"a rule is at most {MAX_RULE_LENGTH} characters")
    if any(c.isspace() for c in text):
        raise RuleError(f"{text!r}: a rule contains no spaces")
    if "/" in text or "@" in text or "?" in text or "#" in text:
        raise RuleError(f"{text!r}: a rule is a host with an optional :port, not a URL")
    try:
        host_text, port = split_host_port(text)
        if host_text in ("*", "*."):
            raise RuleError(
                f"{text!r}: a bare '*' would reach every host; name the hosts (or *.domain)"
            )
        ports: frozenset[int] | None
        if port is not None:
            ports = frozenset({port})
        else:
            ports = None if deny else DEFAULT_ALLOW_PORTS
        if host_text.startswith("*."):
            parent = host_text[2:]
            if "*" in parent:
                raise ValueError("'*' is allowed only as the whole first label (*.example.com)")
            if _parse_address(parent) is not None:
                raise ValueError("a wildcard covers subdomains of a name, not of an address")
            domain = canonical_name(parent)
            if _public_suffixes().is_public(domain):
                raise ValueError(
                    f"*.{domain} covers a public suffix: anyone can register a name under"
                    f" {domain!r}; name a domain under it (*.example.{domain})"
                )
            return Rule(text=text, kind="wildcard", host=domain, ports=ports)
        if "*" in host_text:
            raise ValueError("'*' is allowed only as the whole first label (*.example.com)")
        address = _parse_address(host_text)
        if address is not None:
            return Rule(text=text, kind="address", host=str(address), ports=ports, address=address)
        return Rule(text=text, kind="name", host=canonical_name(host_text), ports=ports)
    except RuleError:
        raise
    except ValueError as exc:
        raise RuleError(f"{text!r}: {exc}") from None


@dataclass(frozen=True)
class Verdict:
    """What the rules say about one target."""

    allowed: bool
    reason: RefusalReason | None
    """Why it was refused; None when allowed."""
    rule: str | None
    """The text of the rule that decided (None when no rule matched at all)."""


@dataclass(frozen=True)
class RuleSet:
    """A tool's allow and deny rules."""

    allow: tuple[Rule, ...] = ()
    deny: tuple[Rule, ...] = ()

    @classmethod
    def parse(cls, allow: tuple[str, ...], deny: tuple[str, ...] = ()) -> RuleSet:
        """Parse both lists; the first bad rule raises :class:`RuleError`."""
        return cls(
            allow=tuple(parse_rule(text) for text in allow),
            deny=tuple(parse_rule(text, deny=True) for text in deny),
        )

    def decide(self, target: Target) -> Verdict:
        """Deny rules first, then the first allow rule that covers host and port."""
        for rule in self.deny:
            if rule.matches(target):
                return Verdict(allowed=False, reason="denied", rule=rule.text)
        wrong_port: Rule | None = None
        for rule in self.allow:
            if rule.matches_host(target):
                if rule.ports is None or target.port in rule.ports:
                    return Verdict(allowed=True, reason=None, rule=rule.text)
                wrong_port = wrong_port or rule
        if wrong_port is not None:
            return Verdict(allowed=False, reason="port_not_allowed", rule=wrong_port.text)
        return Verdict(allowed=False, reason="host_not_allowed", rule=None)
