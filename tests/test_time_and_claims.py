"""Time and claim checks through the pure core (`validate`) at a fixed `now`: boundaries, types, remediations.

Tokens are minted by tests/mint.py; the policy is the RS256 one of conftest, compiled as an inline policy would be.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import msgspec
import pytest

from app.keys import KeyView
from app.policy import CompiledPolicy, VerifyPolicy, compile_policy
from app.validation import ValidationResult, VerifiedCache, validate
from tests.conftest import AUDIENCE, ISSUER, NOW, claims, rs256_policy, rs256_token
from tests.mint import key_for, mint

SKEW = 60


@lru_cache(maxsize=None)
def _compiled(policy_json: bytes) -> CompiledPolicy:
    return compile_policy(msgspec.json.decode(policy_json, type=VerifyPolicy), inline=True)


def run(token: str, *, now: float = NOW, cache: VerifiedCache | None = None, **policy: Any) -> ValidationResult:
    compiled = _compiled(msgspec.json.encode(rs256_policy(**policy)))
    assert compiled.static_keys is not None
    return validate(token, compiled, KeyView(compiled.static_keys, compiled.key_source), now,
                    max_token_bytes=16 * 1024, cache=cache)


def codes(result: ValidationResult) -> list[str]:
    return [item.code for item in result.findings]


def only(result: ValidationResult, code: str):
    matches = [item for item in result.findings if item.code == code]
    assert len(matches) == 1, codes(result)
    return matches[0]


# A header parameter that only adds a warning (HEADER_KEY_IGNORED): the token leaves the fast path for clean tokens
# and goes through every check, which has its own comparisons (mutation testing found boundaries only one path
# had tested).
FULL_PIPELINE = {"x5u": "https://keys.example/cert.pem"}


# --- exp, nbf, iat boundaries ---------------------------------------------------------------------------------

@pytest.mark.parametrize("exp, expired", [
    (NOW - SKEW - 1, True),
    (NOW - SKEW, True),
    (NOW - SKEW + 1, False),
    (NOW, False),
], ids=["one-second-beyond-skew", "exactly-at-now-minus-skew", "one-second-inside-skew", "at-now-within-skew"])
def test_exp_boundary_is_now_minus_skew_inclusive(exp, expired):
    result = run(rs256_token(exp=exp, iat=NOW - 600))
    assert ("TOKEN_EXPIRED" in codes(result)) is expired
    assert result.valid is not expired
    assert result.statuses["time"] == ("fail" if expired else "pass")


def test_expired_by_one_second_beyond_skew_fails_with_evidence_and_clock_skew_remediation():
    finding = only(run(rs256_token(exp=NOW - SKEW - 1, iat=NOW - 600)), "TOKEN_EXPIRED")
    assert finding.check == "time" and finding.severity == "error"
    assert finding.evidence["claim"] == "exp"
    assert finding.evidence["now"] == NOW
    assert finding.evidence["missed_by_seconds"] == 1
    assert finding.evidence["expired_seconds_ago"] == SKEW + 1  # counted from exp itself, not from the skew
    assert finding.evidence["clock_skew_seconds"] == SKEW
    assert "clock is behind" in finding.remediation and "1 s" in finding.remediation
    assert "get a fresh one" in finding.remediation  # the usual cause of a token a moment past 'exp'


@pytest.mark.parametrize("skew, offers_raising", [(60, True), (300, False)])
def test_raising_the_skew_is_offered_only_below_its_maximum(skew, offers_raising):
    """Found by a review: at 300 the hint still said "raise clock_skew_seconds (max 300)"."""
    finding = only(run(rs256_token(nbf=NOW + skew + 5), clock_skew_seconds=skew), "TOKEN_NOT_YET_VALID")
    assert ("raise clock_skew_seconds" in finding.remediation) is offers_raising, finding.remediation


def test_long_expired_token_gets_refresh_remediation_not_clock_skew():
    finding = only(run(rs256_token(exp=NOW - 86_400, iat=NOW - 90_000)), "TOKEN_EXPIRED")
    assert finding.evidence["missed_by_seconds"] == 86_400 - SKEW
    assert "clock skew" not in finding.remediation
    assert "fresh token" in finding.remediation


@pytest.mark.parametrize("nbf, fails", [
    (NOW + SKEW - 1, False),
    (NOW + SKEW, False),
    (NOW + SKEW + 1, True),
], ids=["one-second-inside-skew", "exactly-at-now-plus-skew", "one-second-beyond-skew"])
def test_nbf_fails_only_beyond_now_plus_skew(nbf, fails):
    result = run(rs256_token(nbf=nbf))
    assert ("TOKEN_NOT_YET_VALID" in codes(result)) is fails
    assert result.valid is not fails


@pytest.mark.parametrize("iat, fails", [
    (NOW + SKEW - 1, False),
    (NOW + SKEW, False),
    (NOW + SKEW + 1, True),
], ids=["one-second-inside-skew", "exactly-at-now-plus-skew", "one-second-beyond-skew"])
def test_iat_fails_only_beyond_now_plus_skew(iat, fails):
    result = run(rs256_token(iat=iat))
    assert ("TOKEN_ISSUED_IN_FUTURE" in codes(result)) is fails
    assert result.valid is not fails


@pytest.mark.parametrize("claim, code", [("nbf", "TOKEN_NOT_YET_VALID"), ("iat", "TOKEN_ISSUED_IN_FUTURE")])
@pytest.mark.parametrize("offset, fails", [(SKEW - 1, False), (SKEW, False), (SKEW + 1, True)],
                         ids=["one-second-inside-skew", "exactly-at-now-plus-skew", "one-second-beyond-skew"])
def test_nbf_and_iat_boundaries_hold_for_a_token_outside_its_time_window(claim, code, offset, fails):
    """Found by mutation testing: a token inside its time window is answered by the window's comparisons and never
    reaches the time check's own, so `>=` (or `> now`) for `> now + skew` there survived. An expired token does."""
    result = run(rs256_token(exp=NOW - SKEW, **{claim: NOW + offset}))
    assert codes(result).count(code) == int(fails)
    assert "TOKEN_EXPIRED" in codes(result)


