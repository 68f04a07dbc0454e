"""Time claims (RFC 7519 sections 4.1.4-4.1.6) and the lifetime bound, with `now` passed in."""

from __future__ import annotations

from typing import Any

from app.checks import Context
from app.findings import Finding, finding
from app.policy import CompiledPolicy

INT64_MIN = -(2**63)  # the lower bound of a NumericDate (validation.md: within int64)
# 9999-12-31T23:59:59Z. Later is no date a token means: it is milliseconds (or microseconds) since the epoch,
# which made a token expire in 55,000 years, silently valid meanwhile (found by a review).
LAST_DATE = 253_402_300_799
_MISSING = object()
NEAR_MISS_SECONDS = 300


def numeric_date(value: Any) -> bool:
    """RFC 7519 section 2: a NumericDate is "A JSON numeric value" - so never a string or a boolean - "representing
    the number of seconds from 1970-01-01T00:00:00Z UTC", so not after the year 9999 either."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and INT64_MIN <= value <= LAST_DATE


def in_milliseconds(value: Any) -> bool:
    """A number after the year 9999 that is the year 9999 or earlier in milliseconds, micro- or nanoseconds."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and LAST_DATE < value <= LAST_DATE * 10**9


def finer_unit(value: float) -> tuple[str, int]:
    """The unit a date after the year 9999 is in, read from its size (a date now is 1.7e12 in milliseconds, 1.7e15
    in microseconds, 1.7e18 in nanoseconds), and how many of them make a second: the hint divided by 1000 whatever
    the size (found by a review)."""
    for unit, per_second in (("milliseconds", 10**3), ("microseconds", 10**6)):
        if value <= LAST_DATE * per_second:
            return unit, per_second
    return "nanoseconds", 10**9


