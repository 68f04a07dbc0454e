"""/v1/inspect/token: each suspicious pattern of the spec is flagged by a token made for it, and only by it."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from app.findings import INSPECT_CODES
from tests.conftest import NOW, claims, rs256_policy, rs256_token
from tests.mint import b64, key_for, mint, segment

URL = "/v1/inspect/token"


def inspect(client: Any, token: str) -> dict[str, Any]:
    response = client.post(URL, json={"token": token})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["validated"] is False
    assert "decoded does not mean validated" in body["warning"].lower()
    assert len(body["token_id"]) == 16
    assert [detail["code"] for detail in body["details"]] == body["suspicious_warnings"]
    assert all(detail["message"] for detail in body["details"])
    return body


def rs(**overrides: Any) -> str:
    return rs256_token(**overrides)


def with_header(**header: Any) -> str:
    return mint(claims(), key_for("RS256"), header=header)


def unsigned(alg: str) -> str:
    return f"{segment({'alg': alg, 'typ': 'JWT'})}.{segment(claims())}."


CASES: list[tuple[str, Callable[[], str], set[str]]] = [
    ("ALG_NONE", lambda: unsigned("none"), {"ALG_NONE"}),
    ("ALG_NONE", lambda: unsigned("nOnE"), {"ALG_NONE"}),
    ("ALG_SYMMETRIC", lambda: mint(claims(), key_for("HS256")), {"ALG_SYMMETRIC"}),
    ("HEADER_KEY_PRESENT", lambda: with_header(jwk=key_for("RS256", "attacker").jwk), {"HEADER_KEY_PRESENT"}),
    ("HEADER_KEY_PRESENT", lambda: with_header(jku="https://attacker.example/jwks"), {"HEADER_KEY_PRESENT"}),
    ("HEADER_KEY_PRESENT", lambda: with_header(x5u="https://attacker.example/c.pem"), {"HEADER_KEY_PRESENT"}),
    ("HEADER_KEY_PRESENT", lambda: with_header(x5c=["MIIB"]), {"HEADER_KEY_PRESENT"}),
    ("KID_SUSPICIOUS", lambda: with_header(kid="../../../../dev/null"), {"KID_SUSPICIOUS"}),
    ("KID_SUSPICIOUS", lambda: with_header(kid="k1' UNION SELECT 'secret"), {"KID_SUSPICIOUS"}),
    ("KID_SUSPICIOUS", lambda: with_header(kid='k1"'), {"KID_SUSPICIOUS"}),
    ("KID_SUSPICIOUS", lambda: with_header(kid="k1\x00"), {"KID_SUSPICIOUS"}),
    ("KID_SUSPICIOUS", lambda: with_header(kid="k1|ls\n"), {"KID_SUSPICIOUS"}),
    ("KID_SUSPICIOUS", lambda: with_header(kid=7), {"KID_SUSPICIOUS"}),
    ("KID_SUSPICIOUS", lambda: with_header(kid="\u009b31m"), {"KID_SUSPICIOUS"}),  # C1 CSI (found by a review)
    ("KID_SUSPICIOUS", lambda: with_header(kid="a\u0085b"), {"KID_SUSPICIOUS"}),  # NEL
    ("KID_SUSPICIOUS", lambda: with_header(kid="..secret"), {"KID_SUSPICIOUS"}),  # a parent directory
    ("KID_SUSPICIOUS", lambda: with_header(kid="keys\\k1"), {"KID_SUSPICIOUS"}),  # a Windows path
    ("KID_SUSPICIOUS", lambda: with_header(kid="k1`id`"), {"KID_SUSPICIOUS"}),  # a shell's command substitution
    ("KID_SUSPICIOUS", lambda: with_header(kid="k1\x7f"), {"KID_SUSPICIOUS"}),  # DEL
    ("CRIT_PRESENT", lambda: with_header(crit=["exp"], exp=NOW), {"CRIT_PRESENT"}),
    ("CRIT_PRESENT", lambda: with_header(crit=[]), {"CRIT_PRESENT"}),  # present, if empty (RFC 7515 forbids it)
    ("EXP_MISSING", lambda: rs(exp=None), {"EXP_MISSING"}),
    ("LONG_LIFETIME", lambda: rs(iat=NOW - 10, exp=NOW - 10 + 24 * 3600 + 1), {"LONG_LIFETIME"}),
    ("EXPIRED", lambda: rs(exp=NOW - 1), {"EXPIRED"}),
    ("EXPIRED", lambda: rs(exp=NOW), {"EXPIRED"}),
    ("NOT_YET_VALID", lambda: rs(nbf=NOW + 1), {"NOT_YET_VALID"}),
    ("IAT_IN_FUTURE", lambda: rs(iat=NOW + 1), {"IAT_IN_FUTURE"}),
    ("AUD_MISSING", lambda: rs(aud=None), {"AUD_MISSING"}),
    ("AUD_USERINFO", lambda: rs(aud="https://acme.auth0.com/userinfo"), {"AUD_USERINFO"}),
    ("AUD_USERINFO", lambda: rs(aud=["https://acme.auth0.com/userinfo"]), {"AUD_USERINFO"}),
    ("ID_TOKEN", lambda: rs(nonce="n-0S6_WzA2Mj"), {"ID_TOKEN"}),
    ("ID_TOKEN", lambda: rs(at_hash="77QmUPtjPfzWtF2AnpK9RQ"), {"ID_TOKEN"}),
    ("ID_TOKEN", lambda: rs(token_use="id"), {"ID_TOKEN"}),
    ("BEARER_PREFIX", lambda: "Bearer " + rs(), {"BEARER_PREFIX"}),
    ("OPAQUE_TOKEN", lambda: "8xLOxBtZp8", {"OPAQUE_TOKEN", "MALFORMED_TOKEN"}),
    ("OPAQUE_TOKEN", lambda: "Bearer 8xLOxBtZp8", {"BEARER_PREFIX", "OPAQUE_TOKEN", "MALFORMED_TOKEN"}),
    ("MALFORMED_TOKEN", lambda: rs().rsplit(".", 1)[0] + ".a=", {"MALFORMED_TOKEN"}),
    ("MALFORMED_TOKEN", lambda: "a.b.c.d.e", {"MALFORMED_TOKEN"}),
]
IDS = ["alg-none", "alg-none-mixed-case", "hs256", "jwk", "jku", "x5u", "x5c", "kid-path", "kid-quote",
       "kid-double-quote", "kid-nul", "kid-newline", "kid-not-string", "kid-c1-csi", "kid-c1-nel", "kid-dot-dot",
       "kid-backslash", "kid-backtick", "kid-del", "crit", "crit-empty", "no-exp", "over-24h", "expired",
       "exp-equals-now", "nbf-future", "iat-future", "no-aud", "aud-userinfo", "aud-userinfo-array", "nonce",
       "at_hash", "token_use-id", "bearer", "opaque", "bearer-opaque", "bad-base64", "jwe"]


def test_case_table_covers_every_inspect_code():
    assert {code for code, _, _ in CASES} == set(INSPECT_CODES)


@pytest.mark.parametrize("code, make_token, expected", CASES, ids=IDS)
def test_suspicious_pattern_is_flagged_by_a_token_made_for_it(client, code, make_token, expected):
    body = inspect(client, make_token())
    assert code in body["suspicious_warnings"]
    assert set(body["suspicious_warnings"]) == expected


def test_clean_token_has_no_suspicious_warnings(client):
    token = rs256_token()
    body = inspect(client, token)
    assert body["suspicious_warnings"] == [] and body["details"] == []
    assert body["decoded"]["header"] == {"alg": "RS256", "typ": "JWT", "kid": "rs256-1"}
    assert body["decoded"]["payload"] == claims()
    assert body["decoded"]["signature_segment"] == token.split(".")[2]


@pytest.mark.parametrize("iat, exp, long", [
    (NOW - 10, NOW - 10 + 24 * 3600, False), (NOW - 10, NOW - 10 + 24 * 3600 + 1, True),
], ids=["exactly-24h", "one-second-over"])
def test_long_lifetime_is_over_24_hours(client, iat, exp, long):
    assert ("LONG_LIFETIME" in inspect(client, rs(iat=iat, exp=exp))["suspicious_warnings"]) is long


@pytest.mark.parametrize("nbf, exp, long, since", [
    (None, NOW + 10 * 365 * 86400, True, "now"), (None, NOW + 24 * 3600, False, None),
    (NOW - 10, NOW - 10 + 24 * 3600 + 1, True, "`nbf`"), (NOW - 10, NOW - 10 + 24 * 3600, False, None),
], ids=["ten-years-from-now", "24h-from-now", "over-24h-after-nbf", "24h-after-nbf"])
def test_long_lifetime_without_iat_is_measured_from_nbf_else_from_now(client, nbf, exp, long, since):
    """Only `exp - iat` was measured: a ten-year token without `iat` was not flagged (found by a review)."""
    body = inspect(client, rs(iat=None, nbf=nbf, exp=exp))
    assert ("LONG_LIFETIME" in body["suspicious_warnings"]) is long
    if long:
        message = next(item["message"] for item in body["details"] if item["code"] == "LONG_LIFETIME")
        assert f"over 24 hours after {since} (the token has no `iat`)" in message


def test_long_lifetime_beside_an_iat_that_is_no_date_says_so_not_that_there_is_none(client):
    """Found by a review: it said "the token has no `iat`" beside IAT_IN_FUTURE's "`iat` is not a NumericDate"."""
    body = inspect(client, rs(iat="x", exp=NOW + 3 * 86400))
    message = next(item["message"] for item in body["details"] if item["code"] == "LONG_LIFETIME")
    assert message == "`exp` is over 24 hours after now (its `iat` is no NumericDate)."


