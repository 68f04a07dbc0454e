"""The /v1/validate/jwt and /v1/inspect/token contract over HTTP: 200 verdicts, 4xx problem+json, never 5xx."""

from __future__ import annotations

import itertools
import json
import socket

import pytest
from litestar.testing import TestClient

from app.findings import CHECK_ORDER
from app.server import create_app
from app.settings import Settings
from tests.conftest import AUDIENCE, ISSUER, NOW, claims, rs256_policy, rs256_token
from tests.mint import key_for, mint
from tests.service import Service

URL = "/v1/validate/jwt"


def test_valid_token_answers_valid_with_every_status_key(client):
    response = client.post(URL, json={"token": rs256_token(), "policy": rs256_policy()})
    assert response.status_code == 200
    body = response.json()
    assert body["valid"] is True
    assert body["summary"] == "Token is valid."
    assert list(body["statuses"]) == list(CHECK_ORDER)
    assert body["statuses"]["signature"] == "pass"
    assert body["statuses"]["lifetime"] == "skip"
    assert body["findings"] == []
    assert body["claims"]["sub"] == "user-42"
    assert body["header"]["alg"] == "RS256"
    assert body["key"]["source"] == "public_key"
    assert len(body["key"]["thumbprint"]) == 43
    assert body["expires_in"] == 3600
    assert len(body["token_id"]) == 16


def test_expired_token_with_wrong_audience_reports_both(client):
    token = rs256_token(exp=NOW - 3600, aud="https://other.example.com")
    body = client.post(URL, json={"token": token, "policy": rs256_policy()}).json()
    assert body["valid"] is False
    codes = [item["code"] for item in body["findings"]]
    assert codes == ["AUDIENCE_MISMATCH", "TOKEN_EXPIRED"]
    assert body["summary"] == "Token is NOT valid: 2 errors (AUDIENCE_MISMATCH, TOKEN_EXPIRED)."
    assert body["statuses"]["audience"] == "fail" and body["statuses"]["time"] == "fail"


@pytest.mark.parametrize("token", ["", "not a token", "a.b", "....", "\x00\x01", "Bearer x.y.z", "é" * 100],
                         ids=["empty", "words", "two-segments", "dots", "control", "bearer", "non-ascii"])
def test_any_token_string_answers_200_malformed(client, token):
    response = client.post(URL, json={"token": token, "policy": rs256_policy()})
    assert response.status_code == 200
    body = response.json()
    assert body["valid"] is False
    assert [item["code"] for item in body["findings"]] == ["MALFORMED_TOKEN"]
    assert body["statuses"]["format"] == "fail"
    assert all(body["statuses"][name] == "skip" for name in CHECK_ORDER[1:])


@pytest.mark.parametrize("before, after, valid", [
    (" \t\r\n", "\n ", True), ("\x1c", "\x1f", False), ("\xa0", "", False), ("", "\u2028", False),
    ("\x0b", "", False), ("\u3000", "\x85", False),
], ids=["http-and-json-white-space", "separators", "nbsp", "line-separator", "vertical-tab", "ideographic-nel"])
def test_only_white_space_around_a_token_is_ignored(client, before, after, valid):
    """Found by a review: Python's str.strip() also took information separators, NBSP, NEL and U+2028, so a
    string no JWS parser accepts validated, with the same token id as the token."""
    body = client.post(URL, json={"token": before + rs256_token() + after, "policy": rs256_policy()}).json()
    assert body["valid"] is valid
    if not valid:
        assert [item["code"] for item in body["findings"]] == ["MALFORMED_TOKEN"]


@pytest.mark.parametrize("prefix", ["Bearer ", "bearer\t", "BEARER  "])
def test_a_bearer_scheme_left_in_is_named_whatever_the_white_space_after_it(client, prefix):
    body = client.post(URL, json={"token": prefix + rs256_token(), "policy": rs256_policy()}).json()
    (finding,) = body["findings"]
    assert finding["code"] == "MALFORMED_TOKEN" and "Bearer" in finding["remediation"], finding