def test_a_miss_of_exactly_300_seconds_is_still_a_near_miss_told_as_clock_skew():
    """Found by mutation testing: the boundary was untested (`<` for `<=` survived)."""
    near = only(run(rs256_token(exp=NOW - SKEW - 300)), "TOKEN_EXPIRED")
    far = only(run(rs256_token(exp=NOW - SKEW - 301)), "TOKEN_EXPIRED")
    assert "missed by only 300 seconds" in near.remediation and "clock_skew_seconds" in near.remediation
    assert "missed by only" not in far.remediation and "clock_skew_seconds" not in far.remediation


@pytest.mark.parametrize("claim, code", [("nbf", "TOKEN_NOT_YET_VALID"), ("iat", "TOKEN_ISSUED_IN_FUTURE")])
def test_future_claim_evidence_and_near_miss_remediation_name_the_seconds(claim, code):
    finding = only(run(rs256_token(**{claim: NOW + SKEW + 42})), code)
    assert finding.evidence["claim"] == claim
    assert finding.evidence["now"] == NOW
    assert finding.evidence["missed_by_seconds"] == 42
    assert "clock skew" in finding.remediation and "42 s" in finding.remediation


@pytest.mark.parametrize("skew, exp, expired", [
    (0, NOW, True), (0, NOW + 1, False), (300, NOW - 300, True), (300, NOW - 299, False),
], ids=["skew-0-at-now", "skew-0-one-after", "skew-300-at-boundary", "skew-300-inside"])
def test_clock_skew_setting_moves_the_exp_boundary(skew, exp, expired):
    result = run(rs256_token(exp=exp, iat=NOW - 600), clock_skew_seconds=skew)
    assert ("TOKEN_EXPIRED" in codes(result)) is expired


# --- NumericDate types ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("exp, invalid", [
    (str(NOW + 3600), True),
    (float(NOW + 3600) + 0.5, False),
    (True, True),
    (1e20, True),
    (2**63, True),
    (None, False),
], ids=["string", "float", "bool", "1e20", "beyond-int64", "null-means-absent"])
def test_exp_must_be_a_json_number_within_int64(exp, invalid):
    token = rs256_token(exp=NOW + 3600)
    if exp is not None:
        token = mint(claims(exp=exp), key_for("RS256"))
    result = run(token)
    assert ("CLAIM_INVALID" in codes(result)) is invalid
    assert result.valid is not invalid
    if invalid:
        finding = only(result, "CLAIM_INVALID")
        assert finding.check == "time"
        assert finding.evidence["claim"] == "exp"
        assert "TOKEN_EXPIRED" not in codes(result)


@pytest.mark.parametrize("claim", ["nbf", "iat"])
@pytest.mark.parametrize("value", ["1700000000", False, 1e20], ids=["string", "bool", "1e20"])
def test_nbf_and_iat_of_the_wrong_type_are_claim_invalid(claim, value):
    finding = only(run(mint(claims(**{claim: value}), key_for("RS256"))), "CLAIM_INVALID")
    assert finding.evidence["claim"] == claim


def test_a_long_string_time_claim_is_shown_cut_to_64_characters():
    """Found by mutation testing: the evidence bound on a string claim was untested."""
    finding = only(run(mint(claims(exp="9" * 100), key_for("RS256"))), "CLAIM_INVALID")
    assert finding.evidence == {"claim": "exp", "actual": "9" * 64, "actual_type": "str"}


@pytest.mark.parametrize("claim, value, invalid", [
    *((claim, value, True) for claim in ("exp", "nbf", "iat") for value in ((NOW + 3600) * 1000, 253_402_300_800)),
    ("exp", 253_402_300_799, False), ("exp", 4_102_444_800, False),
], ids=[f"{claim}-{kind}" for claim in ("exp", "nbf", "iat") for kind in ("milliseconds", "year-10000")]
    + ["exp-last-second-of-9999", "exp-year-2100"])
def test_a_time_claim_after_the_year_9999_is_named_as_milliseconds(claim, value, invalid):
    """Found by a review: `exp` in milliseconds made a token valid, without a finding, for 55,000 years."""
    result = run(mint(claims(**{claim: value}), key_for("RS256")))
    assert result.valid is not invalid
    if invalid:
        finding = only(result, "CLAIM_INVALID")
        assert finding.evidence == {"claim": claim, "actual": value, "max": 253_402_300_799}
        assert "milliseconds" in finding.message and "divided by 1,000)" in finding.remediation
        assert codes(result) == ["CLAIM_INVALID"]


@pytest.mark.parametrize("value, unit, divisor", [((NOW + 3600) * 10**6, "microseconds", "1,000,000"),
                                                  ((NOW + 3600) * 10**9, "nanoseconds", "1,000,000,000"),
                                                  (2**63, "nanoseconds", "1,000,000,000"),
                                                  (253_402_300_799 * 10**3, "milliseconds", "1,000"),
                                                  (253_402_300_799 * 10**9, "nanoseconds", "1,000,000,000")],
                         ids=["microseconds", "nanoseconds", "int64-max", "last-millisecond-of-9999",
                              "last-nanosecond-of-9999"])