@pytest.mark.parametrize("kid, says", [
    (7, "a JSON number"), (7.5, "a JSON number"), (True, "a JSON boolean"), (["k1"], "a JSON array"),
    ({"k": 1}, "a JSON object"),
])
def test_a_kid_that_is_not_a_string_is_told_as_such(client, kid, says):
    """It was told "contains path, quote or control characters", which an int has none of (found by a review)."""
    body = inspect(client, with_header(kid=kid))
    message = next(item["message"] for item in body["details"] if item["code"] == "KID_SUSPICIOUS")
    assert says in message and "not a string" in message


@pytest.mark.parametrize("kid", ["2024-06.signing", "v1.2.3", "key_v2~x", None],
                         ids=["one-dot", "dots-apart", "unreserved", "null"])
def test_an_ordinary_kid_and_a_null_one_are_not_suspicious(client, kid):
    """Found by mutation testing: only two dots in a row climb a directory, and a null `kid` is no `kid`, as
    validation reads it (checks/header.py)."""
    body = inspect(client, with_header(kid=kid))
    assert body["decoded"]["header"]["kid"] == kid and body["suspicious_warnings"] == []


def test_a_token_whose_signature_segment_alone_is_malformed_is_shown_decoded_with_its_other_warnings(client):
    """/v1/validate/jwt showed its header and claims, inspection `decoded: null` (found by a review)."""
    good = rs(exp=None)
    body = inspect(client, good + "=")
    assert body["decoded"]["payload"] == {key: value for key, value in claims().items() if key != "exp"}
    assert body["decoded"]["signature_segment"] == good.split(".")[2] + "="
    assert body["suspicious_warnings"] == ["MALFORMED_TOKEN", "EXP_MISSING"]
    assert body["details"][0]["message"].startswith("the signature")