def _raw_json(value: dict) -> bytes:
    """`value` as JSON with `@S@` inside a string turned into a lone UTF-16 surrogate escape (RFC 8259 8.2 allows
    it; no JSON encoder writes one, so the bytes are spliced)."""
    return json.dumps(value).replace("@S@", "\\ud800").encode()


@pytest.mark.parametrize("token", ["@S@", "@S@.@S@.@S@", rs256_token()[:-3] + "@S@"],
                         ids=["alone", "in-every-segment", "in-the-signature"])
def test_a_token_with_a_lone_surrogate_escape_still_answers_200_malformed(client, token):
    response = client.post(URL, content=_raw_json({"token": token, "policy": rs256_policy()}),
                           headers={"content-type": "application/json"})
    assert response.status_code == 200
    body = response.json()
    assert body["valid"] is False and [item["code"] for item in body["findings"]] == ["MALFORMED_TOKEN"]
    assert len(body["token_id"]) == 16
    inspected = client.post("/v1/inspect/token", content=_raw_json({"token": token}),
                            headers={"content-type": "application/json"})
    assert inspected.status_code == 200 and inspected.json()["decoded"] is None


@pytest.mark.parametrize("content", [
    b'{"token": "\\ud800", "policy": NaN}',
    b'{"token": "\\ud800", "policy": {"required_custom_claims": {"n": 1e400}}}',
    b'{"token": "\\ud800", "policy": {"secret": "\xff"}}',
    b'{"token": "\\ud800", "policy": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
    b'{"token": "\\ud800"',
], ids=["nan", "out-of-range", "invalid-utf-8", "deep", "truncated"])
def test_a_body_read_for_its_surrogates_is_still_refused_for_anything_else(client, content):
    problem = _problem(client.post(URL, content=content, headers={"content-type": "application/json"}), 422)
    assert problem["errors"][0]["loc"] == ["body"]
    # Said as without the escape (found by a review: "maximum recursion depth exceeded while decoding...", and
    # the codec's "can't decode byte 0xff in position 16").
    plain = _problem(client.post(URL, content=content.replace(b"\\ud800", b"x"),
                                 headers={"content-type": "application/json"}), 422)
    if b"\xff" in content or b"[[[" in content:
        assert problem["errors"][0]["msg"] == plain["errors"][0]["msg"], (problem, plain)


@pytest.mark.parametrize("where", [
    {"policy": rs256_policy(issuer="@S@")},
    {"policy": {"issuer": "x", "audiences": ["x"], "allowed_algs": ["HS256"], "secret": "@S@" * 40}},
    {"policy": rs256_policy(required_custom_claims={"tenant": "@S@"})},
    {"policy": rs256_policy(), "@S@": 1},
], ids=["issuer", "secret", "custom-claim", "member-name"])
def test_a_lone_surrogate_outside_the_token_is_refused_422_not_a_500(client, where):
    response = client.post(URL, content=_raw_json({"token": "x", **where}),
                           headers={"content-type": "application/json"})
    problem = _problem(response, 422)
    assert "only in 'token'" in problem["errors"][0]["msg"]


def test_where_a_lone_surrogate_is_names_no_secret_pasted_as_a_member_name(client):
    """Found by a review: this path named every member on the way in full, where the 422 of any other problem
    names a member only when it looks like a name."""
    secret = "Zk9vQmFyU2VjcmV0VmFsdWUxMjM0NTY3ODkwQUJDREVGR0g"
    response = client.post(URL, content=_raw_json({"token": "x", "policy": rs256_policy(
        required_custom_claims={secret: "@S@", "tenant": "a"})}), headers={"content-type": "application/json"})
    problem = _problem(response, 422)
    assert '$.policy.required_custom_claims["<a name of 47 characters>"]' in problem["errors"][0]["msg"]
    assert secret not in response.text
    named = client.post(URL, content=_raw_json({"token": "x", "policy": rs256_policy(
        required_custom_claims={"tenant": "@S@"})}), headers={"content-type": "application/json"})
    assert "$.policy.required_custom_claims.tenant" in _problem(named, 422)["errors"][0]["msg"]


def _problem(response, status):
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"] and body["type"]
    return body


