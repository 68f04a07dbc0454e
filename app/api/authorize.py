"""Thin controllers for decisions: `POST /v1/authorize` (the decision as JSON) and forward-auth (the decision
as a status, for nginx `auth_request`, Traefik `forwardAuth`, Caddy `forward_auth` and Envoy `ext_authz`)."""

from __future__ import annotations

import re

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post, route
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody
from msgspec import Meta

from app import examples
from app.api import json_response, strict_body
from app.authorize import Decision, OriginalRequest, authorize
from app.authorizers import AUTHORIZER_ID, Authorizer, AuthorizerDoc, Authorizers
from app.config import METHOD, METHOD_TOKEN
from app.observability import observe_decision
from app.paths import percent_encode_non_ascii
from app.policy import PolicyError, Problem
from app.problems import ApiError, policy_errors, request_invalid

AuthorizerId = Annotated[str, Meta(max_length=128)]  # any text names one or none (404 with the known ids)
# A request's header lines (each value of a list is one): every header or query condition of every rule reads
# them, so a few header names with thousands of values each cost rules x values (found by a review: 2 s for 60 KB).
MAX_HEADER_VALUES = 256
PREFIX = "/v1/forward-auth/"
OTHER_METHODS = ["HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# Forward-auth accepts any method (Envoy sends the original one). A method Litestar cannot route (PROPFIND, TRACE...)
# that the fast path hands on reaches the GET handler with its own method kept here, in the ASGI scope.
ORIGINAL_METHOD = "jwt_decision.original_method"


class RequestDoc(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The request to authorize: its method, target (path and query as sent) and headers (256 values in all, a
    list's values each counting; a target with more than 1,024 query parameters is denied `invalid_request`)."""

    method: Annotated[str, Meta(pattern=METHOD)]
    path: Annotated[str, Meta(min_length=1, max_length=1 << 20)]
    headers: Annotated[dict[str, str | list[str]], Meta(max_length=256)] = {}


class AuthorizeRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An authorizer (id, or an inline authorizer for testing rules), the request, and optionally the token."""

    authorizer: AuthorizerId | AuthorizerDoc
    request: RequestDoc
    token: str | None = None
    explain: bool = False


class ForwardAuthBody(msgspec.Struct):
    decision: str
    reason: str
    rule: str | None


def _authorizer(authorizers: Authorizers, authorizer_id: str) -> Authorizer:
    authorizer = authorizers.get(authorizer_id)
    if authorizer is None:
        named = repr(authorizer_id) if AUTHORIZER_ID.match(authorizer_id) else "by that id"
        raise ApiError(404, "AUTHORIZER_NOT_FOUND", "Authorizer not found",  # never echo what no id is
                       f"No authorizer {named} is configured.", known=authorizers.ids())
    return authorizer


class AuthorizeController(Controller):
    path = "/v1"
    tags = ["authorization"]

    @post("/authorize", operation_id="authorize", summary="Decide whether a request is allowed",
          description=examples.AUTHORIZE_DESCRIPTION, status_code=200, responses=examples.responses("authorize"),
          before_request=strict_body(AuthorizeRequest))
    async def authorize(self, authorizers: NamedDependency[Authorizers], data: JSONBody[AuthorizeRequest]
                        ) -> Response[Decision]:
        return json_response(await decide(authorizers, data))


async def decide(authorizers: Authorizers, data: AuthorizeRequest) -> Decision:
    """The route's work (also called by `app.api.fastpath`). Raises ApiError for a request it cannot answer."""
    if isinstance(data.authorizer, str):
        authorizer = _authorizer(authorizers, data.authorizer)
    else:
        try:
            authorizer = authorizers.inline(data.authorizer)
        except PolicyError as exc:
            errors = policy_errors(exc, ("body", "authorizer"))
            raise ApiError(422, "POLICY_INVALID", "Invalid authorizer",
                           f"The authorizer is inconsistent: {errors[0].msg} (at "
                           f"{'.'.join(map(str, errors[0].loc))}).", errors=errors) from None
    headers = tuple((name.lower(), value) for name, values in data.request.headers.items()
                    for value in ([values] if isinstance(values, str) else values))
    if len(headers) > MAX_HEADER_VALUES:  # each condition of each rule reads them (found by a review: 2 s)
        raise request_invalid([Problem(("body", "request", "headers"), f"{len(headers)} header values; at most "
                                       f"{MAX_HEADER_VALUES} in all (names and their lists of values)")])
    original = OriginalRequest(data.request.method, data.request.path, headers)
    budgets = authorizers.budgets if isinstance(data.authorizer, str) else authorizers.inline_budgets
    current = _Following(authorizers, authorizer) if isinstance(data.authorizer, str) else None
    decision = await authorize(authorizer, original, verifier=authorizers.verifier, budgets=budgets,
                               token=data.token, explain=data.explain, current=current)
    observe_decision(decision)
    return decision


_METHOD_NAMES = ("x-forwarded-method", "x-original-method")
_URI_NAMES = ("x-forwarded-uri", "x-original-uri")
# A method is an RFC 9110 token (VERSION-CONTROL, UPDATEREDIRECTREF): `DELETE,GET` (a proxy that appends joins a
# client's header to its own with a comma) named no method and skipped a deny on DELETE (found by a review).
_METHOD = re.compile(METHOD_TOKEN)


def _single(found: list[tuple[str, str, bytes]]) -> tuple[str, bytes] | None:
    """The one value of a header that two names spell (X-Forwarded-* and X-Original-*), as text and raw bytes.
    Ambiguity is refused (ValueError): a header repeated, or both spellings with different values. A proxy that
    sets only one spelling passes the client's other one through, so preferring either could decide on a value
    the client chose."""
    if not found:
        return None
    if len(found) > 1 and (len({name for name, _, _ in found}) < len(found) or len({raw for _, _, raw in found}) > 1):
        raise ValueError(found[0][0])
    return found[0][1], found[0][2]


def original_request(scope: Any, authorizer_id: str) -> OriginalRequest:
    """Rebuild the request being authorized from the proxy's headers, else from the path after the authorizer
    segment (Envoy ext_authz `path_prefix`) with the query string. Uses the raw path: never a decoded one.

    Header values are read as UTF-8 when they are (what clients and proxies send), else Latin-1, so a variable
    read from one compares with the same value sent to /v1/authorize as JSON text. One pass over the headers:
    this runs for every forward-auth request."""
    headers: list[tuple[str, str]] = []
    methods: list[tuple[str, str, bytes]] = []
    uris: list[tuple[str, str, bytes]] = []
    for raw_name, value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            text = value.decode("latin-1")
        headers.append((name, text))
        if name in _METHOD_NAMES:
            methods.append((name, text, value))
        elif name in _URI_NAMES:
            uris.append((name, text, value))
    own = scope.get(ORIGINAL_METHOD)
    if own is None:  # (an empty method kept by the fast path is decided as empty, not as GET: found by a review)
        own = scope["method"]
    try:
        method_found, target = _single(methods), _single(uris)
    except ValueError:
        return OriginalRequest(own, "", tuple(headers))  # an empty target is rejected as path_rejected
    if method_found and method_found[0] and not _METHOD.fullmatch(method_found[0]):
        return OriginalRequest(own, "", tuple(headers))  # refused as path_rejected, as an ambiguous header is
    method = method_found[0] if method_found and method_found[0] else own  # an empty header: as if absent
    if target is not None:  # its raw bytes: the text may have been read as UTF-8
        raw = target[1]
    else:
        path = scope.get("raw_path") or scope["path"].encode()
        root = (scope.get("root_path") or "").encode()
        if root and path.startswith(root):  # raw_path holds the root path (the router reads the path after it)
            path = path[len(root):]
        segment, slash, rest = path.partition(b"?")[0][len(PREFIX):].partition(b"/")
        if segment != authorizer_id.encode():
            return OriginalRequest(method, "", tuple(headers))
        query = scope.get("query_string", b"")
        raw = b"/" + rest + (b"?" + query if query else b"")
    # Bytes above 0x7F (nginx passes them through) as the %XX escapes they stand for: `/caf\xc3\xa9` is the path
    # `/caf%C3%A9` that /v1/authorize sees for `/café`.
    return OriginalRequest(method, percent_encode_non_ascii(raw.decode("latin-1"), "latin-1"), tuple(headers))


def _latin1(value: str) -> str:
    # ASGI header values are bytes: send UTF-8 (what proxies pass through) instead of failing on non-Latin-1. ASCII
    # reads the same either way (and is what nearly every header holds: its round trip cost ~0.5 µs a decision).
    return value if value.isascii() else value.encode("utf-8").decode("latin-1")


ENVOY_HEADERS_TO_REMOVE = "X-Envoy-Auth-Headers-To-Remove"


def forward_answer(decision: Decision, authorizer: Authorizer) -> tuple[int, dict[str, str], ForwardAuthBody]:
    """A decision as forward-auth answers it: status, headers (claims on allow, the challenge, rate limits)
    and the small body."""
    headers: dict[str, str] = {}
    if decision.allowed:
        headers.update({name: _latin1(value) for name, value in decision.headers.items()})
        left_out = [header.lower() for _, _, header in authorizer.claims_to_headers if header not in decision.headers]
        if left_out:
            # Envoy's ext_authz sets only the allowed_upstream_headers an answer has, so a client's own X-User-Id
            # reached the upstream when the token lacked `sub` (found by a review); it removes those named here.
            headers[ENVOY_HEADERS_TO_REMOVE] = ", ".join(left_out)
        headers["Cache-Control"] = f"private, max-age={decision.cache_ttl}" if decision.cache_ttl else "no-store"
    else:
        headers["Cache-Control"] = "no-store"
    if decision.www_authenticate:  # a scope named by a rule may be any text
        headers["WWW-Authenticate"] = _latin1(decision.www_authenticate)
    if decision.rate_limit is not None:
        headers.update(decision.rate_limit.headers())
    return decision.status, headers, ForwardAuthBody(decision.decision, decision.reason,
                                                     decision.rule.id if decision.rule else None)


class _Following:
    """`current` for `authorize`: the configured authorizer of an id now, and the last one it gave, which a decision
    taken again across a reload was taken on (its answer lists that one's `claims_to_headers`: the old one's let a
    client's own copy of a header added by the reload through Envoy; found by a review)."""

    def __init__(self, authorizers: Authorizers, authorizer: Authorizer) -> None:
        self.authorizers, self.last = authorizers, authorizer

    def __call__(self) -> Authorizer | None:
        latest = self.authorizers.get(self.last.id)
        if latest is not None:
            self.last = latest
        return latest


async def forward(authorizers: Authorizers, authorizer_id: str, scope: Any
                  ) -> tuple[int, dict[str, str], ForwardAuthBody]:
    """The forward-auth routes' work (also called by `app.api.fastpath`): the decision, answered as
    `forward_answer` says. Raises ApiError for an unknown authorizer."""
    following = _Following(authorizers, _authorizer(authorizers, authorizer_id))
    decision = await authorize(following.last, original_request(scope, authorizer_id), verifier=authorizers.verifier,
                               budgets=authorizers.budgets, current=following)
    observe_decision(decision)
    return forward_answer(decision, following.last)


async def _forward(request: Request[Any, Any, Any], authorizers: Authorizers, authorizer_id: str
                   ) -> Response[ForwardAuthBody]:
    status, headers, body = await forward(authorizers, authorizer_id, request.scope)
    return json_response(body, status, headers)


class ForwardAuthController(Controller):
    path = "/v1/forward-auth"
    tags = ["authorization"]

    # Envoy ext_authz calls with the original method, so every method gets the decision. Litestar registers a
    # controller's handlers in name order and gives a path whose first handler lacks OPTIONS its own OPTIONS
    # handler (a 204 that Envoy would read as "allowed"): this handler's name must sort first.
    @route(["/{authorizer:str}", "/{authorizer:str}/{path:path}"], http_method=OTHER_METHODS,
           include_in_schema=False)
    async def any_method(self, request: Request[Any, Any, Any],
                         authorizers: NamedDependency[Authorizers], authorizer: FromPath[str]
                         ) -> Response[ForwardAuthBody]:
        return await _forward(request, authorizers, authorizer)

    @get("/{authorizer:str}", operation_id="forwardAuth", summary="Forward-auth decision for a proxy",
         description=examples.FORWARD_AUTH_DESCRIPTION, responses=examples.forward_auth_responses())
    async def forward_auth(self, request: Request[Any, Any, Any],
                           authorizers: NamedDependency[Authorizers], authorizer: FromPath[str]
                           ) -> Response[ForwardAuthBody]:
        return await _forward(request, authorizers, authorizer)

    @get("/{authorizer:str}/{path:path}", operation_id="forwardAuthPath",
         summary="Forward-auth decision, original path in the URL (Envoy ext_authz path_prefix)",
         description=examples.FORWARD_AUTH_PATH_DESCRIPTION, responses=examples.forward_auth_responses())
    async def forward_auth_path(self, request: Request[Any, Any, Any],
                                authorizers: NamedDependency[Authorizers], authorizer: FromPath[str],
                                path: FromPath[str]) -> Response[ForwardAuthBody]:
        return await _forward(request, authorizers, authorizer)


def dependencies(authorizers: Authorizers) -> dict[str, Provide]:
    return {"authorizers": Provide(lambda: authorizers, sync_to_thread=False, use_cache=True)}