@pytest.mark.parametrize("claim, value, code, says", [
    ("exp", str(NOW + 3600), "EXP_MISSING", "not a NumericDate"),
    ("exp", True, "EXP_MISSING", "not a NumericDate"),  # (found by mutation testing: only strings were sent)
    ("exp", None, "EXP_MISSING", "never expires"),
    ("aud", [], "AUD_MISSING", "names no audience"),
    ("aud", 42, "AUD_MISSING", "names no audience"),
    ("aud", [""], "AUD_MISSING", "names no audience"),  # (found by a review: arrays naming none were not told)
    ("aud", [1, None], "AUD_MISSING", "names no audience"),
    ("aud", "", "AUD_MISSING", "names no audience"),
    ("exp", (NOW + 3600) * 1000, "EXP_MISSING", "milliseconds"),
    # Found by a review: validation refuses these, and the inspection said nothing of them.
    ("nbf", str(NOW - 60), "NOT_YET_VALID", "not a NumericDate"),
    ("nbf", (NOW - 60) * 1000, "NOT_YET_VALID", "milliseconds"),
    ("iat", True, "IAT_IN_FUTURE", "not a NumericDate"),
    ("iat", 253_402_300_800, "IAT_IN_FUTURE", "after the year 9999"),
], ids=["exp-as-string", "exp-boolean", "exp-absent", "aud-empty-array", "aud-number", "aud-empty-string-item",
         "aud-no-string-item", "aud-empty-string", "exp-in-milliseconds",
         "nbf-as-string", "nbf-in-milliseconds",
        "iat-boolean", "iat-after-9999"])