@pytest.mark.parametrize("body, loc", [
    ({"token": 1, "policy": rs256_policy()}, ["body", "token"]),
    ({"token": "x", "policy": rs256_policy(allowed_algs=["none"])}, ["body", "policy", "allowed_algs", 0]),
    ({"token": "x", "policy": rs256_policy(allowed_algs=["RS256", "NONE"])}, ["body", "policy", "allowed_algs", 1]),
    ({"token": "x", "policy": rs256_policy(allowed_algs=["ES256"])}, ["body", "policy", "allowed_algs", 0]),
    ({"token": "x", "policy": rs256_policy(allowed_algs=["HS256"])}, ["body", "policy", "allowed_algs", 0]),
    ({"token": "x", "policy": rs256_policy(clock_skew_seconds=301)}, ["body", "policy", "clock_skew_seconds"]),
    ({"token": "x", "policy": rs256_policy(audiences=[])}, ["body", "policy", "audiences"]),
    ({"token": "x", "policy": rs256_policy(public_key="-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----")},
     ["body", "policy", "public_key"]),
    ({"token": "x", "policy": rs256_policy(secret="s" * 40)}, ["body", "policy"]),
    ({"token": "x", "policy": rs256_policy(unknown=1)}, ["body", "policy", "unknown"]),  # FastAPI's loc
    ({"token": "x", "policy": rs256_policy(), "issuer_profile_id": "p"}, ["body"]),
    ({"token": "x"}, ["body"]),
    ({"policy": rs256_policy()}, ["body", "token"]),
    ({"token": "x", "policy": rs256_policy(jwks_uri="https://keys.example.com/jwks.json", public_key=None)},
     ["body", "policy", "jwks_uri"]),
    ({"token": "x", "policy": rs256_policy(public_key=None, jwks={"keys": [{**key_for("RS256").jwk, "alg": "RS384"}]})},
     ["body", "policy", "allowed_algs", 0]),
    ({"token": "x", "policy": rs256_policy(public_key=None, jwks={"keys": [{**key_for("RS256").jwk, "use": "enc"}]})},
     ["body", "policy", "allowed_algs", 0]),
    ({"token": "x", "policy": rs256_policy(public_key=None,
                                           jwks={"keys": [{**key_for("RS256").jwk, "key_ops": ["encrypt"]}]})},
     ["body", "policy", "allowed_algs", 0]),
    # Found by a review: a typ normalising to nothing matched an empty or blank `typ`, and an audience claim that
    # another check reads turned the audience check off.
    ({"token": "x", "policy": rs256_policy(token_type="application/")}, ["body", "policy", "token_type"]),
    ({"token": "x", "policy": rs256_policy(token_type=" ")}, ["body", "policy", "token_type"]),
    ({"token": "x", "policy": rs256_policy(token_type="at+jwt ")}, ["body", "policy", "token_type"]),
    ({"token": "x", "policy": rs256_policy(audience_claim="iss")}, ["body", "policy", "audience_claim"]),
    ({"token": "x", "policy": rs256_policy(audience_claim="exp")}, ["body", "policy", "audience_claim"]),
    # Never matched by a token's iss or aud (found by a review: they answered every token with a mismatch).
    ({"token": "x", "policy": rs256_policy(issuer=f" {ISSUER}")}, ["body", "policy", "issuer"]),
    ({"token": "x", "policy": rs256_policy(issuer=[ISSUER, f"{ISSUER}\n"])}, ["body", "policy", "issuer", 1]),
    ({"token": "x", "policy": rs256_policy(audiences=[AUDIENCE, f"{AUDIENCE} "])}, ["body", "policy", "audiences", 1]),
    ({"token": "x", "policy": rs256_policy(issuer=f"{ISSUER}/.well-known/openid-configuration")},
     ["body", "policy", "issuer"]),
    ({"token": "x", "policy": rs256_policy(issuer="https://as.example.com/.well-known/oauth-authorization-server/t1")},
     ["body", "policy", "issuer"]),
], ids=["token-not-string", "alg-none", "alg-NONE-second", "alg-not-fitting-rsa-key", "hs-with-public-key",
        "skew-too-large", "no-audiences", "bad-pem", "two-key-sources", "unknown-field", "policy-and-profile",
        "neither", "no-token", "jwks-uri-not-allowlisted", "jwk-alg-disagrees", "jwk-use-enc", "jwk-key-ops-encrypt",
        "typ-empty-once-normalised", "typ-blank", "typ-with-space", "audience-claim-iss", "audience-claim-exp",
        "issuer-with-space", "second-issuer-with-newline", "audience-with-space", "discovery-url-as-issuer",
        "rfc8414-metadata-url-as-issuer"])
