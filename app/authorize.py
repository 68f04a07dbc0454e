"""The decision pipeline (authorization.md section 3), in its fixed order:

normalise the path -> extract the token -> validate it -> run the rules -> consume the rate limit -> allow.

Each stage can end the decision; the rate limit is consumed only by requests every earlier stage allowed, so
forged tokens cannot burn a tenant's budget. Validation (the key-set cache) and the rate-limit storage are the
only awaits; everything else is the pure rule engine. The decision is the same struct for `POST /v1/authorize`
and forward-auth, which turns it into a status and headers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Literal

import msgspec

from app import readings as upstream
from app.authorizers import Authorizer, TokenSource
from app.findings import Finding, Status
from app.paths import PathRejected, parse_query, path_spellings, split_target
from app.patterns import MISSING, json_text, resolve_pointer
from app.ratelimit import Budgets, RateLimitState
from app.rules import Facts, Verdict, evaluate
from app.token import WHITESPACE, holds_jwt
from app.validation import ValidationResult
from app.verifier import Verifier

Reason = Literal["path_rejected", "invalid_request", "token_missing", "token_invalid", "keys_unavailable",
                 "rule_denied", "default_deny", "rule_allowed", "default_allow", "rate_limited"]
# What a header value cannot carry as it is: a control character (a tab inside is fine), or white space at
# either end, which proxies and applications strip (RFC 9110 5.5).
_UNCARRIED = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]|^[ \t]|[ \t]\Z")
# What a list element cannot hold: the separator, and what starts or escapes a quoted-string (RFC 9110 5.6).
_LIST_SPECIALS = re.compile(r'[,"\\]')


@dataclass(frozen=True, slots=True)
class OriginalRequest:
    """The request being authorized: method, request target (path and query, as sent) and headers."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]  # names lower-cased; repeated headers repeat


class RuleRef(msgspec.Struct, frozen=True):
    id: str | None
    index: int
    effect: str
    priority: int
    notes: str | None


class ValidationSummary(msgspec.Struct, frozen=True):
    valid: bool
    statuses: dict[str, Status]
    findings: list[Finding]


class Decision(msgspec.Struct):
    """The answer of `POST /v1/authorize`."""

    allowed: bool
    decision: Literal["allow", "deny"]
    status: int  # what forward-auth answers
    reason: Reason
    authorizer: str
    rule: RuleRef | None = None
    variables: dict[str, str | list[str]] = {}
    validation: ValidationSummary | None = None
    headers: dict[str, str] = {}  # claims_to_headers, on allow only
    www_authenticate: str | None = None
    rate_limit: RateLimitState | None = None
    cache_ttl: int = 0
    trace: dict[str, Any] | None = None


def www_authenticate(realm: str, error: str | None = None, description: str | None = None,
                     scope: tuple[str, ...] = ()) -> str:
    """RFC 6750 section 3: a request without a token gets no error code; a bad token `invalid_token`; a token
    lacking privileges `insufficient_scope`, with the scope needed when known. Its values hold only what section 3
    allows (printable ASCII but `"` and `\\`; a scope is such tokens without spaces): a rule's scope or a token
    source's name may be any text, and one holding CR/LF made every deny it named a bare 500 from the server
    (found by a review). Another character is shown as `?`; scopes are named only when every one is a scope-token
    (the others alone would tell the client to get what is still not enough)."""
    params = [f'realm="{_NOT_NQSCHAR.sub("?", realm)}"']
    if error:
        params.append(f'error="{_NOT_NQSCHAR.sub("?", error)}"')
    if description:
        params.append(f'error_description="{_NOT_NQSCHAR.sub("?", description)}"')
    if scope and all(_SCOPE_TOKEN.fullmatch(item) for item in scope):
        params.append(f'scope="{" ".join(scope)}"')
    return "Bearer " + ", ".join(params)


_NOT_NQSCHAR = re.compile(r'[^\x20\x21\x23-\x5b\x5d-\x7e]')  # RFC 6750 section 3 (and RFC 6749 A.4, A.7)
_SCOPE_TOKEN = re.compile(r'[\x21\x23-\x5b\x5d-\x7e]+')  # RFC 6749 section 3.3