def test_a_time_claim_in_micro_or_nanoseconds_is_named_by_its_unit(value, unit, divisor):
    """Found by a review: the hint divided by 1000 whatever the size, so following it left a date in microseconds
    still a thousand times too large."""
    finding = only(run(mint(claims(exp=value), key_for("RS256"))), "CLAIM_INVALID")
    assert f"a date in {unit}, not seconds?" in finding.message
    assert finding.remediation == f"Send 'exp' in seconds since the epoch ({unit} divided by {divisor})."


@pytest.mark.parametrize("value, digits", [(10**400, 401), (253_402_300_799 * 10**9 + 1, 21), (-(2**63) - 1, 19),
                                           (1e300, 301)], ids=["400-digits", "past-nanoseconds", "below-int64",
                                                               "float-1e300"])
def test_a_time_claim_no_date_in_any_unit_is_not_called_milliseconds(value, digits):
    """Found by a review: a 400-digit `exp` was asked "a date in milliseconds?"."""
    finding = only(run(mint(claims(exp=value), key_for("RS256"))), "CLAIM_INVALID")
    assert "no date is, in any unit" in finding.message and "milliseconds" not in finding.message
    assert finding.evidence == {"claim": "exp", "digits": digits, "max": 253_402_300_799}


def test_the_int64_minimum_is_a_numeric_date_and_one_less_is_not():
    """validation.md: a NumericDate is within int64; -2**63 was refused (`-INT64_MAX` as the lower bound)."""
    assert codes(run(mint(claims(nbf=-(2**63)), key_for("RS256")))) == []
    assert codes(run(mint(claims(nbf=-(2**63) - 1), key_for("RS256")))) == ["CLAIM_INVALID"]


def test_float_exp_is_a_valid_numeric_date_and_expires_at_its_boundary():
    assert run(mint(claims(exp=NOW - SKEW + 0.5), key_for("RS256"))).valid is True
    assert "TOKEN_EXPIRED" in codes(run(mint(claims(exp=NOW - SKEW - 0.5), key_for("RS256"))))


@pytest.mark.parametrize("require_exp, valid", [(True, False), (False, True)], ids=["required", "not-required"])
def test_missing_exp_fails_only_when_required(require_exp, valid):
    result = run(rs256_token(exp=None), require_exp=require_exp)
    assert result.valid is valid
    assert ("REQUIRED_CLAIM_MISSING" in codes(result)) is not valid
    if not valid:
        finding = only(result, "REQUIRED_CLAIM_MISSING")
        assert finding.evidence == {"claim": "exp"} and finding.check == "time"
    assert result.expires_in is None


# --- audience ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("aud, valid", [
    (AUDIENCE, True),
    (["https://other.example.com", AUDIENCE], True),
    (["https://other.example.com", "https://third.example.com"], False),
    ("https://other.example.com", False),
    (None, False),
    ([], False),
    ([AUDIENCE, 1], False),
], ids=["string", "array-one-match", "array-no-match", "string-no-match", "missing", "empty-array", "non-string-item"])
def test_audience_must_intersect_the_policy_audiences(aud, valid):
    result = run(rs256_token(aud=aud))
    assert result.valid is valid
    assert result.statuses["audience"] == ("pass" if valid else "fail")


def test_missing_audience_remediation_explains_auth0_audience_parameter():
    finding = only(run(rs256_token(aud=None)), "AUDIENCE_MISMATCH")
    assert "audience" in finding.remediation and "opaque or an ID token" in finding.remediation


def test_userinfo_only_audience_remediation_names_userinfo():
    finding = only(run(rs256_token(aud=["https://acme.auth0.com/userinfo"])), "AUDIENCE_MISMATCH")
    assert "/userinfo" in finding.remediation


@pytest.mark.parametrize("aud, hinted", [
    ("0oa1b2c3d4e5f6g7h8i9", True), ("0oa1b2c3d4e5f6g7h8i", False), ("a" * 40, True), ("a" * 41, False),
    ("0b6e4a3c-1f2d-4e5a-9b8c-7d6e5f4a3b2c", True),
], ids=["20-characters", "19-characters", "40-characters", "41-characters", "guid"])
def test_client_id_shaped_audience_remediation_suspects_an_id_token(aud, hinted):
    """A client id is a GUID or 20 to 40 letters and digits (the bounds found untested by mutation testing)."""
    finding = only(run(rs256_token(aud=aud)), "AUDIENCE_MISMATCH")
    assert (finding.remediation is not None and "client id" in finding.remediation) is hinted


def test_a_client_id_audience_is_not_hinted_as_one_to_a_policy_that_expects_client_ids():
    """Found by mutation testing: a policy listing a client id is told nothing about another client id."""
    result = run(rs256_token(aud="0oa1b2c3d4e5f6g7h8i9"), audiences=["0oaZZZZZZZZZZZZZZZZZ"])
    finding = only(result, "AUDIENCE_MISMATCH")
    assert finding.remediation is None


def test_the_cognito_hint_is_given_only_to_a_policy_reading_aud():
    """Found by mutation testing: under `audience_claim: azp` the hint said to read client_id, untested."""
    token = rs256_token(aud=None, client_id="4a1b2c3d4e5f6g7h8i9j0k1l2m", token_use="access")
    finding = only(run(token, audience_claim="azp"), "AUDIENCE_MISMATCH")
    assert finding.remediation == "This policy reads the audience from 'azp', which the token lacks."


def test_cognito_access_token_without_aud_points_at_client_id():
    token = rs256_token(aud=None, client_id="4a1b2c3d4e5f6g7h8i9j0k1l2m", token_use="access")
    finding = only(run(token), "AUDIENCE_MISMATCH")
    assert "client_id" in finding.remediation and "Cognito" in finding.remediation
    accepted = run(token, audiences=["4a1b2c3d4e5f6g7h8i9j0k1l2m"], audience_claim="client_id")
    assert accepted.valid is True, codes(accepted)
    rejected = run(token, audiences=["another-client"], audience_claim="client_id")
    assert only(rejected, "AUDIENCE_MISMATCH").evidence["claim"] == "client_id"


