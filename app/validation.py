"""The whole validation, visible in one place: format, then the checks in order with their gates.

`validate` is pure apart from the verified-token cache it is handed: same token, policy, keys and `now` give the
same answer. Format failures skip everything else; the algorithm gates the key, the key gates the signature;
the claim checks always run (so the caller sees everything), but `valid` needs every error-free check.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any, Callable

import msgspec

from app.checks import Check, Context
from app.checks.claims import (check_audience, check_issuer, check_required_claims, check_required_claims_for,
                                check_token_type)
from app.checks.header import check_algorithm, check_key, check_signature
from app.checks.time import check_lifetime, numeric_date, time_findings, time_window
from app.findings import CHECK_ORDER, Finding, Status, finding
from app.keys import ALGORITHMS, MAX_KEYS_TRIED, MIN_RSA_BITS, KeyEntry, KeyView
from app.policy import INLINE, CompiledPolicy, normalise_typ
from app.token import WHITESPACE, MalformedToken, ParsedToken, decoded_weight, parse

# `time` has no check here: it depends on `now`, so `_assemble` decides it on every call (cache hits too).
CHECKS: tuple[tuple[str, Check | None], ...] = (
    ("algorithm", check_algorithm),
    ("key", check_key),
    ("signature", check_signature),
    ("issuer", check_issuer),
    ("audience", check_audience),
    ("time", None),
    ("lifetime", check_lifetime),
    ("token_type", check_token_type),
    ("required_claims", check_required_claims),
)
# A check runs only when the check it is gated on passed: no key lookup before the algorithm is allowed, no
# signature work without a key.
GATES: dict[str, str] = {"key": "algorithm", "signature": "key"}
# Where the findings of a cached entry split around what each call adds: JWKS_STALE after the key check's,
# the time check's between audience and lifetime.
_AFTER_KEY = CHECK_ORDER.index("key") + 1
_TIME = CHECK_ORDER.index("time")
VALID_SUMMARY = "Token is valid."


class KeyInfo(msgspec.Struct, frozen=True):
    kid: str | None
    source: str
    thumbprint: str | None


class ValidationResult(msgspec.Struct, omit_defaults=True):
    """The answer of /v1/validate/jwt (validation.md section 1). Fields without a value are left out, not null:
    `header` and `claims` are absent when they cannot be decoded, `key` when no key verified, `profile` for an
    inline policy, `expires_in` without a usable `exp`."""

    valid: bool
    summary: str
    statuses: dict[str, Status]
    findings: list[Finding]
    token_id: str
    profile: str | None = None
    header: dict[str, Any] | None = None
    claims: dict[str, Any] | None = None
    key: KeyInfo | None = None
    expires_in: int | None = None


class Verified(msgspec.Struct, frozen=True, gc=False):
    """What a verified-token cache entry remembers: everything that does not depend on the clock, laid out so a
    hit only compares `now` with the token's time window and, when it is inside, reuses the answer's parts as
    they are. (Not tracked by the garbage collector: it holds decoded JSON and strings, never itself.)"""

    header: dict[str, Any]
    claims: dict[str, Any]
    key: KeyInfo | None
    # The findings of the checks before the key-set staleness note, between it and the time check, and after.
    to_key: tuple[Finding, ...]
    to_audience: tuple[Finding, ...]
    after_time: tuple[Finding, ...]
    statuses: dict[str, Status]  # "time" is "pass": a hit sets it from the time check (shared: never mutated)
    findings: tuple[Finding, ...]  # all of the above in order: the answer when time and staleness add nothing
    valid: bool
    summary: str
    expires: Any  # `exp` when it is a NumericDate (for `expires_in`), else None
    # `checks.time.time_window`: the time check finds nothing exactly when upper > now - skew and
    # lower <= now + skew (upper None: never).
    upper: Any
    lower: Any
    weight: int = 0  # the parsed token's weight and its findings' (app.token.decoded_weight): what the cache charges


class VerifiedCache:
    """Bounded LRU of `Verified` by SHA-256 of the token, the policy fingerprint and the key-set version.

    Bad signatures are cached too, so replaying a forged token costs no RSA work. Entries of a key set that
    changed are unreachable (its version is part of the key) and age out; `forget_version` drops them at once.

    Bounded twice: by `size` entries, and by `max_bytes` (BYTES_PER_ENTRY a slot by default) of their estimated
    memory, ENTRY_OVERHEAD plus the entry's `weight` (an upper bound of its decoded header and claims, and of its
    findings).
    Counting entries alone let 10,000 forged 16 KiB tokens of `0.5,0.5,...` hold 1.7 GB (found by a review). A
    small token (~1 KiB, a weight of ~4 KiB) fills every slot; larger ones share the budget, fewer of them kept
    (a Keycloak token of 5 KiB weighs ~38 KiB, about what its decoded claims hold). 6 KiB a slot keeps a worker
    under 150 MiB whatever the tokens: at 12 KiB, 2,200 Keycloak-like tokens took one to 150 MiB and forged ones
    to 177 (found by a review).

    Two classes share the bounds. Answers anybody can make (a signature that did not verify, or any answer under an
    inline policy, whose caller may hold its key) never push out the others beyond a quarter of the entries and of
    the bytes: past it they push out only each other. The others, answers about the tokens of configured issuers,
    push out those beyond that quarter first. So a caller's forged or self-signed tokens cannot empty the cache of
    a profile's tokens (215 forged tokens weighed to push out 47 entries each did; found by reviews), and a
    service validating only inline policies still has the whole cache.
    """

    ENTRY_OVERHEAD = 768  # the key, the Verified struct and its KeyInfo, the LRU's node
    BYTES_PER_ENTRY = 6 * 1024

    def __init__(self, size: int, max_bytes: int | None = None) -> None:
        self.size = size
        self.max_bytes = size * self.BYTES_PER_ENTRY if max_bytes is None else max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        # Each least recently used first. The keys of the first are answers about configured issuers' tokens.
        self._trusted: OrderedDict[tuple[bytes, str, str], Verified] = OrderedDict()
        self._untrusted: OrderedDict[tuple[bytes, str, str], Verified] = OrderedDict()
        self.untrusted_bytes = 0
        # Told of every lookup (True for a hit); the app factory points it at the Prometheus counters.
        self.on_lookup: Callable[[bool], None] | None = None

    def get(self, key: tuple[bytes, str, str]) -> Verified | None:
        entry = self._trusted.get(key)
        if entry is not None:
            self._trusted.move_to_end(key)
        else:
            entry = self._untrusted.get(key)
            if entry is not None:
                self._untrusted.move_to_end(key)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        if self.on_lookup is not None:
            self.on_lookup(entry is not None)
        return entry

    def put(self, key: tuple[bytes, str, str], entry: Verified) -> None:
        cost = self.ENTRY_OVERHEAD + entry.weight
        trusted = entry.statuses.get("signature") == "pass" and not key[1].endswith(INLINE)
        share, share_bytes = self.size // 4, self.max_bytes // 4
        # One that could never be kept beside the other class's share is refused before it pushes out anything (it
        # pushed out every other answer of its class first, then itself; found by reviews).
        if self.size <= 0 or cost > self.max_bytes or (not trusted and cost > share_bytes and self._trusted) or \
                (trusted and cost > self.max_bytes - min(self.untrusted_bytes, share_bytes)):
            return
        self._drop(key)  # (none: `validate` looks up and stores without an await between)
        (self._trusted if trusted else self._untrusted)[key] = entry
        self.bytes += cost
        if not trusted:
            self.untrusted_bytes += cost
        while True:
            over_bytes = self.bytes > self.max_bytes
            if not over_bytes and len(self._trusted) + len(self._untrusted) <= self.size:
                return
            beyond_share = len(self._untrusted) > share or self.untrusted_bytes > share_bytes
            if trusted:
                push_out_trusted = not (self._untrusted and beyond_share)
            else:  # a profile's answers keep three quarters of the entries, and of the bytes when those bind: one
                # forged token of 500 KB pushed out 200 light entries (found by a review)
                push_out_trusted = bool(self._trusted) and not beyond_share and len(self._trusted) > self.size - share \
                    and (not over_bytes or self.bytes - self.untrusted_bytes > self.max_bytes - share_bytes)
            self._drop(next(iter(self._trusted if push_out_trusted else self._untrusted)))

    def _drop(self, key: tuple[bytes, str, str]) -> None:
        entry = self._trusted.pop(key, None)
        if entry is not None:
            self.bytes -= self.ENTRY_OVERHEAD + entry.weight
            return
        entry = self._untrusted.pop(key, None)
        if entry is not None:
            self.bytes -= self.ENTRY_OVERHEAD + entry.weight
            self.untrusted_bytes -= self.ENTRY_OVERHEAD + entry.weight

    def forget_version(self, version: str) -> None:
        for key in [key for entries in (self._trusted, self._untrusted) for key in entries if key[2] == version]:
            self._drop(key)

    def __len__(self) -> int:
        return len(self._trusted) + len(self._untrusted)


def _status(findings: list[Finding] | None) -> Status:
    if findings is None:
        return "skip"
    if not findings:
        return "pass"
    return "fail" if any(item.severity == "error" for item in findings) else "pass"


def summarise(findings: list[Finding]) -> tuple[bool, str]:
    if not findings:
        return True, VALID_SUMMARY
    errors = [item.code for item in findings if item.severity == "error"]
    warnings = [item.code for item in findings if item.severity == "warning"]
    if errors:
        noun = "error" if len(errors) == 1 else "errors"
        return False, f"Token is NOT valid: {len(errors)} {noun} ({', '.join(dict.fromkeys(errors))})."
    if warnings:
        noun = "warning" if len(warnings) == 1 else "warnings"
        return True, f"Token is valid, with {len(warnings)} {noun} ({', '.join(dict.fromkeys(warnings))})."
    return True, VALID_SUMMARY


def _stale_findings(keys: KeyView) -> list[Finding]:
    if keys.stale_seconds is None:
        return []
    return [finding("JWKS_STALE", "the key set could not be refreshed; the last good set was used",
                    {"source": keys.source, "age_seconds": int(keys.stale_seconds), "reason": keys.error},
                    "The issuer's key set endpoint is failing; a key rotated in the meantime would not be known.")]


def _malformed(exc: MalformedToken, tid: str) -> ValidationResult:
    statuses: dict[str, Status] = {name: "skip" for name in CHECK_ORDER}
    statuses["format"] = "fail"
    item = finding("MALFORMED_TOKEN", exc.reason, exc.evidence, exc.remediation)
    return ValidationResult(False, summarise([item])[1], statuses, [item], tid, header=exc.header, claims=exc.claims)


_encode = msgspec.json.Encoder().encode
FINDING_OVERHEAD = 8 * 96  # the Finding and its evidence dict, as decoded_weight counts a value


def _findings_weight(findings: tuple[Finding, ...]) -> int:
    """An upper bound of what the findings hold, as decoding their JSON would hold it, each list or object counted
    once however many findings share it: each SCOPE_MISSING repeats the same `required` and `missing` lists, and
    their JSON charged 64 missing scopes 85 times what they hold, so ~40 such answers emptied the cache (found by
    a review)."""
    seen: set[int] = set()
    total = 0
    for item in findings:
        text = item.message + (item.remediation or "")
        total += FINDING_OVERHEAD + (len(text) if text.isascii() else 4 * len(text))
        for key, value in item.evidence.items():
            total += 96 + len(key)
            if isinstance(value, str):
                total += len(value) if value.isascii() else 4 * len(value)
            elif isinstance(value, int):
                total += value.bit_length() // 8  # (a bool too)
            elif isinstance(value, (list, dict)) and id(value) not in seen:
                seen.add(id(value))
                total += decoded_weight(_encode(value))
    return total


def _verified(header: dict[str, Any], claims: dict[str, Any], key: KeyInfo | None,
              results: dict[str, list[Finding] | None], statuses: dict[str, Status], policy: CompiledPolicy,
              weight: int) -> Verified:
    def collect(names: tuple[str, ...]) -> tuple[Finding, ...]:
        return tuple(item for name in names for item in (results.get(name) or ()))

    to_key, to_audience = collect(CHECK_ORDER[:_AFTER_KEY]), collect(CHECK_ORDER[_AFTER_KEY:_TIME])
    after_time = collect(CHECK_ORDER[_TIME + 1:])
    findings = to_key + to_audience + after_time
    valid, summary = summarise(list(findings))
    if findings:  # a policy of 64 required scopes and claims made each forged token's entry hold ~60-140 KB
        weight += _findings_weight(findings)  # against the 2.7 charged (found by a review)
    return Verified(header, claims, key, to_key, to_audience, after_time, statuses, findings, valid, summary,
                    *_times(claims, policy), weight)


def _times(claims: dict[str, Any], policy: CompiledPolicy) -> tuple[Any, Any, Any]:
    exp = claims.get("exp")
    return (exp if numeric_date(exp) else None, *time_window(claims, policy))


def _run_static(ctx: Context) -> Verified:
    """Every check but the clock's, in order, each gated on the one before it (the path that explains)."""
    results: dict[str, list[Finding] | None] = {}
    statuses: dict[str, Status] = {"format": "pass"}
    for name, check in CHECKS:
        if check is None:
            statuses[name] = "pass"  # `time`: `_assemble` replaces it when the time check finds something
            continue
        gate = GATES.get(name)
        if gate is not None and statuses[gate] != "pass":
            statuses[name] = "skip"
            continue
        results[name] = check(ctx)
        statuses[name] = _status(results[name])
    # The key the answer names: the one that verified; none when no key did (a candidate is not "the key").
    key = ctx.key_used
    key_info = KeyInfo(key.kid, ctx.keys.source, key.thumbprint) if key is not None else None
    return _verified(ctx.token.header, ctx.token.claims, key_info, results, statuses, ctx.policy, ctx.token.weight)