def test_request_errors_are_422_problem_json_with_loc(client, body, loc):
    problem = _problem(client.post(URL, json=body), 422)
    assert problem["errors"][0]["loc"] == loc
    assert problem["errors"][0]["msg"]
    assert len(problem["errors"]) == 1, problem["errors"]
    if isinstance(body.get("policy"), dict) and "jwks" in body["policy"]:
        assert "fits none of the configured keys" in problem["errors"][0]["msg"]


def test_a_public_key_holding_several_pem_blocks_is_refused_rather_than_one_used(client):
    """Only one block was used (a certificate anywhere won over a key before it): a pasted bundle trusted a key
    other than the one the operator sees first. Found by a review."""
    first, second = key_for("RS256", "first"), key_for("RS256", "second")
    problem = _problem(client.post(URL, json={"token": "x", "policy": rs256_policy(
        public_key=first.public_pem + second.public_pem)}), 422)
    (error,) = problem["errors"]
    assert error["loc"] == ["body", "policy", "public_key"]
    assert error["msg"].startswith("2 PEM blocks, where one key is expected")
    one = client.post(URL, json={"token": mint(claims(), second), "policy": rs256_policy(
        public_key="Bag Attributes: from openssl\n" + second.public_pem)}).json()
    assert one["valid"], one["findings"]  # text around the one block is fine


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("require_exp", "false", "bool"), ("require_exp", 0, "bool"), ("require_exp", "False", "bool"),
    ("clock_skew_seconds", "300", "int"), ("clock_skew_seconds", 5.0, "int"), ("max_ttl_seconds", "10", "int | null"),
    ("audiences", [AUDIENCE, 1], "str"),
])
def test_a_wrong_typed_policy_field_is_422_never_coerced_into_a_weaker_policy(client, field, value, expected):
    """validation.md section 1: wrong types are request errors. The fast path decodes strictly and hands such a
    body to Litestar, whose own conversion coerced `"false"` or `0` into False: a token without `exp` was valid."""
    no_exp = {key: item for key, item in claims().items() if key != "exp"}
    body = {"token": mint(no_exp, key_for("RS256")), "policy": rs256_policy(**{field: value})}
    problem = _problem(client.post(URL, json=body), 422)
    wrong = value[1] if isinstance(value, list) else value
    where = ["body", "policy", field] + ([1] if isinstance(value, list) else [])
    assert problem["errors"] == [{"loc": where, "msg": f"Expected `{expected}`, got `{type(wrong).__name__}`",
                                  "type": "type_error"}]


@pytest.mark.parametrize("name, problem", [("", "Expected `str` of length >= 1"),
                                           ("x" * 300, "Expected `str` of length <= 256")], ids=["empty", "too-long"])
def test_a_bad_member_name_is_422_at_its_object_with_msgspecs_path_kept_out_of_the_message(client, name, problem):
    """Found by a review: msgspec's "- at `key` in `$...`" was not read, so loc was ["body"] and its path stayed in
    the message."""
    body = {"token": "x", "policy": rs256_policy(required_custom_claims={name: 1})}
    (error,) = _problem(client.post(URL, json=body), 422)["errors"]
    assert error == {"loc": ["body", "policy", "required_custom_claims"], "msg": f"a member name: {problem}",
                     "type": "value_error"}


def test_an_encryption_key_beside_the_signing_key_of_an_inline_set_is_kept_out_of_the_way(client):
    """Sets copied from an IdP publish encryption keys too (`use: enc` or `key_ops` without `verify`)."""
    signing = key_for("RS256")
    for marker in ({"use": "enc"}, {"key_ops": ["encrypt", "wrapKey"]}):
        other = {**key_for("RS256", "enc-1").jwk, **marker}
        body = client.post(URL, json={"token": rs256_token(), "policy": rs256_policy(
            public_key=None, jwks={"keys": [other, signing.jwk]})}).json()
        assert body["valid"] is True and body["key"]["kid"] == signing.kid, body