def test_an_id_token_under_a_client_id_audience_policy_is_told_to_send_the_access_token():
    """Found by a review: a Cognito ID token (its audience in `aud`, no `client_id`) under the cognito preset's
    policy was told Auth0's advice about the 'audience' parameter."""
    token = rs256_token(client_id=None, token_use="id")
    finding = only(run(token, audience_claim="client_id"), "AUDIENCE_MISMATCH")
    assert "'client_id'" in finding.remediation and "ID token" in finding.remediation
    assert "Auth0" not in finding.remediation
    other = only(run(rs256_token(), audience_claim="azp"), "AUDIENCE_MISMATCH")
    assert other.remediation == "This policy reads the audience from 'azp', which the token lacks."


# --- issuer -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("expected, actual, hint", [
    ("https://acme.auth0.com/", "https://acme.auth0.com", "trailing slash"),
    ("https://acme.okta.com", "https://acme.okta.com/", "trailing slash"),
    ("https://login.example.com/tenant", "https://Login.Example.com/Tenant", "letter case"),
    ("https://issuer.example.com/", "http://issuer.example.com/", "scheme"),
    ("https://accounts.google.com", "accounts.google.com", "a scheme one of them lacks"),
    ("accounts.google.com", "https://Accounts.Google.com", "a scheme one of them lacks"),
], ids=["missing-slash", "extra-slash", "case", "scheme", "no-scheme-in-the-token", "no-scheme-in-the-policy"])
def test_issuer_that_differs_by_one_detail_says_which(expected, actual, hint):
    result = run(rs256_token(iss=actual), issuer=expected)
    finding = only(result, "ISSUER_MISMATCH")
    assert finding.evidence == {"expected": expected, "actual": actual}
    assert hint in finding.remediation
    if hint == "trailing slash":  # the value to configure is the token's, not the policy's again
        assert f"configure {actual!r}" in finding.remediation and f"{expected!r}" not in finding.remediation
    assert result.valid is False


@pytest.mark.parametrize("iss", ["https://evil.example.net/", ISSUER + "?tenant=other"],
                         ids=["other-host", "same-scheme-host-and-path"])
def test_unrelated_issuer_has_no_misleading_hint(iss):
    """An issuer with the same scheme, host and path is not told it differs by scheme (found by mutation testing)."""
    finding = only(run(rs256_token(iss=iss)), "ISSUER_MISMATCH")
    assert finding.remediation is None


@pytest.mark.parametrize("iss", [
    "https://[issuer.example.com/", "https://issuer.example.com]/", "http://[zz]/", "https://issuer.example.com\uff03/",
], ids=["unclosed-bracket", "stray-bracket", "bad-ip-literal", "nfkc-invalid-netloc"])
def test_issuer_that_urlsplit_refuses_is_a_mismatch_not_a_server_error(iss):
    result = run(rs256_token(iss=iss))
    finding = only(result, "ISSUER_MISMATCH")
    assert finding.evidence["actual"] == iss
    assert finding.remediation is None
    assert result.valid is False


def test_an_issuer_that_urlsplit_refuses_is_still_compared_with_the_next_configured_issuer():
    """Found by mutation testing: the first issuer's refused URL split could end the hints for the others."""
    issuers = ["https://old.example.com/", "https://[tenant.example.com/"]
    finding = only(run(rs256_token(iss="https://[Tenant.example.com/"), issuer=issuers), "ISSUER_MISMATCH")
    assert "letter case" in finding.remediation


def test_missing_issuer_fails():
    assert only(run(rs256_token(iss=None)), "ISSUER_MISMATCH").message == "'iss' is missing"


@pytest.mark.parametrize("iss", [42, [ISSUER], {"iss": ISSUER}], ids=["number", "array-of-the-issuer", "object"])
def test_an_issuer_that_is_not_a_string_is_a_mismatch_not_a_server_error(iss):
    """Found by mutation testing: no test sent a non-string `iss` (the issuer hints read it as text)."""
    result = run(rs256_token(iss=iss))
    finding = only(result, "ISSUER_MISMATCH")
    assert finding.message == "'iss' is not a string" and finding.evidence == {"expected": ISSUER, "actual": iss}
    assert result.valid is False


@pytest.mark.parametrize("iss, valid", [
    ("https://old.example.com/", True), ("https://new.example.com/", True), ("https://other.example.com/", False),
], ids=["first", "second", "neither"])
def test_issuer_list_accepts_any_of_them(iss, valid):
    result = run(rs256_token(iss=iss), issuer=["https://old.example.com/", "https://new.example.com/"])
    assert result.valid is valid
    if not valid:
        assert only(result, "ISSUER_MISMATCH").evidence["expected"] == ["https://old.example.com/",
                                                                        "https://new.example.com/"]


# --- lifetime -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("iat, exp, valid", [
    (NOW - 10, NOW - 10 + 3600, True),
    (NOW - 10, NOW - 10 + 3601, False),
    (None, NOW + 60, False),
], ids=["exactly-max", "one-second-over", "missing-iat"])
@pytest.mark.parametrize("header", [{}, FULL_PIPELINE], ids=["fast-path", "full-pipeline"])
def test_max_ttl_bounds_exp_minus_iat(iat, exp, valid, header):
    result = run(mint(claims(iat=iat, exp=exp), key_for("RS256"), header=header), max_ttl_seconds=3600)
    assert result.valid is valid
    assert result.statuses["lifetime"] == ("pass" if valid else "fail")
    if not valid:
        finding = only(result, "TOKEN_LIFETIME_EXCEEDED")
        if iat is None:
            assert finding.evidence["missing"] == ["iat"]
        else:
            assert finding.evidence["exceeded_by_seconds"] == 1