def _cookies(header: str) -> list[tuple[str, str]]:
    pairs = []
    for part in header.split(";"):
        name, sep, value = part.strip(WHITESPACE).partition("=")
        if sep:
            pairs.append((name.strip(WHITESPACE), value.strip(WHITESPACE).strip('"')))
    return pairs


def extract_tokens(sources: tuple[TokenSource, ...], headers: tuple[tuple[str, str], ...],
                   query: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    """Every token present, as (source label, token). RFC 6750 section 2: "Clients MUST NOT use more than one
    method to transmit the token in each request", so the caller refuses more than one. Only the white space
    validation ignores around a token is taken off (app.token.WHITESPACE): `str.strip()` also took NBSP, NEL and
    U+2028, so `Bearer <token>\u00a0` was decided on a token `/v1/validate/jwt` refuses as malformed."""
    found: list[tuple[str, str]] = []
    for source in sources:
        if source.kind == "header":
            prefix = source.prefix.lower()
            for name, value in headers:
                if name != source.name and ("_" not in name or name.replace("_", "-") != source.name):
                    continue  # (`X_Auth_Token` is `X-Auth-Token` to WSGI, PHP and Rails: see header_aliases)
                if value[:len(prefix)].lower() == prefix:
                    found.append((source.label, value[len(prefix):].strip(WHITESPACE)))
                elif prefix.strip() and value.strip(WHITESPACE).lower() == prefix.strip():
                    found.append((source.label, ""))  # the scheme alone: a token was meant but is empty
        elif source.kind == "query":  # under the names ASP.NET Core (any case), PHP, Rack and qs read too
            wanted = source.name.lower()
            found.extend((source.label, value) for name, value in query
                         if name == source.name or wanted in upstream.known_as(name))
        else:  # an empty cookie is none (`at=`, as logging out leaves it: found by a review)
            for name, value in headers:
                if name == "cookie":
                    found.extend((source.label, cookie) for key, cookie in _cookies(value)
                                 if key == source.name and cookie)
    return found


def header_value(value: Any) -> str | None:
    """Scalars as text, arrays joined by `,`, objects as JSON; None (the header left out) for a text a header
    cannot carry exactly: deleting its control characters, as this did, let `admin\\x00` or ` admin ` reach the
    upstream as `admin` (found by a review), and CR/LF would smuggle a header."""
    if value is None or value is MISSING:
        return None
    if isinstance(value, str):
        return _carried(value)
    if isinstance(value, list):
        # Upstreams split a list header on commas and trim each element (RFC 9110 5.6.1), and some unquote a
        # quoted-string: an element that is empty, padded (`[" admin"]` read as `admin`), or holds a comma, a
        # quote or a backslash (`["\"admin\""]` read as `admin`) would be read as something else.
        # A null in an array is no text to send (`[null]` sent `null`; found by a review). An empty array is an
        # empty header: it overrides a client's own where the proxy sets the header from this answer.
        if any(item is None for item in value):
            return None
        items = [item if isinstance(item, str) else json_text(item) for item in value]
        if any(not item or _LIST_SPECIALS.search(item) or _carried(item) is None for item in items):
            return None
        return ",".join(items)
    return _carried(json_text(value))


def _carried(text: str) -> str | None:
    if text.isprintable() and text.strip(" ") == text:
        return text  # the common case, without the regular expression
    return None if _UNCARRIED.search(text) else text


def claims_to_headers(authorizer: Authorizer, claims: dict[str, Any]) -> dict[str, str]:
    headers = {}
    for _, pointer, header in authorizer.claims_to_headers:
        value = header_value(claims.get(pointer[0], MISSING) if len(pointer) == 1 else resolve_pointer(claims, pointer))
        if value is not None:
            headers[header] = value
    return headers


def _trace(stage: str, request: OriginalRequest, path: str | None, detail: str | None = None,
           source: str | None = None, verdict: Verdict | None = None, token: str | None = None) -> dict[str, Any]:
    if path and (holds_jwt(path) or (token and token.strip(WHITESPACE) in path)):  # (found by reviews)
        path = "[redacted]"
    return {"stage": stage, "method": request.method, "path": path, "detail": detail, "token_source": source,
            "combining": "deny-overrides", "rules": verdict.trace if verdict is not None else []}


async def authorize(authorizer: Authorizer, request: OriginalRequest, *, verifier: Verifier, budgets: Budgets,
                    token: str | None = None, explain: bool = False,
                    current: Callable[[], Authorizer | None] | None = None,
                    validated: tuple[str, str, ValidationResult] | None = None) -> Decision:
    """Decide one request. `token`, when given, is used instead of the authorizer's token sources. `current`: the
    configured authorizer of this id now (see below); `validated`: (token, what it was validated against: the
    profile or the policy, result) of a validation this request already made, when it is decided again."""
    realm, given = authorizer.id, token

    def deny(reason: Reason, status: int, **fields: Any) -> Decision:
        return Decision(False, "deny", status, reason, realm, **fields)

    try:
        raw_path, query_text = split_target(request.target)
        path, dotted = path_spellings(raw_path)
    except PathRejected as exc:
        return deny("path_rejected", 400, trace=_trace("path", request, None, str(exc)) if explain else None)
    query = parse_query(query_text)
    # The query as parsers that split at `;` too read it (Rack 2, older Python and Java servlet parsers).
    split = parse_query(query_text.replace(";", "&")) if ";" in query_text else None
    if max(len(query), len(split or ())) > upstream.MAX_QUERY_PARAMETERS:
        detail = f"more than {upstream.MAX_QUERY_PARAMETERS} query parameters"
        return deny("invalid_request", 400, www_authenticate=www_authenticate(realm, "invalid_request", detail),
                    trace=_trace("path", request, path, detail) if explain else None)
    if ("%" in query_text or "+" in query_text) and (
            upstream.odd_names(query) or split is not None and upstream.odd_names(split)):
        return deny("path_rejected", 400, trace=_trace("path", request, None, "a query parameter's name has white "
                                                       "space at an end or a control character") if explain else None)

    source = "request.token"
    if token is None:
        found = extract_tokens(authorizer.sources, request.headers, query)
        if split is not None and any(item.kind == "query" for item in authorizer.sources):
            # Those parsers may find another token, or one more: the request is ambiguous (found by a review: an
            # upstream reading the query token itself took the last one).
            also = extract_tokens(authorizer.sources, request.headers, split)
            if also != found:  # either reading with more than one token, or a token in each but not the same one
                # (a token repeated in both readings had its copies merged: a refusal turned into an allow; found
                # by a review)
                merged = list(dict.fromkeys([*found, *also]))
                found = merged if len(merged) > 1 else max(found, also, key=len)
        if len(found) > 1:
            detail = "more than one token: " + ", ".join(label for label, _ in found)
            return deny("invalid_request", 400, www_authenticate=www_authenticate(realm, "invalid_request", detail),
                        trace=_trace("token", request, path, detail) if explain else None)
        source, token = found[0] if found else (None, None)  # type: ignore[assignment]
    if token is None and not authorizer.anonymous_rules:
        return deny("token_missing", 401, www_authenticate=www_authenticate(realm),
                    trace=_trace("token", request, path, "no token in " + ", ".join(
                        item.label for item in authorizer.sources)) if explain else None)

    claims: dict[str, Any] | None = None
    summary: ValidationSummary | None = None
    expires_in: int | None = None
    if token is not None:
        policy = authorizer.policy or verifier.profile(authorizer.profile_id or "")
        if policy is None:  # the profile was removed by a reload since this authorizer was loaded
            return deny("keys_unavailable", 401, www_authenticate=www_authenticate(
                realm, "invalid_token", "ISSUER_PROFILE_NOT_FOUND"),
                trace=_trace("validate", request, path, "issuer profile not configured", source, None, token)
                if explain else None)
        trusted = f"profile:{authorizer.profile_id}" if authorizer.profile_id else f"policy:{policy.fingerprint}"
        if validated is not None and validated[:2] == (token, trusted):
            result = validated[2]  # the same profile (the one in force) or policy: counted once in the metrics
        else:
            result = await verifier.validate(token, policy, authorizer.profile_id)
        latest = current() if current is not None else authorizer
        if latest is not authorizer:
            # A reload replaced the authorizer while its key set was awaited, and the validation followed the profile
            # now in force (Verifier.validate): the old rules with the new profile allowed a token that each
            # configuration denied (found by a review). The decision is taken again, wholly on the new one.
            if latest is not None:
                return await authorize(latest, request, verifier=verifier, budgets=budgets, token=given,
                                       explain=explain, current=current,
                                       validated=(token, trusted, result))
            return deny("keys_unavailable", 401, www_authenticate=www_authenticate(
                realm, "invalid_token", "the authorizer was removed by a reload"),
                trace=_trace("validate", request, path, "the authorizer was removed by a reload", source, None,
                             token) if explain else None)
        summary = ValidationSummary(result.valid, result.statuses, result.findings)
        if not result.valid:
            errors = [item.code for item in result.findings if item.severity == "error"]
            reason: Reason = "keys_unavailable" if set(errors) == {"JWKS_UNAVAILABLE"} else "token_invalid"
            return deny(reason, 401, validation=summary,
                        www_authenticate=www_authenticate(realm, "invalid_token", errors[0] if errors else None),
                        trace=_trace("validate", request, path, result.summary, source, None, token)
                        if explain else None)
        claims, expires_in = result.claims or {}, result.expires_in

    facts = Facts(request.method.upper(), path, request.headers, query, claims, (token, token.strip()) if token else ())
    verdict = evaluate(authorizer.rules, facts, authorizer.default_effect, explain=explain)
    read: str | None = None  # how the reading that denied differs from the request as sent
    if verdict.effect == "allow":
        # Upstreams read some requests another way, and an allow holds only when every reading is allowed: the
        # path with its dot segments as sent (app.paths.path_spellings), so `/admin/../x` gets past no deny on
        # /admin and no allow on /x lets it reach /admin's handler; the query split at `;` too, so `?a=1;debug=1`
        # gets past no deny on `debug`; names as frameworks read them (`debug[]`, `debug.x`, `X_Debug`), and a POST
        # as the method it overrides itself with (found by reviews).
        rules = authorizer.rules
        named = upstream.overrides(facts) if rules.reads_methods else []
        others = upstream.readings(facts, dotted, split, named[0] if named else None, rules) if (
            dotted is not None or split is not None or named or upstream.RESHAPED_RAW.search(query_text)
            or "_" in "".join([name for name, _ in facts.headers])) else []
        parameters = len(query) + sum(len(reading.query) for reading, _ in others) if rules.query_rules else 0
        if len(named) > 1 or parameters > upstream.READING_PARAMETERS:
            detail = ("the method is overridden more than once: " + ", ".join(named) if len(named) > 1 else
                      f"{len(others) + 1} readings of the request hold {parameters} query parameters in all (at "
                      f"most {upstream.READING_PARAMETERS})")
            return deny("invalid_request", 400, www_authenticate=www_authenticate(realm, "invalid_request", detail),
                        trace=_trace("path", request, path, detail) if explain else None)
        for reading, said in others:
            other = evaluate(rules, reading, authorizer.default_effect)
            if other.effect == "deny":  # traced only then: the readings that allow would trace in vain
                verdict = evaluate(rules, reading, authorizer.default_effect, explain=True) if explain else other
                path, read = reading.path, said
                break
    rule = verdict.rule
    common: dict[str, Any] = {
        "rule": RuleRef(rule.id, rule.index, rule.effect, rule.priority, rule.notes) if rule is not None else None,
        "variables": {name: list(value) if isinstance(value, tuple) else value
                      for name, value in verdict.variables.items()},
        "validation": summary,
        "trace": _trace("rules", request, path, read, source, verdict, token) if explain else None,
    }
    if verdict.effect == "deny":
        if token is None:  # anonymous and not allowed by a rule: authenticating is what would help (RFC 6750 3.1)
            return deny("token_missing", 401, www_authenticate=www_authenticate(realm), **common)
        return deny(verdict.reason, 403, www_authenticate=www_authenticate(realm, "insufficient_scope", None,
                                                                           verdict.missing_scopes), **common)

    state: RateLimitState | None = None
    if authorizer.rate_limit is not None:
        state = await budgets.hit(authorizer.budget, authorizer.rate_limit, claims)
        if state.limited:
            if common["trace"] is not None:
                common["trace"]["stage"] = "rate_limit"
            return deny("rate_limited", authorizer.rate_limit.status, rate_limit=state, **common)

    ttl = 0
    if state is None:
        ttl = authorizer.cache_seconds if expires_in is None else max(0, min(authorizer.cache_seconds, expires_in))
    return Decision(True, "allow", 200, verdict.reason, realm, headers=claims_to_headers(authorizer, claims or {}),
                    rate_limit=state, cache_ttl=ttl, **common)