def test_an_empty_body_is_422_saying_so(client):
    problem = _problem(client.post(URL, content=b"", headers={"content-type": "application/json"}), 422)
    assert problem["errors"][0] == {"loc": ["body"], "msg": "the body is empty; a JSON object is expected",
                                    "type": "missing"}
    assert problem["detail"] == "The request body is invalid: the body is empty; a JSON object is expected (at body)."


def test_an_inline_policy_cannot_use_discovery(client):
    """Discovery would fetch any URL a caller names: inline policies have JWKS_URI_ALLOWLIST for their key sets and
    no discovery at all (found by mutation testing: the refusal was untested)."""
    policy = {"issuer": "https://internal-admin.corp.example", "audiences": [AUDIENCE], "allowed_algs": ["RS256"],
              "discovery": True}
    problem = _problem(client.post(URL, json={"token": rs256_token(), "policy": policy}), 422)
    assert any(item["loc"] == ["body", "policy", "discovery"] and "only available in issuer profiles" in item["msg"]
               for item in problem["errors"]), problem


def test_a_missing_field_is_typed_missing(client):
    """The item shape FastAPI clients parse (found by mutation testing: only the empty body checked the type)."""
    problem = _problem(client.post(URL, json={"policy": rs256_policy()}), 422)
    assert [(item["loc"], item["type"]) for item in problem["errors"]] == [(["body", "token"], "missing")]


def test_body_that_is_not_json_is_422(client):
    problem = _problem(client.post(URL, content=b"{not json", headers={"content-type": "application/json"}), 422)
    assert problem["errors"][0]["loc"] == ["body"]


def test_error_never_echoes_the_secret_or_key(client):
    secret = "correct horse battery staple, really long secret"
    response = client.post(URL, json={"token": "x", "policy": rs256_policy(secret=secret)})
    assert secret not in response.text
    pem = key_for("RS256").public_pem
    response = client.post(URL, json={"token": "x", "policy": rs256_policy(allowed_algs=["ES256"])})
    assert pem.splitlines()[1] not in response.text


@pytest.mark.parametrize("settings", [Settings(max_body_bytes=2048)])
def test_oversized_body_is_413_problem_json(client):
    problem = _problem(client.post(URL, json={"token": "x" * 4096, "policy": rs256_policy()}), 413)
    assert problem["code"] == "BODY_TOO_LARGE"


@pytest.mark.parametrize("profile_id", ["nope", "acme/prod", "", "-acme"])
def test_unknown_profile_is_404_listing_known_ids(client, profile_id):
    """Even an id no profile could have (validation.md: an unknown id is 404 with the known ids, not a 422)."""
    problem = _problem(client.post(URL, json={"token": "x", "issuer_profile_id": profile_id}), 404)
    assert problem["code"] == "ISSUER_PROFILE_NOT_FOUND"
    assert isinstance(problem["known"], list)
    assert (repr(profile_id) in problem["detail"]) is (profile_id == "nope")  # what no id is, is not echoed


def test_unknown_route_and_wrong_method_are_problem_json(client):
    assert _problem(client.get("/v1/nothing-here"), 404)["code"] == "NOT_FOUND"
    assert _problem(client.get(URL), 405)["code"] == "METHOD_NOT_ALLOWED"


def test_inspect_decodes_and_flags_suspicious_patterns(client):
    token = mint(claims(exp=NOW - 5, aud=None, nonce="n"), key_for("HS256"), header={"jwk": {"kty": "oct"}})
    body = client.post("/v1/inspect/token", json={"token": token}).json()
    assert body["validated"] is False
    assert "decoded does not mean validated" in body["warning"].lower()
    assert body["decoded"]["payload"]["nonce"] == "n"
    for code in ("ALG_SYMMETRIC", "HEADER_KEY_PRESENT", "EXPIRED", "AUD_MISSING", "ID_TOKEN"):
        assert code in body["suspicious_warnings"]
    assert [detail["code"] for detail in body["details"]] == body["suspicious_warnings"]


