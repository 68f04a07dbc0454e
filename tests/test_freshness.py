"""How long a fetched key set or discovery document stays fresh: RFC 9111's rules, clamped to the settings."""

from __future__ import annotations

import httpx
import pytest

from app.freshness import freshness
from app.settings import Settings
from tests.conftest import NOW

SETTINGS = Settings(jwks_min_age=300, jwks_max_age=86_400, jwks_default_age=600)


@pytest.mark.parametrize("settings, expected", [
    (Settings(jwks_max_age=60, jwks_min_age=0), 60), (Settings(jwks_default_age=10), 300),
    (Settings(jwks_default_age=1200), 1200),
], ids=["ceiling", "floor", "within"])
def test_the_default_lifetime_is_clamped_like_any_other(settings, expected):
    """Found by a review: an operator's JWKS_MAX_AGE=60 did not apply to a set served without cache headers."""
    assert freshness(httpx.Headers({}), NOW, settings) == expected


@pytest.mark.parametrize("header, expected", [
    ({"cache-control": "public, max-age=3600"}, 3600),
    ({"cache-control": "max-age=10"}, 300),
    ({"cache-control": "max-age=999999"}, 86_400),
    ({"cache-control": "no-store"}, 300),
    ({}, 600),
    ({"expires": "Thu, 01 Jan 2099 00:00:00 GMT"}, 86_400),
    ({"cache-control": "max-age=3600", "age": "1800"}, 1800),
    ({"cache-control": "max-age=3600", "age": "3500"}, 300),
    ({"expires": "Tue, 14 Nov 2023 23:13:20 -0000"}, 3600),
    ({"expires": "Tue, 14 Nov 2023 23:13:20"}, 3600),
    ({"cache-control": "max-age=600", "age": b"\xb2"}, 600),  # a superscript two, as a server may send it
    ({"cache-control": "max-age=" + "9" * 400, "age": "9" * 400}, 300),
    ({"cache-control": "max-age=" + "9" * 400}, 86_400),
    ({"cache-control": "no-cache, max-age=3600"}, 300),
    ({"cache-control": "max-age=3600, no-store"}, 300),
    ({"cache-control": "max-age=1e9"}, 300),
    ({"cache-control": "max-age=-5"}, 300),
    ({"cache-control": 'max-age="7200"'}, 7200),
    ({"cache-control": "MAX-AGE=7200, max-age=60"}, 7200),
    ({"cache-control": "s-maxage=7200"}, 600),
    ({"expires": "Tue, 14 Nov 2023 23:13:20 GMT", "date": "Tue, 14 Nov 2023 21:13:20 GMT"}, 7200),
    ({"expires": "Tue, 14 Nov 2023 23:13:20 GMT", "age": "1800"}, 1800),
    ({"expires": "0"}, 300),
    ({"expires": "Thu, 01 Jan 99999999999999999999 00:00:00 GMT"}, 300),  # OverflowError, not ValueError
    ({"cache-control": "max-age=3600", "age": "100, 100"}, 3500),
    ({"cache-control": "max-age=3600", "age": "100 , 100"}, 3500),  # white space before the comma
    ({"cache-control": 'no-cache="set-cookie", max-age=3600, no-cache'}, 300),
    ({"cache-control": 'no-cache="set-cookie", max-age=3600'}, 3600),
    ({"cache-control": "max-age=" + "9" * 4301}, 86_400),  # past int()'s 4,300 digits
    ({"cache-control": "max-age=3600", "age": "9" * 4301}, 300),
    ([("cache-control", "max-age=3600"), ("age", "100"), ("age", "3000")], 3500),  # the first of two lines
    # Found by mutation testing:
    ({"cache-control": "max-age=3600", "age": "100 , 3000"}, 3500),  # white space before a list's comma (OWS)
    ({"cache-control": "max-age="}, 300),  # a max-age that says nothing: stale at once, not the default
    ({"expires": "Tue, 14 Nov 99999999999999999999 23:13:20 GMT"}, 300),  # past any C integer: unreadable
    ({"cache-control": f"max-age={10**11}", "age": str(2 * 10**9)}, 86_400),  # capped past any Age, not at it
], ids=["max-age-honoured", "below-floor", "above-ceiling", "no-store-floor", "no-header-default", "expires",
        "age-held-by-a-cache", "age-down-to-the-floor", "expires-utc", "expires-without-zone-is-gmt",
        "age-a-superscript-digit", "huge-max-age-and-age", "huge-max-age", "no-cache-beside-max-age",
        "no-store-after-max-age", "max-age-not-an-integer", "max-age-negative", "max-age-quoted",
        "max-age-first-of-two", "shared-cache-directive-only", "expires-against-the-servers-date",
        "expires-less-age", "expires-invalid-is-stale", "expires-year-overflowing-is-stale", "age-twice-joined",
        "age-twice-joined-spaced",
        "bare-no-cache-after-a-qualified-one",
        "qualified-no-cache-only", "max-age-past-int-digits", "age-past-int-digits", "age-two-lines",
        "age-white-space-before-a-comma", "max-age-empty", "expires-year-past-any-integer",
        "huge-max-age-less-a-huge-age"])
def test_a_document_is_fresh_for_its_http_lifetime_clamped_between_floor_and_ceiling(header, expected, monkeypatch):
    import time

    monkeypatch.setenv("TZ", "America/New_York")  # a zone other than GMT, or a naive date would read right anyway
    time.tzset()
    try:
        assert freshness(httpx.Headers(header), NOW, SETTINGS) == expected
    finally:
        monkeypatch.undo()
        time.tzset()