def test_a_claim_present_but_unusable_is_flagged_like_an_absent_one(client, claim, value, code, says):
    body = inspect(client, rs(**{claim: value}))
    assert code in body["suspicious_warnings"]
    assert says in next(item["message"] for item in body["details"] if item["code"] == code)


@pytest.mark.parametrize("claim, code, says", [
    ("exp", "EXP_MISSING", "`exp` is not a NumericDate"), ("aud", "AUD_MISSING", INSPECT_CODES["AUD_MISSING"]),
], ids=["exp", "aud"])
def test_a_null_claim_is_told_as_validation_reads_it(client, claim, code, says):
    """Found by mutation testing: `exp: null` is there and no date (validation refuses it, not "never expires"),
    while `aud: null` names nothing, as an absent `aud` (validation: "'aud' is missing")."""
    body = inspect(client, mint({**claims(), claim: None}, key_for("RS256")))
    assert body["suspicious_warnings"] == [code]
    assert body["details"][0]["message"].startswith(says)


@pytest.mark.parametrize("token", ["Bearer", "bearer ", "Bearer " + rs256_token()])
def test_the_bearer_scheme_left_in_is_flagged_even_alone(client, token):
    assert "BEARER_PREFIX" in inspect(client, token)["suspicious_warnings"]


@pytest.mark.parametrize("padding", [" ", "\t", "\r\n"], ids=["space", "tab", "crlf"])
def test_a_token_sent_with_surrounding_whitespace_is_inspected_as_validation_reads_it(client, padding):
    """The whitespace validation ignores is taken off first: the answer, token id included, is the bare token's
    (found by mutation testing)."""
    token = rs256_token()
    assert inspect(client, f"{padding}{token}{padding}") == inspect(client, token)


@pytest.mark.parametrize("aud", [
    ["https://api.example.com", "https://acme.auth0.com/userinfo"], "https://api.example.com/userinfo/v2",
], ids=["beside-a-real-audience", "an-api-under-a-userinfo-path"])
def test_userinfo_beside_a_real_audience_or_within_an_apis_path_is_not_flagged(client, aud):
    body = inspect(client, rs(aud=aud))
    assert "AUD_USERINFO" not in body["suspicious_warnings"]


@pytest.mark.parametrize("prefix", ["Bearer ", "bearer\t", "Bearer  ", "Bearer \t ", "\r\n Bearer "],
                         ids=["space", "tab", "two-spaces", "white-space-run", "white-space-before"])