@pytest.mark.parametrize("header", [{}, FULL_PIPELINE], ids=["fast-path", "full-pipeline"])
def test_lifetime_is_skipped_without_max_ttl(header):
    assert run(mint(claims(iat=None), key_for("RS256"), header=header)).statuses["lifetime"] == "skip"


# --- token type -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("policy_type, typ, valid", [
    ("at+jwt", "at+jwt", True),
    ("at+jwt", "application/at+jwt", True),
    ("at+jwt", "AT+JWT", True),
    ("at+jwt", "Application/AT+JWT", True),
    ("application/at+jwt", "at+jwt", True),
    ("at+jwt", "JWT", False),
    ("at+jwt", None, False),
    ("JWT", "jwt", True),
], ids=["exact", "with-prefix", "upper-case", "prefix-mixed-case", "policy-with-prefix", "typ-JWT", "typ-missing",
        "JWT-case-insensitive"])
@pytest.mark.parametrize("header", [{}, FULL_PIPELINE], ids=["fast-path", "full-pipeline"])
def test_token_type_matches_typ_case_insensitively_with_optional_prefix(policy_type, typ, valid, header):
    token = mint(claims(), key_for("RS256"), header={"typ": typ, **header})
    result = run(token, token_type=policy_type)
    assert result.valid is valid, codes(result)
    assert result.statuses["token_type"] == ("pass" if valid else "fail")
    if not valid:
        finding = only(result, "TYP_INVALID")
        assert finding.evidence["actual"] == typ


def test_typ_jwt_against_at_jwt_remediation_mentions_idps_that_send_jwt():
    finding = only(run(rs256_token(), token_type="at+jwt"), "TYP_INVALID")
    assert "at+jwt" in finding.remediation and "token_type" in finding.remediation


@pytest.mark.parametrize("marker", [{"nonce": "n-0S6_WzA2Mj"}, {"at_hash": "77QmUPtjPfzWtF2AnpK9RQ"},
                                    {"token_use": "id"}], ids=["nonce", "at_hash", "token_use-id"])
def test_id_token_against_an_access_token_policy_is_a_kind_mismatch_warning(marker):
    result = run(rs256_token(**marker), token_type="at+jwt")
    warning = only(result, "TOKEN_KIND_MISMATCH")
    assert warning.severity == "warning"
    assert "access token" in warning.remediation
    assert only(result, "TYP_INVALID").remediation == "This is an ID token; send the access token instead."


def test_token_use_id_warns_even_without_token_type():
    result = run(rs256_token(token_use="id"))
    assert only(result, "TOKEN_KIND_MISMATCH").severity == "warning"
    assert result.valid is True
    assert result.statuses["token_type"] == "pass"
    assert result.summary == "Token is valid, with 1 warning (TOKEN_KIND_MISMATCH)."


@pytest.mark.parametrize("token_type, status", [(None, "skip"), ("JWT", "pass")], ids=["no-token-type", "typ-jwt"])
def test_nonce_without_an_access_token_type_policy_is_not_flagged(token_type, status):
    """validation.md: the ID-token warning is for a policy whose token_type is at+jwt, not for any token_type
    (found by mutation testing)."""
    result = run(rs256_token(nonce="n"), token_type=token_type)
    assert result.findings == [] and result.statuses["token_type"] == status


# --- required claims, values and scopes -----------------------------------------------------------------------------

def test_every_missing_required_claim_is_its_own_finding():
    result = run(rs256_token(), required_claims=["sub", "email", "org_id"])
    missing = [item.evidence["claim"] for item in result.findings if item.code == "REQUIRED_CLAIM_MISSING"]
    assert missing == ["email", "org_id"]
    assert result.statuses["required_claims"] == "fail"


@pytest.mark.parametrize("actual, expected, valid", [
    ("true", True, False),
    (True, "true", False),
    (True, True, True),
    ("true", "true", True),
    (1, True, False),
    (1, 1.0, True),
    (["admin", "dev"], "dev", True),
    (["admin", "dev"], "ops", False),
    (["admin", "dev"], ["admin", "dev"], True),
    ([["admin", "dev"], "ops"], ["admin", "dev"], True),
    (["admin", "dev", "ops"], ["admin", "dev"], False),
    ({"plan": "pro"}, {"plan": "pro"}, True),
    ("pro", "Pro", False),
    ("admin", "a", False),
], ids=["string-true-vs-bool", "bool-vs-string-true", "bool-equal", "string-equal", "one-vs-true", "int-vs-float",
        "array-contains", "array-lacks", "array-equal", "array-contains-the-array", "array-is-no-set",
        "object-equal", "case-differs", "a-string-is-no-array-of-its-letters"])
def test_required_custom_claim_uses_json_equality(actual, expected, valid):
    result = run(rs256_token(**{"https://myapp.com/role": actual}),
                 required_custom_claims={"https://myapp.com/role": expected})
    assert result.valid is valid, codes(result)
    if not valid:
        finding = only(result, "CLAIM_VALUE_MISMATCH")
        assert finding.evidence == {"claim": "https://myapp.com/role", "expected": expected, "actual": actual}


def test_string_true_versus_bool_true_remediation_explains_the_type():
    finding = only(run(rs256_token(ref_protected="true"), required_custom_claims={"ref_protected": True}),
                   "CLAIM_VALUE_MISMATCH")
    assert "string" in finding.remediation and "boolean" in finding.remediation
    other = only(run(rs256_token(ref_protected="yes"), required_custom_claims={"ref_protected": True}),
                 "CLAIM_VALUE_MISMATCH")
    assert other.remediation is None  # "yes" is not the boolean spelt as a string (found by mutation testing)


