"""Published vectors: RFC 7515 appendix A, RFC 7520 section 4 and RFC 8037 appendix A.4, copied from the RFC text.

Each vector's signature must verify with its published public key through the service's own algorithm, key and
signature checks. The JWT-shaped ones (RFC 7515 A.1-A.3) also go through the whole validation: their `exp`
(1300819380, March 2011) is long past, so they verify and are then reported expired. The others sign a sentence,
not a claim set, so the full pipeline calls them malformed; for those the checks are exercised directly.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from app.checks import Context
from app.checks.header import check_algorithm, check_key, check_signature
from app.findings import CHECK_ORDER
from app.keys import KeyView
from app.policy import CompiledPolicy, VerifyPolicy, compile_policy
from app.token import ParsedToken, b64url_decode, decode_json_object
from app.validation import validate
from tests.conftest import NOW

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "fixtures" / "rfc_vectors.json").read_text("utf-8"))["vectors"]
JWT_VECTORS = [vector for vector in VECTORS if vector["json_claims"]]
RFC_EXP = 1300819380


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _policy(vector: dict[str, Any], **overrides: Any) -> CompiledPolicy:
    document: dict[str, Any] = {"issuer": "joe", "audiences": ["https://api.example.com"],
                                "allowed_algs": [vector["alg"]], "jwks": {"keys": [vector["jwk"]]}}
    document.update(overrides)
    return compile_policy(msgspec.convert(document, VerifyPolicy), inline=True)


def _context(vector: dict[str, Any], signature_segment: str | None = None) -> Context:
    """A Context for the header checks built from the vector's own segments (its payload need not be JSON)."""
    header_b64, payload_b64, signature_b64 = vector["token"].split(".")
    signature_b64 = signature_b64 if signature_segment is None else signature_segment
    policy = _policy(vector)
    token = ParsedToken(header=decode_json_object(b64url_decode(header_b64, "header"), "header"), claims={},
                        signing_input=f"{header_b64}.{payload_b64}".encode("ascii"),
                        signature=b64url_decode(signature_b64, "signature"), signature_segment=signature_b64)
    return Context(token, policy, KeyView(policy.static_keys, "jwks"), NOW)


def _flip_last_bit(segment: str) -> str:
    raw = bytearray(b64url_decode(segment, "signature"))
    raw[-1] ^= 0x01
    return _b64(bytes(raw))


def test_fixture_holds_every_required_vector():
    assert [vector["rfc"] for vector in VECTORS] == [
        "RFC 7515 A.1", "RFC 7515 A.2", "RFC 7515 A.3", "RFC 7515 A.4",
        "RFC 7520 4.1", "RFC 7520 4.2", "RFC 7520 4.3", "RFC 7520 4.4", "RFC 8037 A.4"]
    for vector in VECTORS:
        assert "d" not in vector["jwk"], "only public keys belong in the fixture"


@pytest.mark.parametrize("vector", VECTORS, ids=[vector["id"] for vector in VECTORS])
def test_published_signature_verifies_through_algorithm_key_and_signature_checks(vector):
    ctx = _context(vector)
    assert check_algorithm(ctx) == []
    assert ctx.algorithm is not None and ctx.algorithm.name == vector["alg"]
    assert check_key(ctx) == []
    assert len(ctx.candidates) == 1
    assert check_signature(ctx) == []
    assert ctx.key_used is ctx.candidates[0]
    assert ctx.key_used.kid == vector["jwk"].get("kid")


@pytest.mark.parametrize("vector", VECTORS, ids=[vector["id"] for vector in VECTORS])
def test_published_signature_with_one_bit_flipped_fails(vector):
    ctx = _context(vector, _flip_last_bit(vector["token"].split(".")[2]))
    assert check_algorithm(ctx) == [] and check_key(ctx) == []
    findings = check_signature(ctx)
    assert [item.code for item in findings] == ["SIGNATURE_INVALID"]
    assert ctx.key_used is None


@pytest.mark.parametrize("vector", VECTORS, ids=[vector["id"] for vector in VECTORS])
def test_published_signature_over_a_changed_payload_fails(vector):
    header_b64, _, signature_b64 = vector["token"].split(".")
    changed = dict(vector, token=f"{header_b64}.{_b64(b'Payload, changed')}.{signature_b64}")
    ctx = _context(changed)
    assert check_algorithm(ctx) == [] and check_key(ctx) == []
    assert [item.code for item in check_signature(ctx)] == ["SIGNATURE_INVALID"]