def test_inspect_of_garbage_is_200_with_malformed_reason(client):
    body = client.post("/v1/inspect/token", json={"token": "opaque-token-value"}).json()
    assert body["decoded"] is None
    assert "MALFORMED_TOKEN" in body["suspicious_warnings"] and "OPAQUE_TOKEN" in body["suspicious_warnings"]


def test_healthz(client):
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/v1/presets", "/v1/presets/auth0"])
def test_head_answers_a_get_route_with_its_headers_and_no_content(client, path):
    got, head = client.get(path), client.head(path)
    assert (head.status_code, head.content) == (got.status_code, b"")
    assert head.headers["content-type"] == got.headers["content-type"]
    if path != "/metrics":  # the only answer whose length changes between two requests (the counts grow)
        assert head.headers["content-length"] == str(len(got.content))


@pytest.mark.parametrize("method, path, status, allow", [
    ("OPTIONS", "/healthz", 204, {"GET", "HEAD", "OPTIONS"}),
    ("DELETE", "/v1/presets", 405, {"GET", "HEAD", "OPTIONS"}),
    ("POST", "/healthz", 405, {"GET", "HEAD", "OPTIONS"}), ("OPTIONS", URL, 204, {"OPTIONS", "POST"}),
    ("PUT", URL, 405, {"OPTIONS", "POST"}),
])
def test_allow_names_head_wherever_get_is_allowed(client, method, path, status, allow):
    """HEAD answers every GET route; Litestar's Allow left it out (found by a review)."""
    response = client.request(method, path)
    assert response.status_code == status and response.headers["allow"].split(", ") in (
        [*order] for order in itertools.permutations(allow))


def test_head_on_a_post_route_is_405_naming_post(client):
    response = client.head(URL)
    assert response.status_code == 405 and "POST" in response.headers["allow"] and response.content == b""


def test_a_malformed_json_body_is_a_422_titled_invalid_request(client):
    response = client.post(URL, content=b"{bad", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert (response.json()["title"], response.json()["code"]) == ("Invalid request", "REQUEST_INVALID")


@pytest.mark.parametrize("path", [URL, "/v1/inspect/token", "/v1/authorize"])
@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/json; charset=latin-1",
                                          "application/jsonx", "text/x+json"])
def test_a_body_not_sent_as_json_is_a_415_however_well_formed(client, path, content_type):
    """A body sent as text/plain or a form is what any web page may send anywhere without a CORS preflight; it was
    read as JSON (a page could spend an authorizer's rate-limit budget from a visitor's browser)."""
    body = json.dumps({"token": rs256_token(), "policy": rs256_policy()} if path != "/v1/authorize" else
                      {"authorizer": "x", "request": {"method": "GET", "path": "/"}}).encode()
    response = client.post(path, content=body, headers={} if content_type is None else {"content-type": content_type})
    problem = _problem(response, 415)
    assert problem["code"] == "UNSUPPORTED_MEDIA_TYPE" and "Content-Type: application/json" in problem["detail"]
    assert response.headers["accept-post"] == "application/json"


def test_a_content_type_given_twice_is_a_415_in_either_order():
    """Found by a review: application/json then text/plain was read as JSON, the other order refused. Over real
    HTTP: the test client sends the two as one header, `application/json, text/plain`."""
    bodies = {URL: {"token": rs256_token(), "policy": rs256_policy()}, "/v1/inspect/token": {"token": rs256_token()},
              "/v1/authorize": {"authorizer": "x", "request": {"method": "GET", "path": "/"}}}
    service = Service()
    try:
        answers = {}
        for path, body in bodies.items():
            for types in (("application/json", "text/plain"), ("text/plain", "application/json")):
                content = json.dumps(body).encode()
                head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {types[0]}\r\nContent-Type: {types[1]}\r\n"
                        f"Content-Length: {len(content)}\r\nConnection: close\r\n\r\n").encode()
                with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
                    sock.sendall(head + content)
                    data = b""
                    while chunk := sock.recv(65536):
                        data += chunk
                answers[path, types[0]] = data.split(b"\r\n", 1)[0]
    finally:
        service.stop()
    assert set(answers.values()) == {b"HTTP/1.1 415 Unsupported Media Type"}, answers


