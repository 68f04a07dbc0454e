"""Authorizers (`AUTHORIZERS_JSON`, authorization.md section 1): trust, token sources, rules and limits, by id.

The document is decoded into frozen Structs, every reference resolved and every rule compiled at load; one
problem per line as `AUTHORIZERS_JSON: $.<id>.rules[2].path.pattern: <problem>`. A file is reloaded like the
profiles (SIGHUP or a changed file, validated first, swapped atomically) through `ReloadingDocument`.
Authorizers sent inline to `POST /v1/authorize` go through the same compiler, cached by fingerprint.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from app.config import (END, ConfigError, ReloadingDocument, Source, Stamp, convert_each_field,
                        decode_document, json_path, shown_name, shown_word, worded)
from app.patterns import PatternError, parse_pointer
from app.policy import CompiledPolicy, PolicyError, Problem, VerifyPolicy, compile_policy
from app.ratelimit import Budgets, RateLimit, RateLimitDoc, ScratchBudgets, compile_rate_limit
from app.rules import RuleSet
from app.ruleset import Effect, RuleDoc, RuleError, compile_rules, retained_bytes
from app.verifier import Verifier

AUTHORIZER_ID_WORDS = "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or a digit"
AUTHORIZER_ID = re.compile(worded(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}" + END, AUTHORIZER_ID_WORDS))
HEADER_NAME = re.compile(worded(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}" + END,  # RFC 9110 5.1: a token
                                "a header name (RFC 9110 5.1: letters, digits and !#$%&'*+-.^_`|~, no spaces)"))
HeaderName = Annotated[str, Meta(pattern=HEADER_NAME.pattern)]
ParamName = Annotated[str, Meta(min_length=1, max_length=128)]
INLINE_CACHE_SIZE = 256
# What the compiled rules of the cached inline authorizers may hold in all, estimated (app.ruleset.retained_bytes:
# each rule, its patterns' programs and DFAs, see app.patterns.UNTRUSTED_MAX_MEM); an authorizer estimated at more
# than an eighth of it is compiled for its request only. A count of patterns was no bound: a 4,000-character
# pattern under `i` holds ~136 KiB.
INLINE_CACHE_BYTES = 32 << 20
# Hits after which the inline authorizers' rate-limit counts start over (app.ratelimit.ScratchBudgets).
INLINE_RATE_HITS = 10_000


class TokenSourceDoc(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`{"header": "Authorization", "prefix": "Bearer "}`, `{"query": "access_token"}` or `{"cookie": "at"}`."""

    header: HeaderName | None = None
    prefix: Annotated[str, Meta(max_length=64)] | None = None
    query: ParamName | None = None
    cookie: ParamName | None = None


MAX_HEADER_NAME = 128  # a claims_to_headers header name


