"""Hypothesis strategies for hostile HTTP requests, and how to judge the answers."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx
from hypothesis import strategies as st

from pagi.http import TIMEOUT_HEADER
from pagi.request_id import accept_request_id
from testing.live import json_error_problem

# What an HTTP/1.1 client may put in a header value (h11 refuses the rest
# before it leaves the client; raw-socket tests cover those bytes).
HEADER_CHARACTERS = st.characters(
    codec="latin-1", exclude_characters="\x7f", exclude_categories=("Cc",)
)

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

CONTENT_TYPES = (
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=utf-16",
    "application/json; charset=nonsense",
    "application/vnd.api+json",
    "text/plain",
    "text/html",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "multipart/form-data",
    "application/octet-stream",
    "application/xml",
    "*/*",
    "",
    ";;;",
    "application/json; boundary=" + "b" * 2000,
)

# Text that tends to break parsers, loggers and terminals: controls, bidi
# overrides, combining marks, non-characters, astral planes, NUL.
ODD_TEXT = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(
            ["\x00", "\u202e", "\u0301", "\ufeff", "\uffff", "\U0010ffff", "\x1b", "\u2028"]
        ),
    ),
    max_size=64,
)

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    ODD_TEXT,
)

JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(ODD_TEXT, inner, max_size=5),
    max_leaves=25,
)


def _nested(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    if kind == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b"[" * depth  # unterminated


DEEP_BODIES = st.builds(
    _nested,
    st.one_of(st.integers(min_value=20, max_value=3000), st.sampled_from([10_000, 200_000])),
    st.sampled_from(["list", "object", "open"]),
)

LITERAL_BODIES = st.sampled_from(
    [
        b"",
        b"null",
        b"[]",
        b"{}",
        b'"string"',
        b"NaN",
        b'{"x": NaN, "y": Infinity, "z": -Infinity}',
        b"1" * 5000,
        b'{"a": ' + b"9" * 5000 + b"}",
        b"\xef\xbb\xbf{}",
        b"\xff\xfe{\x00}\x00",
        b'{"a": "\\ud800"}',
        b'{"a": 1, "a": 2}',
        b'{"a": "\x00"}',
        b"{'single': 'quotes'}",
        b"\x00" * 64,
        b"\r\n\r\n",
    ]
)


def _json_bytes(value: Any, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def shaped_bodies(fields: list[str]) -> st.SearchStrategy[bytes]:
    """JSON objects using the endpoint's own field names with values of any type."""
    keys = st.sampled_from(fields) if fields else ODD_TEXT
    objects = st.dictionaries(st.one_of(keys, ODD_TEXT), JSON_VALUES, max_size=6)
    return st.builds(_json_bytes, objects, st.booleans())


def huge_bodies(fields: list[str]) -> st.SearchStrategy[bytes]:
    """A field holding a very long string, around and above common limits."""
    name = st.sampled_from(fields) if fields else st.just("x")
    size = st.sampled_from([10_000, 100_000, 700_000, 1_100_000, 3_000_000])
    return st.builds(lambda key, n: json.dumps({key: "A" * n}).encode(), name, size)


@dataclass(frozen=True)
class Route:
    """One operation of a service's HTTP API."""

    method: str
    path: str
    body_fields: list[str] = field(default_factory=list)
    query_params: list[str] = field(default_factory=list)


@dataclass
class HostileRequest:
    """One request as sent, kept whole for the failure report."""

    method: str
    path: str
    headers: dict[str, str]
    """Values are latin-1 text, sent as bytes."""
    body: bytes | None
    params: dict[str, str]

    def reproducer(self, base_url: str) -> str:
        """A curl command line that sends the same request."""
        parts = [f"curl -sS -X {self.method} '{base_url}{self.path}'"]
        parts += [f"-H {json.dumps(f'{k}: {v}')}" for k, v in self.headers.items()]
        if self.params:
            parts.append(
                "-G "
                + " ".join(
                    f"--data-urlencode {json.dumps(f'{k}={v}')}" for k, v in self.params.items()
                )
            )
        if self.body is not None:
            shown = self.body[:300]
            more = f" (+{len(self.body) - 300} bytes)" if len(self.body) > 300 else ""
            parts.append(f"--data-binary {shown!r}{more}")
        return " ".join(parts)