def test_custom_claim_name_with_slashes_is_one_name_not_a_path():
    token = rs256_token(**{"https://myapp.com": {"plan": "pro"}})
    finding = only(run(token, required_custom_claims={"https://myapp.com/plan": "pro"}), "REQUIRED_CLAIM_MISSING")
    assert finding.evidence["claim"] == "https://myapp.com/plan"
    assert "one claim name" in finding.remediation


@pytest.mark.parametrize("grant", [
    {"scope": "read:users write:users openid"},
    {"scp": ["read:users", "write:users"]},
    {"scp": "read:users write:users"},
    {"permissions": ["read:users", "write:users"]},
    {"scope": "read:users", "permissions": ["write:users"]},
], ids=["scope-string", "scp-array", "scp-string", "permissions-array", "scope-plus-permissions"])
def test_required_scopes_are_found_in_scope_scp_or_permissions(grant):
    result = run(rs256_token(**grant), required_scopes=["read:users", "write:users"])
    assert result.valid is True, codes(result)


@pytest.mark.parametrize("grant, hint", [
    ({"scope": ["read:users", "write:users"]}, "in a 'scope' array"),
    ({"permissions": "read:users write:users"}, "in a 'permissions' string"),
    ({"scope": "read:users,write:users"}, "separates scopes with commas"),
    ({"scp": "openid,read:users"}, "'scp' separates scopes with commas"),
    ({"scope": "openid\tread:users"}, "other white space than the space character"),
    ({"scope": "read:users\u00a0admin"}, "other white space than the space character"),
    ({"scp": "openid\nread:users"}, "'scp' separates scopes with other white space"),
    ({"scope": "read:users\t"}, "other white space than the space character"),
], ids=["scope-as-array", "permissions-as-string", "comma-separated-scope", "comma-separated-scp",
        "tab-separated-scope", "nbsp-separated-scope", "newline-separated-scp", "tab-after-the-scope"])
def test_scopes_in_the_wrong_shape_are_not_granted_and_the_hint_says_where_they_are(grant, hint):
    """Found by a review: the hint sent developers to the IdP's console to grant a scope the token held."""
    result = run(rs256_token(**grant), required_scopes=["read:users"])
    assert codes(result) == ["SCOPE_MISSING"]
    assert hint in result.findings[0].remediation and "Grant the scope" not in result.findings[0].remediation


def test_a_required_scope_holding_a_space_is_told_as_the_policys_mistake_not_the_tokens():
    """Found by a review: `required_scopes: ["read write"]` told a token granting `read write` that it separated
    its scopes with commas."""
    result = run(rs256_token(scope="read write"), required_scopes=["read write"])
    assert codes(result) == ["SCOPE_MISSING"]
    assert result.findings[0].remediation.startswith("The policy requires a scope holding white space")
    padded = run(rs256_token(scope="read"), required_scopes=[" read"])  # white space at an end only
    assert padded.findings[0].remediation.startswith("The policy requires a scope holding white space")
    plain = run(rs256_token(scope="read write"), required_scopes=["admin"])
    assert "commas" not in plain.findings[0].remediation and "Grant the scope" in plain.findings[0].remediation


def test_every_missing_scope_is_its_own_finding_with_required_granted_missing():
    result = run(rs256_token(scope="read:users openid"), required_scopes=["read:users", "write:users", "delete:users"])
    scope_findings = [item for item in result.findings if item.code == "SCOPE_MISSING"]
    assert [item.evidence["scope"] for item in scope_findings] == ["write:users", "delete:users"]
    for item in scope_findings:
        assert item.evidence["required"] == ["read:users", "write:users", "delete:users"]
        assert item.evidence["granted"] == ["read:users", "openid"]
        assert item.evidence["missing"] == ["write:users", "delete:users"]
    assert result.summary == "Token is NOT valid: 2 errors (SCOPE_MISSING)."


@pytest.mark.parametrize("separator", ["\u00a0", "\t", "\x1c", "\u2028", "\n"])
def test_scopes_are_separated_by_spaces_only(separator):
    """RFC 6749 3.3: scope tokens are separated by %x20. `read<NBSP>admin` is one (odd) scope, not `admin`."""
    result = run(rs256_token(scope=f"read{separator}admin"), required_scopes=["admin"])
    assert codes(result) == ["SCOPE_MISSING"]
    assert run(rs256_token(scope="read  admin "), required_scopes=["admin", "read"]).valid is True


def test_a_hostile_token_s_scopes_are_shown_bounded_in_each_scope_missing_finding():
    """Thousands of granted scopes, repeated in each of many SCOPE_MISSING findings, would make the answer many
    times the token: each finding shows the first ones (about 1 KiB) and how many there are."""
    granted = [f"s{index:04d}" for index in range(1500)]
    required = [f"need:{index}" for index in range(64)]
    result = run(rs256_token(scope=" ".join(granted)), required_scopes=required)
    findings = [item for item in result.findings if item.code == "SCOPE_MISSING"]
    assert len(findings) == 64
    for item in findings:
        assert item.evidence["granted_count"] == 1500
        assert item.evidence["granted"] == granted[:len(item.evidence["granted"])]
        assert 0 < len(" ".join(item.evidence["granted"])) <= 1024
    assert len(msgspec.json.encode(result)) < 200_000  # it was 1.5 MB


