"""How long a fetched document stays fresh (RFC 9111 section 4.2): pure functions of its headers and the time.

Key sets and discovery documents (app/jwks.py) are kept for the lifetime their server gives them, clamped
between a floor and a ceiling the operator sets, so neither a server asking for no caching nor one asking for a
year can make the service fetch on every request or keep a revoked key.
"""

from __future__ import annotations

import datetime
import email.utils

import httpx

from app.settings import Settings


def _directives(control: str) -> dict[str, str | None]:
    """Cache-Control directives by lower-cased name, values unquoted: the first of a repeated one, except that a
    bare one wins over a qualified one (`no-cache="set-cookie"` beside `no-cache`, as httpx joins two headers)."""
    directives: dict[str, str | None] = {}
    for part in control.split(","):
        name, has_value, value = part.partition("=")
        name = name.strip().lower()
        if name and (name not in directives or (not has_value and directives[name] is not None)):
            directives[name] = value.strip().strip('"') if has_value else None
    return directives


def _seconds(text: str) -> int | None:
    """A delta-seconds value (RFC 9111 1.2.2): ASCII digits only ("²".isdigit()), capped beyond any ceiling."""
    text = text.strip()
    return min(int(text[:13]), 10**12) if text.isascii() and text.isdigit() else None


def _http_date(text: str) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT (RFC 9110 5.6.7), whatever the local time zone
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def freshness(headers: httpx.Headers, now: float, settings: Settings) -> float:
    """Seconds a fetched set stays fresh (RFC 9111 4.2), clamped to [floor, ceiling]: its lifetime (max-age, else
    Expires less Date) less the Age a cache in between has held it. `no-cache`/`no-store`, and a lifetime that
    cannot be read (`max-age=1e9`, `max-age=-5`, an unparsable Expires), count as stale at once (4.2.1)."""
    directives = _directives(headers.get("cache-control", ""))
    lifetime: float | None
    if "no-store" in directives or ("no-cache" in directives and directives["no-cache"] is None):
        lifetime = 0.0
    elif "max-age" in directives:
        lifetime = _seconds(directives["max-age"] or "")
        lifetime = 0.0 if lifetime is None else lifetime
    elif "expires" in headers:
        expires = _http_date(headers["expires"])
        date = _http_date(headers.get("date", ""))
        lifetime = 0.0 if expires is None else expires - (now if date is None else date)
    else:  # clamped too: JWKS_MAX_AGE=60 left a set without cache headers fresh for the default 600 s
        lifetime = settings.jwks_default_age
    # Age given twice arrives joined ("100, 100"): the first counts (RFC 9110 5.3 and 9111 5.1).
    remaining = lifetime - (_seconds(headers.get("age", "").split(",")[0]) or 0)
    return min(max(remaining, settings.jwks_min_age), settings.jwks_max_age)
