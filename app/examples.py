"""OpenAPI descriptions and examples for every route (operations.md section 1)."""

from __future__ import annotations

from typing import Any

from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example

from app.findings import VALIDATION_CODES

# RFC 7515 appendix A.1: a public test vector (HS256 with a published key), safe to show.
RFC7515_A1_TOKEN = (
    "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxl"
    "LmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
)
RFC7515_A1_JWK = {"kty": "oct", "k": "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"}

_CODES = "\n".join(f"- `{code}` ({info.check}, {info.severity}): {info.meaning}" for code, info in VALIDATION_CODES.items())

VALIDATE_DESCRIPTION = (
    "Validates a compact JWT against an inline `policy` or an `issuer_profile_id`. Any token string, however "
    "broken, answers **200** with `valid`, per-check `statuses` and self-explaining `findings`; only malformed "
    "requests are 4xx problem+json.\n\nFinding codes:\n" + _CODES
)
INSPECT_DESCRIPTION = (
    "Decodes a token **without verifying it** and lists suspicious patterns. Always 200; `validated` is always "
    "false."
)

_REQUESTS: dict[str, list[Example]] = {
    "validate": [
        Example(summary="RFC 7515 A.1 token against an inline JWK Set", value={
            "token": RFC7515_A1_TOKEN,
            "policy": {"issuer": "joe", "audiences": ["https://api.example.com"], "allowed_algs": ["HS256"],
                       "jwks": {"keys": [RFC7515_A1_JWK]}}}),
        Example(summary="A token against an issuer profile", value={
            "token": RFC7515_A1_TOKEN, "issuer_profile_id": "acme-auth0"}),
    ],
    "inspect": [Example(summary="Decode the RFC 7515 A.1 token", value={"token": RFC7515_A1_TOKEN})],
}

_RESPONSES: dict[str, dict[int, tuple[str, Any]]] = {
    "validate": {
        200: ("The verdict (always 200 for any token)", {
            "valid": False,
            "summary": "Token is NOT valid: 2 errors (AUDIENCE_MISMATCH, TOKEN_EXPIRED).",
            "statuses": {"format": "pass", "algorithm": "pass", "key": "pass", "signature": "pass",
                         "issuer": "pass", "audience": "fail", "time": "fail", "lifetime": "skip",
                         "token_type": "skip", "required_claims": "skip"},
            "findings": [
                {"code": "AUDIENCE_MISMATCH", "check": "audience", "severity": "error", "message": "'aud' is missing",
                 "evidence": {"claim": "aud", "expected": ["https://api.example.com"], "actual": None},
                 "remediation": "Request the token with your API's audience."},
                {"code": "TOKEN_EXPIRED", "check": "time", "severity": "error", "message": "the token has expired",
                 "evidence": {"claim": "exp", "exp": 1300819380, "now": 1700000000, "clock_skew_seconds": 60,
                              "expired_seconds_ago": 399180620, "missed_by_seconds": 399180560},
                 "remediation": "Get a fresh token (refresh it before it expires)."}],
            "token_id": "8d4ef6536dc8895f", "profile": None,
            "header": {"typ": "JWT", "alg": "HS256"},
            "claims": {"iss": "joe", "exp": 1300819380, "http://example.com/is_root": True},
            "key": {"kid": None, "source": "jwks", "thumbprint": None}, "expires_in": -399180620}),
        422: ("The request or its policy is invalid", {
            "type": "urn:jwt-decision:problem:policy-invalid", "title": "Invalid policy", "status": 422,
            "detail": "The policy is inconsistent: 'none' is never allowed: unsigned tokens cannot be validated.",
            "code": "POLICY_INVALID",
            "errors": [{"loc": ["body", "policy", "allowed_algs", 0],
                        "msg": "'none' is never allowed: unsigned tokens cannot be validated", "type": "value_error"}]}),
        404: ("Unknown issuer profile", {
            "type": "urn:jwt-decision:problem:issuer-profile-not-found", "title": "Issuer profile not found",
            "status": 404, "detail": "No issuer profile 'acme' is configured.", "code": "ISSUER_PROFILE_NOT_FOUND",
            "known": ["acme-auth0", "ci"]}),
        413: ("Body over MAX_BODY_BYTES", {
            "type": "urn:jwt-decision:problem:body-too-large", "title": "Request body too large", "status": 413,
            "detail": "The request body exceeds MAX_BODY_BYTES.", "code": "BODY_TOO_LARGE"}),
    },
    "inspect": {
        200: ("The decoded token and what looks suspicious", {
            "decoded": {"header": {"typ": "JWT", "alg": "HS256"},
                        "payload": {"iss": "joe", "exp": 1300819380, "http://example.com/is_root": True},
                        "signature_segment": "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"},
            "validated": False,
            "warning": "Decoded does not mean validated: nothing here is verified.",
            "token_id": "8d4ef6536dc8895f",
            "suspicious_warnings": ["ALG_SYMMETRIC", "EXPIRED", "AUD_MISSING"],
            "details": [{"code": "ALG_SYMMETRIC", "message": "`alg` is HS*: anyone holding the shared secret can "
                         "mint tokens."}]}),
        422: ("The request is invalid", {
            "type": "urn:jwt-decision:problem:request-invalid", "title": "Invalid request", "status": 422,
            "detail": "The request body is invalid: Expected `str`, got `int` (at body.token).",
            "code": "REQUEST_INVALID",
            "errors": [{"loc": ["body", "token"], "msg": "Expected `str`, got `int`", "type": "type_error"}]}),
    },
    "healthz": {200: ("The process serves", {"status": "ok"})},
    "profiles": {200: ("The loaded issuer profiles", {"profiles": [{
        "id": "acme-auth0", "issuer": "https://acme.us.auth0.com/", "audiences": ["https://api.acme.com"],
        "key_source": "jwks_uri", "jwks_uri": "https://acme.us.auth0.com/.well-known/jwks.json", "preset": "auth0",
        "description": "Acme production tenant",
        "keys": {"key_state": "fresh", "fetched_at": "2026-11-23T10:00:00Z", "age_seconds": 42,
                 "kids": ["k1", "k2"], "error": None}}]})},
    "readyz": {200: ("Ready: configuration loaded (and key sets usable when READY_REQUIRES_KEYS)", {
        "status": "ready", "config_loaded": True,
        "profiles": {"acme-auth0": {"key_state": "fresh", "fetched_at": "2026-11-23T10:00:00Z", "age_seconds": 42,
                                    "kids": ["k1"], "error": None}},
        "rate_limit_storage": {"backend": "memory", "ok": True}, "config_errors": []})},
}


def request_examples(name: str) -> list[Example]:
    return _REQUESTS.get(name, [])


def responses(name: str) -> dict[int, ResponseSpec]:
    from app.problems import ProblemDetails

    specs: dict[int, ResponseSpec] = {}
    for status, (description, value) in _RESPONSES[name].items():
        if status == 200:
            continue
        specs[status] = ResponseSpec(data_container=ProblemDetails, description=description,
                                     examples=[Example(summary=description, value=value)],
                                     media_type="application/problem+json")
    return specs


def success_example(name: str) -> Example:
    description, value = _RESPONSES[name][200]
    return Example(summary=description, value=value)