def test_bearer_prefix_is_flagged_and_the_token_behind_it_still_decoded(client, prefix):
    """Found by mutation testing: white space beyond one character around the scheme was never sent."""
    body = inspect(client, prefix + rs())
    assert body["decoded"]["payload"]["sub"] == "user-42"
    assert body["suspicious_warnings"] == ["BEARER_PREFIX"]


@pytest.mark.parametrize("text", ["{token}", " {token}\n", "Bearer {token}", "\tBearer  {token} ", "Bearer 8xLOxBtZp8"],
                         ids=["bare", "white-space-around", "bearer", "bearer-and-white-space", "bearer-opaque"])
def test_the_token_id_is_the_one_validation_gives_the_same_text(client, text):
    """Found by mutation testing: a log line's token_id finds the same request on both routes only if it is the
    fingerprint of the same text (the whole of it, Bearer scheme included, white space around it ignored)."""
    sent = text.format(token=rs())
    validated = client.post("/v1/validate/jwt", json={"token": sent, "policy": rs256_policy()})
    assert inspect(client, sent)["token_id"] == validated.json()["token_id"]


def test_time_claims_equal_to_now_are_not_flagged(client):
    body = inspect(client, rs(iat=NOW, nbf=NOW))
    assert not {"IAT_IN_FUTURE", "NOT_YET_VALID"} & set(body["suspicious_warnings"])


def test_a_token_whose_header_decodes_and_payload_does_not_is_told_malformed_by_both_routes(client):
    """Found by mutation testing: the header decoded without the payload was a case no test sent."""
    token = f"{segment({'alg': 'RS256', 'typ': 'JWT'})}.!!!.{b64(b'sig')}"
    assert "MALFORMED_TOKEN" in inspect(client, token)["suspicious_warnings"]
    response = client.post("/v1/validate/jwt", json={"token": token, "policy": {
        "issuer": "https://issuer.example.com/", "audiences": ["x"], "allowed_algs": ["HS256"], "secret": "s" * 32}})
    assert response.status_code == 200 and response.json()["valid"] is False
    assert response.json()["findings"][0]["code"] == "MALFORMED_TOKEN"


def test_undecodable_token_is_200_with_null_decoded_and_the_reason(client):
    body = inspect(client, "a.b")
    assert body["decoded"] is None
    detail = body["details"][-1]
    assert detail["code"] == "MALFORMED_TOKEN"
    assert "3" in detail["message"] and "segments" in detail["message"]


@pytest.mark.parametrize("alg", [["HS256"], {"alg": "HS256"}, 256, None, True],
                         ids=["array", "object", "number", "null", "bool"])
def test_alg_of_any_json_type_is_inspected_without_a_server_error(client, alg):
    token = f"{segment({'alg': alg})}.{segment(claims())}.{b64(b'sig')}"
    body = inspect(client, token)
    assert body["decoded"]["header"]["alg"] == alg
    assert "ALG_SYMMETRIC" not in body["suspicious_warnings"] and "ALG_NONE" not in body["suspicious_warnings"]


def test_inspection_holds_a_token_to_max_token_bytes_and_logs_its_token_id():
    import io
    import json

    import structlog
    from litestar.testing import TestClient

    from app.server import create_app
    from app.settings import Settings

    app = create_app(Settings(max_token_bytes=1024))
    app.asgi_handler.sink = structlog.BytesLogger(access := io.BytesIO())
    with TestClient(app) as small:
        body = small.post("/v1/inspect/token", json={"token": rs256_token() + "A" * 2000}).json()
    assert body["decoded"] is None and body["details"][0]["message"] == "the token is larger than MAX_TOKEN_BYTES"
    (line,) = [json.loads(item) for item in access.getvalue().splitlines()]
    assert line["route"] == "/v1/inspect/token" and line["token_id"] == body["token_id"]