@pytest.mark.parametrize("content_type", [None, "text/plain"])
def test_a_body_over_max_body_bytes_is_a_413_whatever_its_type(content_type):
    """validation.md section 4; the media type was checked first, so such a body got a 415 (found by a review)."""
    with TestClient(create_app(Settings(max_body_bytes=1024))) as small:
        response = small.post(URL, content=b"x" * 3000, headers={} if content_type is None else
                              {"content-type": content_type})
    assert _problem(response, 413)["code"] == "BODY_TOO_LARGE"


@pytest.mark.parametrize("content_type", ["application/json", "Application/JSON", "application/json; charset=UTF-8",
                                          "application/json;charset=\"utf-8\"", "application/jwt-request+json"])
def test_a_body_sent_as_json_in_any_spelling_of_its_type_is_read(client, content_type):
    body = json.dumps({"token": rs256_token(), "policy": rs256_policy()}).encode()
    assert client.post(URL, content=body, headers={"content-type": content_type}).json()["valid"] is True


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_bad_request_that_is_not_about_the_body_stays_a_400(client, method):
    response = client.request(method, URL if method == "POST" else "/v1/presets", json={"token": "x"},
                              headers={"Host": "bad host!"})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "REQUEST_INVALID" and "body" not in response.json()["detail"]


def test_audience_list_with_one_match_passes(client):
    token = rs256_token(aud=["https://a.example.com", AUDIENCE])
    assert client.post(URL, json={"token": token, "policy": rs256_policy()}).json()["valid"] is True


@pytest.mark.parametrize("body", [b'{"token":"\xff"}', b'{"token":"a\xc3"}', b'{"x":' + b"[" * 1000 + b"]" * 1000 + b"}"],
                         ids=["invalid-utf8-in-a-string", "truncated-utf8-in-a-string", "nested-1000-levels"])
@pytest.mark.parametrize("path", ["/v1/validate/jwt", "/v1/authorize", "/v1/inspect/token"])
def test_a_body_that_is_not_utf8_json_or_too_deep_is_a_422_not_a_500(client, body, path):
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "REQUEST_INVALID"


def test_an_errors_type_is_read_from_the_decoders_words_never_from_the_request_quoted_in_them(client):
    """An enum value `truncated` was typed json_invalid: the type was found anywhere in the message, which quotes
    the request (found by mutation testing)."""
    def error_type(url: str, content: bytes) -> tuple[str, str]:
        (error, *_) = _problem(client.post(url, content=content, headers={"content-type": "application/json"}),
                               422)["errors"]
        return error["type"], error["msg"]

    authorizer = {"policy": rs256_policy(), "rules": [{"effect": "truncated"}]}
    decide = {"authorizer": authorizer, "request": {"method": "GET", "path": "/"}}
    assert error_type("/v1/authorize", json.dumps(decide).encode()) == ("value_error",
                                                                       "Invalid enum value 'truncated'")
    assert error_type(URL, b'{"token": "x", "policy": ') == ("json_invalid", "Input data was truncated")
    assert error_type(URL, b'{"token": "x",}')[0] == "json_invalid"
    assert error_type(URL, b'{"policy": {}}')[0] == "missing"
    assert error_type(URL, b'{"token": "x", "missing required field": 1}')[0] == "extra_forbidden"


def test_problem_answers_spell_their_type_their_subject_and_where_an_invalid_member_is(client):
    missing = _problem(client.post(URL, json={"token": "x"}), 422)
    assert missing["type"] == "urn:jwt-decision:problem:request-invalid"
    inconsistent = _problem(client.post(URL, json={"token": "x", "policy": rs256_policy(allowed_algs=["HS256"])}),
                            422)
    assert inconsistent["detail"].startswith("The policy is inconsistent")
    (negative,) = _problem(client.post(URL, json={"token": "x", "policy": rs256_policy(clock_skew_seconds=-1)}),
                           422)["errors"]
    assert negative["type"] == "value_error" and negative["loc"] == ["body", "policy", "clock_skew_seconds"]
    decide = {"authorizer": {"policy": rs256_policy(), "rules": []},
              "request": {"method": "GET", "path": "/", "headers": {"a": 5}}}
    (typed,) = _problem(client.post("/v1/authorize", json=decide), 422)["errors"]
    assert typed["loc"] == ["body", "request", "headers", "..."] and typed["type"] == "type_error"


