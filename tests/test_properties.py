"""Properties over generated input: nothing a client sends as a token is a server error, and no single-character
change of a signed token's signing input validates.

The app is built once per module (hypothesis re-runs the test body, not function-scoped fixtures).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from litestar.testing import TestClient

from app.keys import KeyView
from app.policy import VerifyPolicy, compile_policy
from app.server import create_app
from app.settings import Settings
from app.validation import validate
from tests.conftest import NOW, FixedClock, rs256_policy, rs256_token
from tests.mint import b64, key_for, mint

VALIDATE, INSPECT = "/v1/validate/jwt", "/v1/inspect/token"
FAST = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
POLICY = rs256_policy()
TOKEN = rs256_token()
SIGNING_INPUT = TOKEN.rsplit(".", 1)[0]
BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.fixture(scope="module")
def app_client() -> Iterator[TestClient[Any]]:
    with TestClient(create_app(Settings(), clock=FixedClock()), raise_server_exceptions=False) as test_client:
        yield test_client


def _post_token(client: TestClient[Any], token: Any) -> tuple[int, int]:
    validate = client.post(VALIDATE, json={"token": token, "policy": POLICY})
    inspect = client.post(INSPECT, json={"token": token})
    return validate.status_code, inspect.status_code


def _assert_token_string_answered(client: TestClient[Any], token: str) -> None:
    validate = client.post(VALIDATE, json={"token": token, "policy": POLICY})
    assert validate.status_code == 200, validate.text
    body = validate.json()
    assert isinstance(body["valid"], bool)
    assert body["valid"] is False or token.strip() == TOKEN
    inspect = client.post(INSPECT, json={"token": token})
    assert inspect.status_code == 200, inspect.text
    assert inspect.json()["validated"] is False


def test_the_unchanged_token_validates(app_client):
    # The control for the mutation property below.
    assert app_client.post(VALIDATE, json={"token": TOKEN, "policy": POLICY}).json()["valid"] is True


@FAST
@given(token=st.text(max_size=400))
def test_any_text_as_token_is_answered_200(app_client, token):
    _assert_token_string_answered(app_client, token)


def _from_bytes(data: bytes, how: str) -> str:
    if how == "latin-1":
        return data.decode("latin-1")
    if how == "utf-8-replace":
        return data.decode("utf-8", "replace")
    if how == "base64url-segments":
        third = max(1, len(data) // 3)
        return ".".join(b64(part) for part in (data[:third], data[third:2 * third], data[2 * third:]))
    return base64.b64encode(data).decode()


@FAST
@given(data=st.binary(max_size=300),
       how=st.sampled_from(["latin-1", "utf-8-replace", "base64url-segments", "standard-base64"]))
def test_any_bytes_derived_string_as_token_is_answered_200(app_client, data, how):
    _assert_token_string_answered(app_client, _from_bytes(data, how))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@FAST
@given(value=JSON_VALUES)
def test_any_json_value_as_token_is_200_for_strings_and_422_otherwise(app_client, value):
    statuses = _post_token(app_client, value)
    expected = 200 if isinstance(value, str) else 422
    assert statuses == (expected, expected)


JOSE_OBJECTS = st.dictionaries(
    st.sampled_from(["alg", "kid", "typ", "crit", "jwk", "jku", "x5c", "iss", "aud", "exp", "nbf", "iat", "scope",
                     "scp", "permissions", "nonce", "token_use", "client_id"]) | st.text(max_size=6),
    JSON_VALUES | st.sampled_from(["RS256", "HS256", "none", "rs256-1", "at+jwt", "id", 1_700_000_000]),
    max_size=8,
)


@FAST
@given(header=JOSE_OBJECTS, payload=JOSE_OBJECTS, signature=st.binary(max_size=80))
def test_any_json_objects_as_header_and_payload_are_answered_200(app_client, header, payload, signature):
    def segment(value: Any) -> str:
        return b64(json.dumps(value).encode())

    token = f"{segment(header)}.{segment(payload)}.{b64(signature)}"
    validate = app_client.post(VALIDATE, json={"token": token, "policy": POLICY})
    assert validate.status_code == 200, validate.text
    assert validate.json()["valid"] is False
    inspect = app_client.post(INSPECT, json={"token": token})
    assert inspect.status_code == 200, inspect.text
    assert inspect.json()["decoded"] is not None


@FAST
@given(index=st.integers(min_value=0, max_value=len(SIGNING_INPUT) - 1),
       replacement=st.sampled_from(BASE64URL + ".=+/ ~é"))
def test_changing_one_character_of_the_signing_input_never_validates(app_client, index, replacement):
    if SIGNING_INPUT[index] == replacement:
        replacement = "A" if replacement != "A" else "B"
    mutated = SIGNING_INPUT[:index] + replacement + SIGNING_INPUT[index + 1:]
    token = mutated + TOKEN[len(SIGNING_INPUT):]
    response = app_client.post(VALIDATE, json={"token": token, "policy": POLICY})
    assert response.status_code == 200
    assert response.json()["valid"] is False


URLISH = st.builds(str.__add__, st.sampled_from(["https://", "http://", "HTTPS://", ""]),
                   st.text(alphabet="[]:/@%.?#\uff03abcAB19 -", max_size=24))
CLAIM_VALUES = URLISH | JSON_VALUES | st.lists(URLISH, max_size=3)
EVERY_CHECK = compile_policy(msgspec.convert(rs256_policy(
    issuer=["https://issuer.example.com/", "http://[::1]/"], required_claims=["sub"], required_scopes=["read"],
    required_custom_claims={"https://app.example.com/plan": "pro", "flag": True}, max_ttl_seconds=3600,
    token_type="at+jwt"), VerifyPolicy), inline=True)


@FAST
@given(claim_set=st.dictionaries(
    st.sampled_from(["iss", "aud", "exp", "nbf", "iat", "scope", "scp", "permissions", "nonce", "at_hash", "token_use",
                     "client_id", "sub", "flag", "https://app.example.com/plan"]), CLAIM_VALUES, max_size=10))
def test_any_claim_values_of_a_signed_token_get_a_verdict_from_every_check(claim_set):
    token = mint(claim_set, key_for("RS256"), header={"typ": "at+jwt"})
    assert EVERY_CHECK.static_keys is not None
    result = validate(token, EVERY_CHECK, KeyView(EVERY_CHECK.static_keys, "public_key"), NOW,
                      max_token_bytes=16 * 1024)
    assert result.statuses["signature"] == "pass"
    assert result.valid is not any(item.severity == "error" for item in result.findings)
    msgspec.json.encode(result)


# The straight line for clean tokens (validation._clean) must give exactly the explaining pipeline's verdict.

def _explained(raw: str, policy: Any, keys: KeyView, now: float) -> Any:
    """The answer through the full pipeline only (what validate() gives when the straight line steps aside)."""
    from app import validation
    from app.checks import Context
    from app.token import MalformedToken, parse

    try:
        token = parse(raw.strip(), 16384)
    except MalformedToken:
        return None
    verified = validation._run_static(Context(token, policy, keys, now))
    return validation._assemble(verified, policy, keys, now, validate(raw, policy, keys, now,
                                                                       max_token_bytes=16384).token_id)


_CLAIM_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2, 2).map(lambda d: NOW + d * 3600),
                          st.sampled_from(["1700000000", 1.7e9, 1e20, "https://issuer.example.com/",
                                           "https://issuer.example.com", "https://api.example.com", ["a", "b"],
                                           ["https://api.example.com", "x"], [], {}, "id", "access", "read write"]))
_CLAIM_NAMES = st.sampled_from(["iss", "aud", "exp", "nbf", "iat", "sub", "nonce", "token_use", "scope", "client_id"])
_POLICIES = st.fixed_dictionaries({}, optional={
    "max_ttl_seconds": st.sampled_from([60, 7200, 86400]), "token_type": st.sampled_from(["at+jwt", "jwt"]),
    "required_claims": st.sampled_from([["sub"], ["sub", "scope"]]), "required_scopes": st.just(["read"]),
    "required_custom_claims": st.just({"token_use": "access"}), "require_exp": st.booleans(),
    "clock_skew_seconds": st.sampled_from([0, 60, 300]), "audience_claim": st.just("client_id")})
_HEADERS = st.fixed_dictionaries({}, optional={"typ": st.sampled_from(["JWT", "at+jwt", "application/at+JWT", 5]),
                                               "kid": st.sampled_from(["other", 7, None]),
                                               "crit": st.just(["exp"]), "jku": st.just("https://evil.example")})


@FAST
@given(changes=st.dictionaries(_CLAIM_NAMES, _CLAIM_VALUES, max_size=5), removed=st.sets(_CLAIM_NAMES, max_size=3),
       extra=_POLICIES, header=_HEADERS, forged=st.booleans(), offset=st.integers(-4000, 4000))
def test_the_fast_path_answers_exactly_like_the_explaining_pipeline(changes, removed, extra, header, forged, offset):
    from tests.conftest import claims

    token_claims = claims(**changes)
    for name in removed:
        token_claims.pop(name, None)
    key = key_for("RS256", "attacker") if forged else key_for("RS256")
    raw = mint(token_claims, key, header=header, kid=False)
    policy = compile_policy(VerifyPolicy(**{**POLICY, **extra}), inline=True)
    keys = KeyView(policy.static_keys, policy.key_source)
    now = NOW + offset
    fast = validate(raw, policy, keys, now, max_token_bytes=16384)
    assert msgspec.to_builtins(fast) == msgspec.to_builtins(_explained(raw, policy, keys, now))


# The parser's fast path (token._parse_fast) must accept exactly what the explaining parser accepts, with the
# same result; anything it doubts goes to the explaining parser, which gives the reason.

def _explaining_parse(raw: str) -> Any:
    from app import token as token_module

    saved = token_module._parse_fast
    token_module._parse_fast = lambda raw, max_bytes: None
    try:
        return token_module.parse(raw, 512)
    except token_module.MalformedToken as exc:
        return ("malformed", exc.reason, exc.evidence, exc.remediation, exc.header, exc.claims)
    finally:
        token_module._parse_fast = saved


def _parsed(raw: str) -> Any:
    from app.token import MalformedToken, parse

    try:
        return parse(raw, 512)
    except MalformedToken as exc:
        return ("malformed", exc.reason, exc.evidence, exc.remediation, exc.header, exc.claims)


# '"' and '\\' too: the fast path decodes a segment as a JSON string (app.token._strict_b64url), where they would
# end it or escape the next characters.
_SEGMENT_TEXT = st.text(alphabet=BASE64URL + "+/=. é\n\"\\\x01", max_size=12)
_SEGMENT_JSON = st.sampled_from([b'{"alg":"RS256"}', b'{"a":1,"a":2}', b'{ "alg": "RS256" }', b"[]", b"{", b"\xff",
                                 b'{"a":' * 70 + b"1" + b"}" * 70, b'{"a":[[[[1]]]]}', b'{"x":"\\u00e9"}', b""])


@FAST
@given(parts=st.lists(st.one_of(_SEGMENT_TEXT, _SEGMENT_JSON.map(b64),
                                _SEGMENT_JSON.map(lambda data: b64(data) + "=")), min_size=1, max_size=5),
       prefix=st.sampled_from(["", "Bearer ", "bearer "]), filler=st.sampled_from(["", "A" * 600]))
def test_the_parser_fast_path_answers_exactly_like_the_explaining_parser(parts, prefix, filler):
    raw = prefix + ".".join(parts) + filler
    assert _parsed(raw) == _explaining_parse(raw)
    assert _parsed(raw) == _explaining_parse(raw)  # again: the second time the header may come from the memo


@pytest.mark.parametrize("last", list(BASE64URL))
def test_the_parser_fast_path_checks_the_canonical_trailing_bits_like_the_explaining_parser(last):
    header, payload = b64(b'{"alg":"HS256"}'), b64(b'{"sub":"x"}')
    for signature in ("AA" + last, "A" + last, "AAA" + last, last):
        raw = f"{header}.{payload}.{signature}"
        assert _parsed(raw) == _explaining_parse(raw)


def _deep(levels: int) -> bytes:
    return b'{"a":' + b"[" * (levels - 1) + b"1" + b"]" * (levels - 1) + b"}"


_HS_HEADER = b64(b'{"alg":"HS256"}')
_PAYLOAD = b64(b'{"sub":"x"}')


_PADDABLE = b64(b'{"sub":"xyz"}')
_TRICKY_PAYLOADS = [_deep(64), _deep(65), b'{"a":1,"a":1}', b'{ "sub": "x" }', b"[1]", b'{"x":NaN}', b'{"x":1e999}',
                    b'{"x":"\xff"}', b'{"x":"\\u00e9"}']


@pytest.mark.parametrize("raw", [
    f"{_HS_HEADER}.{_PAYLOAD}.AAAA",
    f"{_HS_HEADER}.{_PAYLOAD}.",
    f"{_HS_HEADER}.{_PAYLOAD}.AA==",
    f"{_HS_HEADER}.{_PAYLOAD}.AA=",
    f"{_HS_HEADER}=.{_PAYLOAD}.AAAA",
    f"{_HS_HEADER}.{_PAYLOAD}=.AAAA",
    f"{_HS_HEADER}.{_PADDABLE}=.AAAA",  # 18 characters: with one '=', strict base64 would accept it
    f"{_HS_HEADER}.{_PAYLOAD}.AA+A",
    f"{_HS_HEADER}.{_PAYLOAD}.AA/A",
    f"{_HS_HEADER}.{_PAYLOAD}.AA A",
    f"{_HS_HEADER}.{_PAYLOAD}.AAé",
    f"{_HS_HEADER}.{_PAYLOAD}.AA\\u0041A",  # a JSON escape of "A" (the fast path decodes a JSON string)
    f"{_HS_HEADER}.{_PAYLOAD}.AA\\\"",
    f"{_HS_HEADER}.{_PAYLOAD}.AA\"A",
    f"{_HS_HEADER}.{_PAYLOAD}.AA\x01A",
    f"{_HS_HEADER}.{_PAYLOAD}.A",
    f"{_HS_HEADER}.{_PAYLOAD}.AAAAA",
    f".{_PAYLOAD}.AAAA",
    f"{_HS_HEADER}..AAAA",
    f"{_HS_HEADER}.{_PAYLOAD}",
    f"{_HS_HEADER}.{_PAYLOAD}.AAAA.AAAA.AAAA",
    f"Bearer {_HS_HEADER}.{_PAYLOAD}.AAAA",
    f"{_HS_HEADER}.{_PAYLOAD}.{'A' * 600}",
    *(f"{_HS_HEADER}.{b64(payload)}.AAAA" for payload in _TRICKY_PAYLOADS),
], ids=lambda raw: raw[-12:])
def test_the_parser_fast_path_answers_tricky_tokens_like_the_explaining_parser(raw):
    assert _parsed(raw) == _explaining_parse(raw)


_TIMES = st.one_of(st.integers(-400, 400).map(lambda d: NOW + d), st.floats(-400, 400).map(lambda d: NOW + d),
                   st.sampled_from(["1300819380", True, None, 1e20, -(2**63), 2**63, [NOW]]))


@settings(max_examples=1000, deadline=None)
@given(times=st.fixed_dictionaries({}, optional={"exp": _TIMES, "nbf": _TIMES, "iat": _TIMES}),
       skew=st.sampled_from([0, 1, 60, 300]), require_exp=st.booleans(), now=st.floats(-300, 300).map(lambda d: NOW + d))
def test_the_cached_time_window_holds_exactly_when_the_time_check_finds_nothing(times, skew, require_exp, now):
    """A verified-token cache hit decides on `time_window` alone, at any later `now`."""
    from app.checks.time import time_findings, time_window

    policy = compile_policy(VerifyPolicy(**{**POLICY, "clock_skew_seconds": skew, "require_exp": require_exp}),
                            inline=True)
    upper, lower = time_window(times, policy)
    inside = upper is not None and upper > now - skew and lower <= now + skew
    assert inside == (not time_findings(times, policy, now))


# The rule loader refuses a path pattern that can never match a path rules see (app.ruleset: `//`, escapes a
# normalised path never holds, spelled across classes, groups and counts). It must never refuse one that can:
# a refused deny rule is an operator's error message, a refused pattern that could match is a rule they cannot
# write.

_PATTERN_PIECES = ["/", "a", "%", "2", "E", "e", "C", "3", ".", "[eE]", "[/]", "[/a]", "[2C]", "[%]", "(?:", ")",
                   "|", "?", "*", "+", "{2}", "\\x2F", "\\Q%2\\E", "(?i)"]


@FAST
@given(pieces=st.lists(st.sampled_from(_PATTERN_PIECES), min_size=1, max_size=8),
       paths=st.lists(st.text(alphabet="/a%2EeC3.", min_size=1, max_size=8), min_size=1, max_size=8),
       flags=st.sampled_from(["", "i"]))
def test_a_path_pattern_refused_at_load_matches_no_path_rules_see(pieces, paths, flags):
    import re2

    from app.paths import PathRejected, path_spellings
    from app.rules import load_rules
    from app.ruleset import RuleError

    pattern = "^/" + "".join(pieces)
    try:
        compiled = re2.compile(("(?i)" if flags else "") + pattern)
    except re2.error:
        return
    try:
        load_rules([{"effect": "deny", "path": {"pattern": pattern}, "regexFlags": flags}])
    except RuleError as refused:
        for path in paths:
            try:
                spellings = [spelling for spelling in path_spellings("/" + path) if spelling is not None]
            except PathRejected:
                continue
            assert not any(compiled.search(spelling) for spelling in spellings), (pattern, path, str(refused))