def test_a_token_missing_many_scopes_reads_its_scopes_once_and_the_straight_line_builds_no_hint(monkeypatch):
    """Found by a review: a 16 KB `scope` was split 4 times for each missing scope, and the straight line built
    every finding and hint only to ask whether there was one, then the explaining pipeline built them again: a
    forged token missing 64 scopes cost 100x a valid one."""
    from app.checks import claims as checks

    reads: list[int] = []
    unread = checks._unread_scopes
    monkeypatch.setattr(checks, "_unread_scopes", lambda claims: reads.append(1) or unread(claims))
    result = run(rs256_token(scope="a," * 5000 + "need:1"), required_scopes=[f"need:{index}" for index in range(64)])
    findings = [item for item in result.findings if item.code == "SCOPE_MISSING"]
    assert len(findings) == 64 and reads == [1]  # a comma-separated string is one (odd) scope
    assert "separates scopes with commas" in findings[1].remediation  # need:1 is held, in the wrong shape
    assert "separates scopes with commas" in only(
        run(rs256_token(scope="a,need:1"), required_scopes=["need:1"]), "SCOPE_MISSING").remediation


@pytest.mark.parametrize("iss, issuer, named", [
    ("https://\u212aeys.example.com/", "https://keys.example.com/", "U+212A (KELVIN SIGN)"),
    ("https://issuer.example.\uff43om/", ISSUER, "U+FF43 (FULLWIDTH LATIN SMALL LETTER C)")])
def test_a_look_alike_issuer_is_told_as_one_not_as_a_letter_case_typo(iss, issuer, named):
    """Found by a review: the Kelvin sign for K got "the two differ only by letter case", which makes a spoofed
    issuer look like a harmless typo."""
    finding = only(run(rs256_token(iss=iss), issuer=issuer), "ISSUER_MISMATCH")
    assert named in finding.remediation and "letter case" not in finding.remediation
    case = only(run(rs256_token(iss=ISSUER.upper()), issuer=ISSUER), "ISSUER_MISMATCH")
    assert "differ only by letter case" in case.remediation
    # Both non-ASCII, differing by case: a letter-case typo (found by the next review)
    books = only(run(rs256_token(iss="https://BÜCHER.example/"), issuer="https://bücher.example/"), "ISSUER_MISMATCH")
    assert "differ only by letter case" in books.remediation


def test_a_required_claim_sent_as_null_is_missing():
    """`iss: null` is a missing issuer; `sub: null` is no more a subject (OIDC Core 5.1: omit, do not send null)."""
    token = mint({**claims(), "sub": None}, key_for("RS256"))
    finding = only(run(token, required_claims=["sub"]), "REQUIRED_CLAIM_MISSING")
    assert finding.message == "required claim 'sub' is null" and finding.evidence == {"claim": "sub"}
    assert run(rs256_token(), required_claims=["sub"]).valid is True
    null_aud = mint({**claims(), "aud": None, "client_id": AUDIENCE}, key_for("RS256"))  # aud is no audience here
    assert codes(run(null_aud, required_claims=["aud"], audience_claim="client_id")) == ["REQUIRED_CLAIM_MISSING"]
    null_exp = mint({**claims(), "exp": None}, key_for("RS256"))  # judged by the time check alone, not twice
    assert [item.code for item in run(null_exp, required_claims=["exp"]).findings if item.severity == "error"
            ] == ["CLAIM_INVALID"]


@pytest.mark.parametrize("require_exp, checks", [(True, ["time"]), (False, ["required_claims"])])
def test_a_missing_exp_listed_in_required_claims_is_reported_once(require_exp, checks):
    """Found by a review: with require_exp, the time check and required_claims both reported it."""
    result = run(mint({key: value for key, value in claims().items() if key != "exp"}, key_for("RS256")),
                 required_claims=["exp"], require_exp=require_exp)
    assert [(item.code, item.check) for item in result.findings] == [("REQUIRED_CLAIM_MISSING", check)
                                                                     for check in checks]


def test_required_claims_status_is_skip_when_nothing_is_required():
    assert run(rs256_token()).statuses["required_claims"] == "skip"


# --- reporting everything, and what `valid` means -------------------------------------------------------------------

def test_findings_report_every_failure_not_only_the_first():
    token = rs256_token(iat=NOW - 7200, exp=NOW - 3600, aud="https://other.example.com", iss="https://evil.example.net/")
    result = run(token, required_scopes=["read"], max_ttl_seconds=60)
    assert codes(result) == ["ISSUER_MISMATCH", "AUDIENCE_MISMATCH", "TOKEN_EXPIRED", "TOKEN_LIFETIME_EXCEEDED",
                             "SCOPE_MISSING"]
    assert result.valid is False


def test_claim_checks_still_run_when_the_signature_fails():
    header, payload, signature = rs256_token(exp=NOW - 3600, aud="https://other.example.com").split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"
    result = run(forged)
    assert codes(result) == ["SIGNATURE_INVALID", "AUDIENCE_MISMATCH", "TOKEN_EXPIRED"]
    assert result.statuses["issuer"] == "pass" and result.statuses["signature"] == "fail"


@pytest.mark.parametrize("overrides, valid", [
    ({}, True),
    ({"token_use": "id"}, True),
    ({"aud": "x"}, False),
    ({"token_use": "id", "aud": "x"}, False),
], ids=["clean", "warning-only", "one-error", "warning-and-error"])
def test_valid_is_true_exactly_when_no_finding_is_an_error(overrides, valid):
    result = run(rs256_token(**overrides))
    errors = [item for item in result.findings if item.severity == "error"]
    assert result.valid is (not errors)
    assert result.valid is valid
    assert result.summary.startswith("Token is valid" if valid else "Token is NOT valid")


# --- verified-token cache ---------------------------------------------------------------------------------------------

def test_cache_hit_re_runs_the_time_check():
    cache = VerifiedCache(16)
    token = rs256_token(exp=NOW + 3600)
    first = run(token, now=NOW, cache=cache)
    assert first.valid is True and first.expires_in == 3600
    later = run(token, now=NOW + 3600 + SKEW, cache=cache)
    assert cache.hits == 1
    assert codes(later) == ["TOKEN_EXPIRED"]
    assert later.valid is False and later.expires_in == -SKEW
    assert later.statuses["signature"] == "pass" and later.statuses["time"] == "fail"


