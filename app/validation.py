"""The whole validation, visible in one place: format, then the checks in order with their gates.

`validate` is pure apart from the verified-token cache it is handed: same token, policy, keys and `now` give the
same answer. Format failures skip everything else; the algorithm gates the key, the key gates the signature;
the claim checks always run (so the caller sees everything), but `valid` needs every error-free check.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import msgspec

from app.checks import Check, Context
from app.checks.claims import check_audience, check_issuer, check_required_claims, check_token_type
from app.checks.header import check_algorithm, check_key, check_signature
from app.checks.time import check_lifetime, check_time, numeric_date
from app.findings import CHECK_ORDER, Finding, Status, finding
from app.keys import KeyView
from app.policy import CompiledPolicy
from app.token import MalformedToken, ParsedToken, parse

CHECKS: tuple[tuple[str, Check], ...] = (
    ("algorithm", check_algorithm),
    ("key", check_key),
    ("signature", check_signature),
    ("issuer", check_issuer),
    ("audience", check_audience),
    ("time", check_time),
    ("lifetime", check_lifetime),
    ("token_type", check_token_type),
    ("required_claims", check_required_claims),
)
# A check runs only when the check it is gated on passed: no key lookup before the algorithm is allowed, no
# signature work without a key.
GATES: dict[str, str] = {"key": "algorithm", "signature": "key"}
# Checks whose outcome depends on `now`, re-run on every verified-token cache hit.
TIME_DEPENDENT = ("time",)


class KeyInfo(msgspec.Struct, frozen=True):
    kid: str | None
    source: str
    thumbprint: str | None


class ValidationResult(msgspec.Struct):
    """The answer of /v1/validate/jwt (validation.md section 1)."""

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


@dataclass(frozen=True, slots=True)
class Verified:
    """What a verified-token cache entry remembers: everything that does not depend on the clock."""

    header: dict[str, Any]
    claims: dict[str, Any]
    findings: dict[str, list[Finding]]
    statuses: dict[str, Status]
    key: KeyInfo | None


class VerifiedCache:
    """Bounded LRU of `Verified` by SHA-256 of the token, the policy fingerprint and the key-set version.

    Bad signatures are cached too, so replaying a forged token costs no RSA work. Entries of a key set that
    changed are unreachable (its version is part of the key) and age out; `forget_version` drops them at once.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[bytes, str, str], Verified] = OrderedDict()

    def get(self, key: tuple[bytes, str, str]) -> Verified | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return entry

    def put(self, key: tuple[bytes, str, str], entry: Verified) -> None:
        if self.size <= 0:
            return
        self._entries[key] = entry
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def forget_version(self, version: str) -> None:
        for key in [key for key in self._entries if key[2] == version]:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


def _status(findings: list[Finding] | None) -> Status:
    if findings is None:
        return "skip"
    return "fail" if any(item.severity == "error" for item in findings) else "pass"


def summarise(findings: list[Finding]) -> tuple[bool, str]:
    errors = [item.code for item in findings if item.severity == "error"]
    warnings = [item.code for item in findings if item.severity == "warning"]
    if errors:
        noun = "error" if len(errors) == 1 else "errors"
        return False, f"Token is NOT valid: {len(errors)} {noun} ({', '.join(dict.fromkeys(errors))})."
    if warnings:
        noun = "warning" if len(warnings) == 1 else "warnings"
        return True, f"Token is valid, with {len(warnings)} {noun} ({', '.join(dict.fromkeys(warnings))})."
    return True, "Token is valid."


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


def _run_static(ctx: Context) -> Verified:
    results: dict[str, list[Finding] | None] = {}
    statuses: dict[str, Status] = {"format": "pass"}
    for name, check in CHECKS:
        gate = GATES.get(name)
        if name in TIME_DEPENDENT or (gate is not None and statuses[gate] != "pass"):
            statuses[name] = "skip"
            continue
        results[name] = check(ctx)
        statuses[name] = _status(results[name])
    key = ctx.key_used or (ctx.candidates[0] if ctx.candidates else None)
    key_info = KeyInfo(key.kid, ctx.keys.source, key.thumbprint) if key is not None else None
    findings = {name: items for name, items in results.items() if items}
    return Verified(ctx.token.header, ctx.token.claims, findings, statuses, key_info)


def _assemble(verified: Verified, ctx: Context, tid: str) -> ValidationResult:
    statuses = dict(verified.statuses)
    extra = {"time": check_time(ctx), "key": _stale_findings(ctx.keys)}
    statuses["time"] = _status(extra["time"])
    findings: list[Finding] = []
    for name in CHECK_ORDER:
        findings.extend(verified.findings.get(name, ()))
        findings.extend(extra.get(name, ()))
    valid, summary = summarise(findings)
    exp = verified.claims.get("exp")
    expires_in = int(exp - ctx.now) if numeric_date(exp) else None
    return ValidationResult(valid, summary, statuses, findings, tid, None, verified.header, verified.claims,
                            verified.key, expires_in)


def validate(raw: str, policy: CompiledPolicy, keys: KeyView, now: float, *, max_token_bytes: int,
             cache: VerifiedCache | None = None) -> ValidationResult:
    """Validate a compact JWT against a compiled policy and the keys known now."""
    raw = raw.strip()
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).digest()
    tid = digest.hex()[:16]
    keyset = keys.keyset
    cache_key = (digest, policy.fingerprint, keyset.version) if keyset is not None and cache is not None else None
    if cache_key is not None:
        assert cache is not None
        hit = cache.get(cache_key)
        if hit is not None:
            return _assemble(hit, Context(ParsedToken(hit.header, hit.claims, b"", b"", ""), policy, keys, now), tid)
    try:
        token = parse(raw, max_token_bytes)
    except MalformedToken as exc:
        return _malformed(exc, tid)
    ctx = Context(token, policy, keys, now)
    verified = _run_static(ctx)
    if cache_key is not None:
        assert cache is not None
        cache.put(cache_key, verified)
    return _assemble(verified, ctx, tid)