def out_of_range(value: Any) -> bool:
    """A number too large (or too small) to be a date in any unit: a 400-digit `exp` is no date in milliseconds."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not numeric_date(value) \
        and not in_milliseconds(value)


def _near_miss(seconds: float, claim: str, skew: float) -> str | None:
    """The hint for a time claim missed by a little: clock skew, and for `exp` a token that just expired (the
    usual cause). Raising the skew is offered only below its maximum (found by a review)."""
    if seconds <= NEAR_MISS_SECONDS:
        by = "less than a second" if seconds < 1 else "only 1 second" if seconds < 2 else f"only {int(seconds)} seconds"
        fix = "Sync both clocks with NTP" + (", or raise clock_skew_seconds (max 300)." if skew < 300 else ".")
        if claim == "exp":
            return (f"'exp' missed by {by}: the token has just expired (get a fresh one, refreshing before 'exp'), "
                    f"or the issuer's clock is behind this service's. {fix}")
        return f"'{claim}' missed by {by}: probably clock skew between the issuer and this service. {fix}"
    return None


INFINITY = float("inf")


def time_window(claims: dict[str, Any], policy: CompiledPolicy) -> tuple[Any, Any]:
    """`(upper, lower)` such that `time_findings(claims, policy, now)` finds nothing exactly when
    `upper is not None and upper > now - skew and lower <= now + skew`: the same comparisons on the same values,
    worked out once per token so that a verified-token cache hit does two of them. `upper` is `exp` (infinity when
    it may be absent), `lower` the later of `nbf` and `iat` (minus infinity when both are absent); `upper` is None
    when no `now` would do (a time claim that is not a NumericDate, or `exp` missing but required)."""
    exp = claims.get("exp", _MISSING)
    if exp is _MISSING:
        if policy.require_exp:
            return None, None
        upper: Any = INFINITY
    elif numeric_date(exp):
        upper = exp
    else:
        return None, None
    lower: Any = -INFINITY
    for name in ("nbf", "iat"):
        value = claims.get(name, _MISSING)
        if value is not _MISSING:
            if not numeric_date(value):
                return None, None
            if value > lower:
                lower = value
    return upper, lower


def time_findings(claims: dict[str, Any], policy: CompiledPolicy, now: float) -> list[Finding]:
    """The time check, run on every validation (cache hits too) since it depends on `now`. RFC 7519 section
    4.1.4: "The processing of the "exp" claim requires that the current date/time MUST be before the expiration
    date/time listed in the "exp" claim." Expired when exp <= now - skew; `nbf` and `iat` fail when later than
    now + skew."""
    skew = policy.clock_skew
    findings: list[Finding] = []
    valid: dict[str, float] = {}
    for name in ("exp", "nbf", "iat"):
        if name in claims:
            value = claims[name]
            if numeric_date(value):
                valid[name] = value
            elif in_milliseconds(value):
                unit, per_second = finer_unit(value)
                findings.append(finding("CLAIM_INVALID", f"'{name}' is after the year 9999: a date in {unit}, "
                                        "not seconds?", {"claim": name, "actual": value, "max": LAST_DATE},
                                        f"Send '{name}' in seconds since the epoch ({unit} divided by "
                                        f"{per_second:,}).", check="time"))
            elif out_of_range(value):
                digits = len(str(abs(int(value)))) if value == value and abs(value) != float("inf") else None
                findings.append(finding("CLAIM_INVALID", f"'{name}' is a number no date is, in any unit",
                                        {"claim": name, "digits": digits, "max": LAST_DATE},
                                        f"Send '{name}' as seconds since the epoch; the issuer's token library "
                                        "wrote a number out of any range.", check="time"))
            else:
                findings.append(finding("CLAIM_INVALID", f"'{name}' must be a NumericDate (a JSON number)",
                                        {"claim": name, "actual": value if not isinstance(value, str) else value[:64],
                                         "actual_type": type(value).__name__},
                                        f"Send '{name}' as seconds since the epoch, a number (not a string or "
                                        "boolean), within int64.", check="time"))
    now_i = int(now)
    if "exp" in valid:
        exp = valid["exp"]
        if exp <= now - skew:
            missed = now - skew - exp
            findings.append(finding("TOKEN_EXPIRED", "the token has expired",
                                    {"claim": "exp", "exp": exp, "now": now_i, "clock_skew_seconds": skew,
                                     "expired_seconds_ago": int(now - exp), "missed_by_seconds": int(missed)},
                                    _near_miss(missed, "exp", skew)
                                    or "Get a fresh token (refresh it before it expires)."))
    elif "exp" not in claims and policy.require_exp:
        findings.append(finding("REQUIRED_CLAIM_MISSING", "'exp' is missing: the token would never expire",
                                {"claim": "exp"}, "Issue tokens with an 'exp', or set require_exp to false "
                                "(not recommended).", check="time"))
    if "nbf" in valid and valid["nbf"] > now + skew:
        missed = valid["nbf"] - (now + skew)
        findings.append(finding("TOKEN_NOT_YET_VALID", "the token is not valid yet ('nbf' is in the future)",
                                {"claim": "nbf", "nbf": valid["nbf"], "now": now_i, "clock_skew_seconds": skew,
                                 "missed_by_seconds": int(missed)}, _near_miss(missed, "nbf", skew)))
    if "iat" in valid and valid["iat"] > now + skew:
        missed = valid["iat"] - (now + skew)
        findings.append(finding("TOKEN_ISSUED_IN_FUTURE", "'iat' is in the future",
                                {"claim": "iat", "iat": valid["iat"], "now": now_i, "clock_skew_seconds": skew,
                                 "missed_by_seconds": int(missed)}, _near_miss(missed, "iat", skew)))
    return findings


def check_lifetime(ctx: Context) -> list[Finding] | None:
    """When `max_ttl_seconds` is set, `exp - iat` must not exceed it; without `iat` the lifetime is unbounded."""
    max_ttl = ctx.policy.max_ttl
    if max_ttl is None:
        return None
    claims = ctx.token.claims
    exp, iat = claims.get("exp"), claims.get("iat")
    if not numeric_date(iat) or not numeric_date(exp):
        missing = [name for name, value in (("iat", iat), ("exp", exp)) if not numeric_date(value)]
        return [finding("TOKEN_LIFETIME_EXCEEDED", f"the lifetime cannot be bounded: {' and '.join(missing)} "
                        "missing or invalid", {"max_ttl_seconds": max_ttl, "missing": missing},
                        "max_ttl_seconds needs both 'iat' and 'exp' in the token.")]
    lifetime = exp - iat
    if lifetime > max_ttl:
        return [finding("TOKEN_LIFETIME_EXCEEDED", "exp - iat exceeds max_ttl_seconds",
                        {"expected": max_ttl, "actual": lifetime, "exceeded_by_seconds": lifetime - max_ttl},
                        "The issuer mints longer-lived tokens than this policy accepts: shorten the token lifetime "
                        "at the IdP or raise max_ttl_seconds.")]
    return []