def test_cache_hit_of_a_not_yet_valid_token_becomes_valid_when_nbf_arrives():
    cache = VerifiedCache(16)
    token = rs256_token(nbf=NOW + 600)
    assert codes(run(token, now=NOW, cache=cache)) == ["TOKEN_NOT_YET_VALID"]
    assert run(token, now=NOW + 600, cache=cache).valid is True
    assert cache.hits == 1


def test_cache_hit_keeps_a_bad_signature_bad():
    cache = VerifiedCache(16)
    header, payload, signature = rs256_token().split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"
    assert codes(run(forged, cache=cache)) == ["SIGNATURE_INVALID"]
    assert codes(run(forged, now=NOW + 1, cache=cache)) == ["SIGNATURE_INVALID"]
    assert cache.hits == 1


def test_cache_is_keyed_by_policy_so_another_policy_is_checked_afresh():
    cache = VerifiedCache(16)
    token = rs256_token()
    assert run(token, cache=cache).valid is True
    other = run(token, cache=cache, audiences=["https://other.example.com"])
    assert codes(other) == ["AUDIENCE_MISMATCH"]
    assert cache.hits == 0


def test_claims_and_header_are_returned_for_diagnosis():
    result = run(rs256_token(aud="x"))
    assert result.claims is not None and result.claims["iss"] == ISSUER
    assert result.header == {"alg": "RS256", "typ": "JWT", "kid": "rs256-1"}
    assert result.key is not None and result.key.source == "public_key"


# --- found by mutation testing: claim checks no test pinned --------------------------------------------------------

@pytest.mark.parametrize("pipeline", [{}, FULL_PIPELINE], ids=["straight-line", "full-pipeline"])
def test_an_audience_array_matching_in_a_later_item_is_accepted_on_both_paths(pipeline):
    token = mint(claims(aud=["https://other.example.com", AUDIENCE]), key_for("RS256"), header=pipeline)
    result = run(token)
    assert result.valid is True and "AUDIENCE_MISMATCH" not in codes(result)


@pytest.mark.parametrize("actual, valid", [
    ({"role": "admin"}, True), ({}, False), ({"role": "admin", "tier": "x"}, False), ([{"role": "admin"}], True),
], ids=["same-object", "empty-object", "more-members", "inside-an-array"])
def test_a_required_object_claim_is_equal_member_for_member(actual, valid):
    result = run(rs256_token(org=actual), required_custom_claims={"org": {"role": "admin"}})
    assert result.valid is valid, codes(result)


@pytest.mark.parametrize("actual", [[True], True, [1.5], ["1"]], ids=["true-in-an-array", "true", "other-number",
                                                                      "string-in-an-array"])
def test_a_required_number_is_not_met_by_a_boolean_or_a_string_even_inside_an_array(actual):
    result = run(rs256_token(level=actual), required_custom_claims={"level": 1})
    assert result.valid is False and "CLAIM_VALUE_MISMATCH" in codes(result)
    assert run(rs256_token(level=[2, 1]), required_custom_claims={"level": 1}).valid is True


@pytest.mark.parametrize("claim, code", [("aud", "AUDIENCE_MISMATCH"), ("iss", "ISSUER_MISMATCH")])
def test_a_required_claim_that_is_null_is_told_once_by_its_own_check(claim, code):
    result = run(mint({**claims(), claim: None}, key_for("RS256")), required_claims=[claim])  # present, null
    assert code in codes(result) and "REQUIRED_CLAIM_MISSING" not in codes(result)


@pytest.mark.parametrize("aud, says", [([], "contains none of the expected audiences"), (0, "not a string"),
                                       (False, "not a string")], ids=["empty-array", "zero", "false"])
def test_an_audience_present_but_empty_or_of_another_type_is_not_called_missing(aud, says):
    finding = only(run(rs256_token(aud=aud)), "AUDIENCE_MISMATCH")
    assert says in finding.message and "missing" not in finding.message
    assert finding.remediation is None  # an empty array is not "only /userinfo" (found by mutation testing)


def test_an_audience_missing_a_trailing_slash_the_policy_has_says_so():
    finding = only(run(rs256_token(aud=AUDIENCE), audiences=[AUDIENCE + "/"]), "AUDIENCE_MISMATCH")
    assert "trailing slash" in finding.remediation


@pytest.mark.parametrize("before, hinted", [(15, True), (16, False)], ids=["16th-value", "17th-value"])
def test_a_near_miss_audience_is_hinted_only_among_the_first_16_values(before, hinted):
    """Found by mutation testing: the bound on the values a hint reads (a forged token's thousand audiences buy no
    more work) was untested."""
    aud = [f"https://other-{index}.example.com" for index in range(before)] + [AUDIENCE]
    finding = only(run(rs256_token(aud=aud), audiences=[AUDIENCE + "/"]), "AUDIENCE_MISMATCH")
    assert (finding.remediation is not None and "trailing slash" in finding.remediation) is hinted
    assert finding.evidence["actual"] == aud  # the evidence is the claim as sent, whole


def test_a_token_with_client_id_but_no_token_use_gets_the_audience_parameter_hint_not_cognitos():
    finding = only(run(rs256_token(aud=None, client_id="4a1b2c3d4e5f6g7h8i9j0k1l2m")), "AUDIENCE_MISMATCH")
    assert "audience" in finding.remediation and "Cognito" not in finding.remediation


def test_a_granted_scope_just_under_the_evidence_bound_is_shown():
    scope = "s" * 1023
    finding = only(run(rs256_token(scope=scope), required_scopes=["read"]), "SCOPE_MISSING")
    assert finding.evidence == {**finding.evidence, "granted": [scope]} and "granted_count" not in finding.evidence