# The statuses of a token that passes everything, by which optional checks the policy has (they skip otherwise).
_CLEAN: dict[tuple[bool, bool, bool], dict[str, Status]] = {
    (lifetime, token_type, required): {
        "format": "pass", "algorithm": "pass", "key": "pass", "signature": "pass", "issuer": "pass",
        "audience": "pass", "time": "pass", "lifetime": "pass" if lifetime else "skip",
        "token_type": "pass" if token_type else "skip", "required_claims": "pass" if required else "skip"}
    for lifetime in (False, True) for token_type in (False, True) for required in (False, True)}


def _clean(token: ParsedToken, policy: CompiledPolicy, keys: KeyView) -> Verified | tuple[KeyEntry, ...] | None:
    """The straight line for a token that passes every check: the same verdict as `_run_static`, reached
    without building evidence for checks that pass. Returns None at the first doubt (anything that would be a
    finding, a warning included), and the full pipeline then runs and explains; the signature comes last, so
    a token failing elsewhere costs no signature work here. When no key verifies, returns the keys it tried, for
    the pipeline not to try them again."""
    header, claims = token.header, token.claims
    alg = header.get("alg")
    if type(alg) is not str or alg not in policy.allowed_algs:
        return None
    if "crit" in header or "jwk" in header or "jku" in header or "x5u" in header or "x5c" in header:
        return None
    kid = header.get("kid")
    if kid is not None and type(kid) is not str:
        return None
    keyset = keys.keyset
    if keyset is None or not token.signature:
        return None
    # iss, aud, lifetime, typ, required claims: the exact conditions under which those checks find nothing.
    if claims.get("iss") not in policy.issuers:
        return None
    audience = claims.get(policy.audience_claim)
    if type(audience) is str:
        if audience not in policy.audiences:
            return None
    elif type(audience) is list and audience:
        if not all(type(value) is str for value in audience) or policy.audiences.isdisjoint(audience):
            return None
    else:
        return None
    if policy.max_ttl is not None:
        exp, iat = claims.get("exp"), claims.get("iat")
        if not (numeric_date(exp) and numeric_date(iat) and exp - iat <= policy.max_ttl):
            return None
    if "nonce" in claims or "at_hash" in claims or claims.get("token_use") == "id":
        return None  # an ID token: the token-type check has something to say
    if policy.token_type is not None:
        typ = header.get("typ")
        if type(typ) is not str or normalise_typ(typ) != policy.token_type:
            return None
    required = bool(policy.required_claims or policy.required_custom_claims or policy.required_scopes)
    if required and check_required_claims_for(policy, claims, first=True):
        return None
    algorithm = ALGORITHMS[alg]
    single_key = policy.key_source in ("secret", "public_key")
    used = None
    tried: list[KeyEntry] = []
    candidates = keyset.candidates(algorithm, None if single_key else kid)
    if not single_key and len(candidates) > MAX_KEYS_TRIED:
        return None  # KID_NOT_FOUND has something to say
    for key in candidates:
        if (key.size < algorithm.hash_bytes) if key.kty == "oct" else (key.kty == "RSA" and key.size < MIN_RSA_BITS):
            continue  # WEAK_KEY may have something to say, unless a strong key verifies: the pipeline tries it
        if algorithm.verify(key.key, token.signing_input, token.signature):
            used = key
            break
        tried.append(key)
    if used is None:
        return tuple(tried)  # the explaining pipeline says why, without these keys' verifies again
    statuses = _CLEAN[(policy.max_ttl is not None, policy.token_type is not None, required)]
    return Verified(header, claims, KeyInfo(used.kid, keys.source, used.thumbprint), (), (), (), statuses, (), True,
                    VALID_SUMMARY, *_times(claims, policy), token.weight)