class AuthorizerDoc(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    issuer_profile_id: Annotated[str, Meta(pattern=AUTHORIZER_ID.pattern)] | None = None
    policy: VerifyPolicy | None = None
    token_sources: Annotated[list[TokenSourceDoc], Meta(min_length=1, max_length=8)] | None = None
    anonymous: Literal["deny", "rules"] = "deny"
    default_effect: Effect = "deny"
    rules: Annotated[list[RuleDoc], Meta(max_length=10_000)] = []
    rate_limit: RateLimitDoc | None = None
    # The header names are checked by the compiler, which names the claim: msgspec's path stops at the map
    # (`$.api.claims_to_headers[...]`, found by a review).
    claims_to_headers: Annotated[dict[Annotated[str, Meta(min_length=1, max_length=1024)], Annotated[
        Any, Meta(extra_json_schema={"type": "string", "maxLength": MAX_HEADER_NAME})]], Meta(max_length=64)] = {}
    decision_cache_seconds: Annotated[int, Meta(ge=0, le=86_400)] = 0
    description: Annotated[str, Meta(max_length=2048)] | None = None


@dataclass(frozen=True, slots=True)
class TokenSource:
    kind: Literal["header", "query", "cookie"]
    name: str  # header names lower-cased
    prefix: str  # header only; compared case-insensitively (the auth scheme, RFC 9110 11.1)

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"


DEFAULT_SOURCES = (TokenSource("header", "authorization", "Bearer "),)


@dataclass(frozen=True, slots=True)
class Authorizer:
    id: str  # the realm in WWW-Authenticate; "inline" for inline authorizers
    budget: str  # rate-limit budget name: the id, or "inline:<fingerprint>"
    profile_id: str | None  # resolved per request, so a profile reload applies at once
    policy: CompiledPolicy | None
    sources: tuple[TokenSource, ...]
    anonymous_rules: bool
    default_effect: Effect
    rules: RuleSet  # indexed by method and literal path prefix: a plain tuple would lose the index
    rate_limit: RateLimit | None
    claims_to_headers: tuple[tuple[str, tuple[str, ...], str], ...]  # (claim as written, pointer, header)
    cache_seconds: int


def _sources(docs: list[TokenSourceDoc] | None, problems: list[Problem]) -> tuple[TokenSource, ...]:
    if docs is None:
        return DEFAULT_SOURCES
    sources: list[TokenSource] = []
    for index, doc in enumerate(docs):
        given = [(kind, name) for kind, name in (("header", doc.header), ("query", doc.query), ("cookie", doc.cookie))
                 if name is not None]
        if len(given) != 1:
            problems.append(Problem(("token_sources", index), "exactly one of 'header', 'query' or 'cookie'"))
            continue
        kind, name = given[0]
        if doc.prefix is not None and kind != "header":
            problems.append(Problem(("token_sources", index, "prefix"), "'prefix' applies to a header source only"))
        source = TokenSource(kind, name.lower() if kind == "header" else name,  # type: ignore[arg-type]
                             doc.prefix or "")
        if any(other.kind == source.kind and other.name == source.name for other in sources):
            problems.append(Problem(("token_sources", index), f"{source.label} is listed twice"))
        sources.append(source)
    return tuple(sources)


# Headers a forward-auth answer sets itself, or that say how a proxy or a client reads or keeps it (its framing
# and coding, hop-by-hop and caching headers): a claim may not supply them. `Content-Encoding: gzip` from a claim
# made every client reading the answer fail to inflate it, and `Expires` or `ETag` could keep an allow in a cache
# (found by a review).
RESERVED_HEADERS = frozenset({"content-type", "content-length", "content-encoding", "content-range",
                              "content-location", "transfer-encoding", "connection", "proxy-connection", "keep-alive",
                              "upgrade", "trailer", "te", "cache-control", "expires", "age", "etag", "last-modified",
                              "vary", "pragma", "www-authenticate", "proxy-authenticate", "retry-after",
                              "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "x-request-id",
                              "set-cookie", "location", "date", "server", "strict-transport-security", "alt-svc"})
# Response headers proxies act on by prefix: nginx's X-Accel-* (X-Accel-Expires before Cache-Control kept an allow
# in nginx's cache after the token was revoked; found by a review), Envoy's x-envoy-*.
RESERVED_PREFIXES = ("x-accel-", "x-envoy-")


def _claims_to_headers(mapping: dict[str, Any], problems: list[Problem]
                       ) -> tuple[tuple[str, tuple[str, ...], str], ...]:
    entries = []
    seen: set[str] = set()
    for claim, header in mapping.items():
        if not isinstance(header, str) or len(header) > MAX_HEADER_NAME:
            problems.append(Problem(("claims_to_headers", claim), f"expected a header name (a string of at most "
                                    f"{MAX_HEADER_NAME} characters), got {type(header).__name__}"
                                    f"{f' of {len(header)} characters' if isinstance(header, str) else ''}"))
            continue
        if not HEADER_NAME.match(header):
            named = shown_word(header)  # a value that is no header name may be anything pasted there
            problems.append(Problem(("claims_to_headers", claim), f"{named or 'the value'} is not a header name "
                                    "(RFC 9110 5.1: letters, digits and !#$%&'*+-.^_`|~, no spaces)"))
            continue
        if header.lower() in RESERVED_HEADERS or header.lower().startswith(RESERVED_PREFIXES):
            problems.append(Problem(("claims_to_headers", claim), f"{header!r} is a header the answer sets itself"))
            continue
        if header.lower() in seen:
            problems.append(Problem(("claims_to_headers", claim), f"header {header!r} is set by two claims"))
        seen.add(header.lower())
        try:
            pointer = parse_pointer(claim) if claim.startswith("/") else (claim,)
        except PatternError as exc:
            problems.append(Problem(("claims_to_headers", claim), str(exc)))
            continue
        entries.append((claim, pointer, header))
    return tuple(entries)


def compile_authorizer(doc: AuthorizerDoc, authorizer_id: str, *, budget: str | None = None,
                       trust: Callable[[VerifyPolicy], CompiledPolicy],
                       profile_exists: Callable[[str], bool], untrusted: bool = False) -> Authorizer:
    """Resolve and compile one authorizer. Raises PolicyError listing every problem, located in `doc`.
    `untrusted`: a caller sent it (its patterns get app.patterns.UNTRUSTED_MAX_MEM)."""
    problems: list[Problem] = []
    policy = None
    if (doc.issuer_profile_id is None) == (doc.policy is None):
        problems.append(Problem((), "exactly one of 'issuer_profile_id' or 'policy' is required"))
    elif doc.issuer_profile_id is not None and not profile_exists(doc.issuer_profile_id):
        # Named only when it looks like a name: an id may be anything pasted there (a secret; found by a review).
        named = shown_name(doc.issuer_profile_id) or "by that name"
        problems.append(Problem(("issuer_profile_id",), f"no issuer profile {named} is configured"))
    elif doc.policy is not None:
        try:
            policy = trust(doc.policy)
        except PolicyError as exc:
            problems.extend(Problem(("policy", *problem.loc), problem.msg, problem.type) for problem in exc.problems)
    sources = _sources(doc.token_sources, problems)
    headers = _claims_to_headers(doc.claims_to_headers, problems)
    rules = RuleSet(())
    try:
        rules = RuleSet(compile_rules(doc.rules, untrusted=untrusted))
    except RuleError as exc:
        problems.extend(Problem(("rules", *problem.loc), problem.msg, problem.type) for problem in exc.problems)
    rate_limit = None
    try:
        rate_limit = compile_rate_limit(doc.rate_limit) if doc.rate_limit is not None else None
        if doc.rate_limit is not None and rate_limit is None:
            problems.append(Problem(("rate_limit",), "set at least one of per_second, per_minute, per_hour, per_day"))
    except PatternError as exc:
        problems.append(Problem(("rate_limit", "key"), str(exc)))
    if problems:
        raise PolicyError(problems)
    return Authorizer(authorizer_id, budget or authorizer_id, doc.issuer_profile_id, policy, sources,
                      doc.anonymous == "rules", doc.default_effect, rules, rate_limit, headers,
                      doc.decision_cache_seconds)


def _configured_policy(policy: VerifyPolicy) -> CompiledPolicy:
    # An operator's file is trusted like a profile: any jwks_uri, and discovery, are allowed.
    return compile_policy(policy, inline=False)


_STAND_IN_RULE = {"effect": "deny"}  # never served: it only keeps the other rules' places while they are checked


def load_authorizers(data: bytes, label: str, profile_exists: Callable[[str], bool]) -> dict[str, Authorizer]:
    """Decode and compile the whole document; raise one ConfigError listing every problem."""
    document = decode_document(data, label)
    if not isinstance(document, dict):
        raise ConfigError(label, [("$", "expected an object mapping authorizer ids to authorizers")])
    problems: list[tuple[str, str]] = []
    authorizers: dict[str, Authorizer] = {}
    for authorizer_id, raw in document.items():
        if not AUTHORIZER_ID.match(authorizer_id):
            problems.append((json_path(authorizer_id), f"an authorizer id is {AUTHORIZER_ID_WORDS}"))
            continue
        before = len(problems)
        # A bad rule is reported, and stands aside as a rule with no condition, so that the others are checked too
        doc = convert_each_field(raw, AuthorizerDoc, label, authorizer_id, problems, {"rules": _STAND_IN_RULE})
        if doc is None:
            continue
        try:
            compiled = compile_authorizer(doc, authorizer_id, trust=_configured_policy, profile_exists=profile_exists)
        except PolicyError as exc:
            problems.extend((json_path(authorizer_id, *problem.loc), problem.msg) for problem in exc.problems)
        else:
            if len(problems) == before:
                authorizers[authorizer_id] = compiled
    if problems:
        raise ConfigError(label, problems)
    return authorizers


def jwks_uris(authorizers: dict[str, Authorizer]) -> set[str]:
    return {authorizer.policy.jwks_uri for authorizer in authorizers.values()
            if authorizer.policy is not None and authorizer.policy.jwks_uri is not None}


def discovery_issuers(authorizers: dict[str, Authorizer]) -> set[str]:
    return {authorizer.policy.issuers[0] for authorizer in authorizers.values()
            if authorizer.policy is not None and authorizer.policy.key_source == "discovery"}


class Authorizers:
    """The configured authorizers (reloading with their file), inline ones by fingerprint, and what deciding
    needs besides: the verifier and the rate-limit budgets (one object, so a route has one dependency)."""

    def __init__(self, source: Source | None, *, verifier: Verifier, budgets: Budgets,
                 on_change: Callable[[set[str], set[str], set[str], set[str]], None] | None = None) -> None:
        """`on_change(old, new, old_issuers, new_issuers)`: after a reload, the key-set URIs the authorizers'
        own policies named before and now, and the issuers whose key sets they find by discovery."""
        self.verifier = verifier
        self.budgets = budgets
        # Profiles are looked up live: a reload of ISSUER_PROFILES_JSON applies at once.
        self.profile_exists: Callable[[str], bool] = lambda profile_id: verifier.profile(profile_id) is not None
        self.inline_trust: Callable[[VerifyPolicy], CompiledPolicy] = verifier.compile_inline
        self.document: ReloadingDocument[dict[str, Authorizer]] = ReloadingDocument(
            source, lambda data, label: load_authorizers(data, label, self.profile_exists), {},
            on_change=(lambda old, new: on_change(jwks_uris(old), jwks_uris(new), discovery_issuers(old),
                                                  discovery_issuers(new))) if on_change else None)
        self.inline_budgets = ScratchBudgets(INLINE_RATE_HITS)
        self._inline: OrderedDict[str, tuple[Authorizer, int]] = OrderedDict()  # with its estimated bytes
        self._inline_bytes = 0

    def on_disk(self, profile_exists: Callable[[str], bool]
                ) -> tuple[bytes, Stamp, dict[str, Authorizer]] | None:
        """The document as its file reads now, loaded with `profile_exists` (for `document.adopt`); None when it
        does not load, or is not a file (inline JSON changes only with a restart)."""
        source = self.document.source
        if source is None or not source.is_file:
            return None
        try:
            stamp = source.stamp()
            data = source.read()
            return data, stamp, load_authorizers(data, source.label, profile_exists)
        except ConfigError:
            return None

    def get(self, authorizer_id: str) -> Authorizer | None:
        return self.document.value.get(authorizer_id)

    def ids(self) -> list[str]:
        return sorted(self.document.value)

    def rate_limited(self) -> list[str]:
        """The configured authorizers with a rate limit."""
        return sorted(key for key, authorizer in self.document.value.items() if authorizer.rate_limit is not None)

    def jwks_uris(self) -> set[str]:
        """The key sets the configured authorizers' own policies name (profiles' key sets are the profiles')."""
        return jwks_uris(self.document.value)

    def discovery_issuers(self) -> set[str]:
        """The issuers whose key sets the configured authorizers' own policies find by discovery."""
        return discovery_issuers(self.document.value)

    def inline(self, doc: AuthorizerDoc) -> Authorizer:
        """Compile an authorizer sent in a request (its jwks_uri under JWKS_URI_ALLOWLIST). Raises PolicyError."""
        fingerprint = hashlib.sha256(msgspec.json.encode(doc)).hexdigest()  # whole: no two documents share one
        cached = self._inline.get(fingerprint)
        if cached is not None and (cached[0].profile_id is None or self.profile_exists(cached[0].profile_id)):
            self._inline.move_to_end(fingerprint)
            return cached[0]
        if cached is not None:  # its profile was removed by a reload: refused as a new one is (found by a review:
            # the same body was a 200 in a worker that had it cached, a 422 in the others)
            self._inline_bytes -= self._inline.pop(fingerprint)[1]
        authorizer = compile_authorizer(doc, "inline", budget=f"inline:{fingerprint}", trust=self.inline_trust,
                                        profile_exists=self.profile_exists, untrusted=True)
        size = retained_bytes(authorizer.rules)
        if size > INLINE_CACHE_BYTES // 8:
            return authorizer  # compiled for this request only: keeping it would push out everything else
        self._inline[fingerprint] = (authorizer, size)
        self._inline_bytes += size
        while len(self._inline) > INLINE_CACHE_SIZE or self._inline_bytes > INLINE_CACHE_BYTES:
            self._inline_bytes -= self._inline.popitem(last=False)[1][1]
        return authorizer

    def inline_cached(self) -> tuple[int, int]:
        """How many inline authorizers are kept, and the bytes their compiled rules are estimated to hold."""
        return len(self._inline), self._inline_bytes