def test_up_to_50_errors_are_listed_whole_and_more_are_counted(client):
    for unknown, listed in ((49, 50), (50, 51)):  # with the one of a missing tenant_domain
        query = "&".join(f"a{index}=" for index in range(unknown))
        errors = _problem(client.get(f"/v1/presets/auth0?{query}"), 422)["errors"]
        assert len(errors) == listed
        assert (errors[-1]["type"] == "truncated") is (listed > 50), errors[-1]


def test_an_unexpected_recursion_error_on_a_get_is_a_500_of_ours_not_a_body_to_blame(client, monkeypatch):
    """RecursionError and UnicodeDecodeError from a body's decoding are the client's (422); on a GET, which reads
    no body, one is a bug: 500, logged."""
    import app.api.presets

    def recurse(*_: object) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(app.api.presets, "PresetSummary", recurse)
    assert _problem(client.get("/v1/presets"), 500)["code"] == "INTERNAL"


# Found by mutation testing: each refusal or acceptance below was untested.
@pytest.mark.parametrize("fields, loc", [
    ({"jwks_uri": "https://evil.example/jwks.json", "public_key": None}, ["body", "policy", "jwks_uri"]),
    ({"jwks_uri": "https://:pw@keys.example.com/jwks.json", "public_key": None}, ["body", "policy", "jwks_uri"]),
    ({"allowed_algs": ["s3cr3tValue12345"]}, ["body", "policy", "allowed_algs", 0]),
    ({"audience_claim": "jti"}, ["body", "policy", "audience_claim"]),
    ({"issuer": "https://i.example/.well-known/openid-configuration/x"}, ["body", "policy", "issuer"]),
    ({"token_type": "a" * 128}, ["body", "policy", "token_type"]),
    ({"public_key": "garbage"}, ["body", "policy", "public_key"]),
    ({"public_key": None, "jwks": {"keys": []}}, ["body", "policy", "jwks", "keys"]),
], ids=["jwks-uri-off-the-allowlist", "jwks-uri-with-a-password", "secret-pasted-as-an-algorithm",
        "audience-claim-jti", "issuer-below-a-metadata-path", "typ-too-long", "public-key-garbage", "empty-key-set"])
def test_an_inline_policy_is_refused_where_it_is_wrong_and_never_echoes_what_could_be_a_secret(fields, loc):
    with TestClient(create_app(Settings(jwks_uri_allowlist=("keys.example.com",)))) as guarded:
        problem = _problem(guarded.post(URL, json={"token": "x", "policy": rs256_policy(**fields)}), 422)
    assert problem["errors"][0]["loc"] == loc, problem["errors"]
    assert "s3cr3tValue12345" not in json.dumps(problem) and ":pw@" not in json.dumps(problem)


@pytest.mark.parametrize("fields", [
    {"jwks_uri": "https://keys.example.com/jwks.json", "public_key": None}, {"token_type": "example/at+jwt"},
    {"token_type": "a" * 127}, {"jwks_uri": "https://[2001:DB8::1]/jwks.json", "public_key": None},
    {"jwks_uri": "https://foolocalhost/jwks.json", "public_key": None},
], ids=["jwks-uri-on-the-allowlist", "typ-with-a-subtype", "typ-at-its-length", "ipv6-upper-case", "not-localhost"])
def test_an_inline_policy_at_the_edge_of_a_rule_is_accepted(fields):
    allowlist = ("keys.example.com", "2001:db8::1", "foolocalhost")
    with TestClient(create_app(Settings(jwks_uri_allowlist=allowlist))) as guarded:
        response = guarded.post(URL, json={"token": "x", "policy": rs256_policy(**fields)})
    assert response.status_code == 200, response.text