def _assemble(verified: Verified, policy: CompiledPolicy, keys: KeyView, now: float, tid: str) -> ValidationResult:
    expires = verified.expires
    expires_in = None if expires is None else int(expires - now)
    upper, skew = verified.upper, policy.clock_skew
    if upper is not None and upper > now - skew and verified.lower <= now + skew and keys.stale_seconds is None:
        # The time check finds nothing (checks.time.time_window) and the key set is fresh: the stored answer.
        return ValidationResult(verified.valid, verified.summary, verified.statuses, list(verified.findings), tid,
                                None, verified.header, verified.claims, verified.key, expires_in)
    timed = time_findings(verified.claims, policy, now)
    statuses = dict(verified.statuses)
    statuses["time"] = _status(timed)
    findings = [*verified.to_key, *_stale_findings(keys), *verified.to_audience, *timed, *verified.after_time]
    valid, summary = summarise(findings)
    return ValidationResult(valid, summary, statuses, findings, tid, None, verified.header, verified.claims,
                            verified.key, expires_in)


def validate(raw: str, policy: CompiledPolicy, keys: KeyView, now: float, *, max_token_bytes: int,
             cache: VerifiedCache | None = None) -> ValidationResult:
    """Validate a compact JWT against a compiled policy and the keys known now."""
    raw = raw.strip(WHITESPACE)
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).digest()
    tid = digest[:8].hex()
    keyset = keys.keyset
    cache_key = (digest, policy.fingerprint, keyset.version) if keyset is not None and cache is not None else None
    if cache_key is not None:
        hit = cache.get(cache_key)  # type: ignore[union-attr]
        if hit is not None:
            return _assemble(hit, policy, keys, now, tid)
    try:
        token = parse(raw, max_token_bytes)
    except MalformedToken as exc:
        return _malformed(exc, tid)
    verified = _clean(token, policy, keys)
    if not isinstance(verified, Verified):
        verified = _run_static(Context(token, policy, keys, now, tried=verified or ()))
    # KID_NOT_FOUND's evidence says when the set was fetched and how long ago (a refetch may keep the version),
    # so that verdict is not kept; it costs no signature work to make again.
    if cache_key is not None and not any(item.code == "KID_NOT_FOUND" for item in verified.to_key):
        cache.put(cache_key, verified)  # type: ignore[union-attr]
    return _assemble(verified, policy, keys, now, tid)