@pytest.mark.parametrize("vector", JWT_VECTORS, ids=[vector["id"] for vector in JWT_VECTORS])
def test_rfc7515_jwt_verifies_then_is_reported_expired(vector):
    result = validate(vector["token"], _policy(vector), KeyView(_policy(vector).static_keys, "jwks"), NOW,
                      max_token_bytes=16 * 1024)
    assert result.statuses["format"] == "pass"
    assert result.statuses["algorithm"] == "pass" and result.statuses["key"] == "pass"
    assert result.statuses["signature"] == "pass"
    assert result.statuses["time"] == "fail"
    expired = [item for item in result.findings if item.code == "TOKEN_EXPIRED"]
    assert len(expired) == 1
    assert expired[0].evidence["exp"] == RFC_EXP and expired[0].evidence["now"] == NOW
    assert result.valid is False
    assert result.claims == {"iss": "joe", "exp": RFC_EXP, "http://example.com/is_root": True}


@pytest.mark.parametrize("vector", JWT_VECTORS, ids=[vector["id"] for vector in JWT_VECTORS])
def test_rfc7515_jwt_passes_every_check_but_the_audience_before_its_expiry(vector):
    # The vectors carry no `aud`, and a policy cannot do without audiences (nor read them from `iss`): at a `now`
    # in 2011, every other check passes.
    policy = _policy(vector, audiences=["joe"])
    result = validate(vector["token"], policy, KeyView(policy.static_keys, "jwks"), RFC_EXP - 600,
                      max_token_bytes=16 * 1024)
    assert [item.code for item in result.findings] == ["AUDIENCE_MISMATCH"]
    assert {name for name, status in result.statuses.items() if status == "fail"} == {"audience"}
    assert result.expires_in == 600


@pytest.mark.parametrize("vector", [v for v in VECTORS if not v["json_claims"]],
                         ids=[v["id"] for v in VECTORS if not v["json_claims"]])
def test_non_claims_payload_is_malformed_in_full_validation(vector):
    policy = _policy(vector)
    result = validate(vector["token"], policy, KeyView(policy.static_keys, "jwks"), NOW, max_token_bytes=16 * 1024)
    assert [item.code for item in result.findings] == ["MALFORMED_TOKEN"]
    assert result.findings[0].evidence["segment"] == "payload"
    assert result.statuses["format"] == "fail"
    assert all(result.statuses[name] == "skip" for name in CHECK_ORDER[1:])
    assert result.header is not None and result.header["alg"] == vector["alg"]


def test_rfc7515_a2_over_http_with_inline_jwks_verifies_and_is_expired(client):
    vector = next(v for v in VECTORS if v["id"] == "rfc7515-a2-rs256")
    policy = {"issuer": "joe", "audiences": ["joe"], "allowed_algs": ["RS256"], "jwks": {"keys": [vector["jwk"]]}}
    response = client.post("/v1/validate/jwt", json={"token": vector["token"], "policy": policy})
    assert response.status_code == 200
    body = response.json()
    assert body["statuses"]["signature"] == "pass"
    assert [item["code"] for item in body["findings"]] == ["AUDIENCE_MISMATCH", "TOKEN_EXPIRED"]
    assert body["valid"] is False
    assert body["key"]["source"] == "jwks"
    assert len(body["key"]["thumbprint"]) == 43


def test_rfc7515_a1_over_http_with_inline_oct_jwk_verifies_and_is_expired(client):
    vector = next(v for v in VECTORS if v["id"] == "rfc7515-a1-hs256")
    policy = {"issuer": "joe", "audiences": ["https://api.example.com"], "allowed_algs": ["HS256"],
              "jwks": {"keys": [vector["jwk"]]}}
    response = client.post("/v1/validate/jwt", json={"token": vector["token"], "policy": policy})
    assert response.status_code == 200
    body = response.json()
    assert body["statuses"]["signature"] == "pass"
    assert body["statuses"]["time"] == "fail"
    assert "TOKEN_EXPIRED" in [item["code"] for item in body["findings"]]
    assert body["valid"] is False
    assert vector["jwk"]["k"] not in response.text