def hostile_requests(
    routes: list[Route], tokens: st.SearchStrategy[str | None]
) -> st.SearchStrategy[HostileRequest]:
    """Requests aimed at the service's own routes, with everything else hostile."""

    @st.composite
    def build(draw: st.DrawFn) -> HostileRequest:
        route = draw(st.sampled_from(routes))
        # Mostly the route itself, so that bodies and headers reach its handler.
        if draw(st.integers(min_value=0, max_value=9)) < 8:
            method, path = route.method, route.path
        else:
            method = draw(st.sampled_from(METHODS))
            path = draw(
                st.one_of(
                    st.just(route.path + "/"),
                    st.just(route.path.upper()),
                    st.from_regex(r"/[A-Za-z0-9_%.\-/]{0,60}", fullmatch=True),
                    st.from_regex(r"[a-z%0-9./]{1,20}", fullmatch=True).map(
                        lambda suffix: f"{route.path}/{suffix}"
                    ),
                )
            )
        headers: dict[str, str] = {}
        token = draw(tokens)
        if token is not None:
            headers["Authorization"] = token
        request_id = draw(
            st.one_of(
                st.none(),
                st.from_regex(r"[A-Za-z0-9._:\-]{1,128}", fullmatch=True),
                st.text(alphabet=HEADER_CHARACTERS, max_size=300),
                st.text(alphabet="a", min_size=129, max_size=9000),
            )
        )
        if request_id is not None:
            headers["X-Request-Id"] = request_id.strip() or "x"
        # The caller's time budget, which the agent honours: any value at all.
        budget = draw(
            st.one_of(
                st.none(),
                st.none(),
                st.integers(min_value=-(2**70), max_value=2**70).map(str),
                st.sampled_from(["0", "1", "-1", "1e3", "NaN", "inf", "", " 5", "0x10", "9" * 400]),
                st.text(alphabet=HEADER_CHARACTERS, max_size=30),
            )
        )
        if budget is not None:
            headers[TIMEOUT_HEADER] = budget.strip() or "0"
        body = draw(
            st.one_of(
                st.none(),
                shaped_bodies(route.body_fields),
                shaped_bodies(route.body_fields),
                st.builds(_json_bytes, JSON_VALUES, st.booleans()),
                st.binary(max_size=512),
                DEEP_BODIES,
                LITERAL_BODIES,
                huge_bodies(route.body_fields),
            )
        )
        if body is not None or draw(st.booleans()):
            headers["Content-Type"] = draw(st.sampled_from(CONTENT_TYPES))
        params: dict[str, str] = {}
        if route.query_params or draw(st.booleans()):
            names = st.sampled_from(route.query_params) if route.query_params else ODD_TEXT
            params = draw(
                st.dictionaries(
                    st.one_of(names, st.text(max_size=8)),
                    st.one_of(
                        st.integers(min_value=-(2**70), max_value=2**70).map(str),
                        st.text(max_size=40),
                        st.sampled_from(["", "NaN", "1e309", "0x10", "-0", " 1", "a" * 5000]),
                    ),
                    max_size=3,
                )
            )
            params = {k.replace("\x00", ""): v.replace("\x00", "") for k, v in params.items()}
        return HostileRequest(method, path, headers, body, params)

    return build()


def send(client: httpx.Client, request: HostileRequest) -> httpx.Response:
    """Send a hostile request exactly as built."""
    return client.request(
        request.method,
        request.path,
        headers={k: v.encode("latin-1") for k, v in request.headers.items()},
        content=request.body,
        params=request.params or None,
    )


def answer_problem(request: HostileRequest, response: httpx.Response) -> str | None:
    """Why the answer to ``request`` breaks PAGI's rules, or None."""
    if request.method != "HEAD":
        problem = json_error_problem(response)
        if problem is not None:
            return problem
    echoed = response.headers.get("x-request-id")
    if echoed is None:
        return "no X-Request-Id on the response"
    sent = request.headers.get("X-Request-Id")
    if sent is not None and accept_request_id(sent) == sent and echoed != sent:
        return f"X-Request-Id {sent!r} came back as {echoed!r}"
    if accept_request_id(echoed) != echoed:
        return f"echoed X-Request-Id is not well-formed: {echoed!r}"
    return None


def routes_from_openapi(schema: dict[str, Any]) -> list[Route]:
    """Every operation in a service's OpenAPI document, with body field and query names."""
    routes = []
    components = schema.get("components", {}).get("schemas", {})
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if method.upper() not in {"GET", "POST", "PUT", "PATCH", "DELETE"}:
                continue
            fields: list[str] = []
            content = operation.get("requestBody", {}).get("content", {})
            body_schema = content.get("application/json", {}).get("schema", {})
            ref = body_schema.get("$ref", "")
            if ref:
                body_schema = components.get(ref.rsplit("/", 1)[-1], {})
            fields = list(body_schema.get("properties", {}))
            query = [p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"]
            routes.append(Route(method.upper(), path, fields, query))
    return routes
