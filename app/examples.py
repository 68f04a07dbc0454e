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
                 "remediation": "Without an audience the token was not minted for an API (Auth0: a token requested "
                                "without the 'audience' parameter is opaque or an ID token). Request it with your "
                                "API's audience."},
                {"code": "TOKEN_EXPIRED", "check": "time", "severity": "error", "message": "the token has expired",
                 "evidence": {"claim": "exp", "exp": 1300819380, "now": 1700000000, "clock_skew_seconds": 60,
                              "expired_seconds_ago": 399180620, "missed_by_seconds": 399180560},
                 "remediation": "Get a fresh token (refresh it before it expires)."}],
            "token_id": "8d4ef6536dc8895f",
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
            "warning": "Decoded does not mean validated: nothing here is verified. Use /v1/validate/jwt before "
                       "trusting any claim.",
            "token_id": "8d4ef6536dc8895f",
            "suspicious_warnings": ["ALG_SYMMETRIC", "EXPIRED", "AUD_MISSING"],
            "details": [{"code": "ALG_SYMMETRIC", "message": "`alg` is HS*: anyone holding the shared secret can "
                         "mint tokens."},
                        {"code": "EXPIRED", "message": "`exp` is in the past."},
                        {"code": "AUD_MISSING", "message": "No `aud` claim."}]}),
        422: ("The request is invalid", {
            "type": "urn:jwt-decision:problem:request-invalid", "title": "Invalid request", "status": 422,
            "detail": "The request body is invalid: Expected `str`, got `int` (at body.token).",
            "code": "REQUEST_INVALID",
            "errors": [{"loc": ["body", "token"], "msg": "Expected `str`, got `int`", "type": "type_error"}]}),
    },
    "healthz": {200: ("The process serves", {"status": "ok"})},
    "metrics": {200: ("Prometheus text exposition (excerpt)", (
        '# HELP jwt_validations_total Token validations by issuer profile and outcome\n'
        '# TYPE jwt_validations_total counter\n'
        'jwt_validations_total{profile="acme-auth0",valid="true"} 1042.0\n'
        'jwt_findings_total{code="TOKEN_EXPIRED",severity="error"} 17.0\n'
        'authz_decisions_total{authorizer="orders-api",decision="deny",reason="rule_denied"} 3.0\n'
        'jwt_verified_token_cache_hits_total 991.0\n'
        'jwks_key_set_age_seconds{jwks_uri="https://acme.us.auth0.com/.well-known/jwks.json"} 42.0\n'))},
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


# Presets (trust.md section 3).

PRESETS_DESCRIPTION = (
    "The identity-provider presets (`presets/*.json`): provider, title and the parameters each template takes. "
    "Public: no X-API-Key needed."
)
PRESET_DESCRIPTION = (
    "Without query parameters: the preset's template (`issuer` and `jwks_uri` with `{placeholders}`, the policy, "
    "and `notes` on the provider's quirks). With them: the filled policy, which validates that provider's tokens "
    "as is (POST it as `policy` to /v1/validate/jwt; an inline `jwks_uri` needs its host in JWKS_URI_ALLOWLIST, "
    "or use it in an issuer profile). `audience` fills `audiences` (repeat it or separate with commas); every "
    "other parameter is one the preset declares. Unknown provider: 404 `PRESET_NOT_FOUND` with `known`; unknown, "
    "missing or malformed parameters: 422 with `loc` `[\"query\", name]`."
)
_AUTH0_PARAMETERS = {"tenant_domain": "Your tenant domain, e.g. acme.us.auth0.com, or your custom domain when tokens "
                                      "are requested through it (the issuer follows the domain the token was "
                                      "requested from)"}
_RESPONSES["presets"] = {200: ("The presets", {"presets": [
    {"provider": "auth0", "title": "Auth0", "parameters": _AUTH0_PARAMETERS},
    {"provider": "google", "title": "Google Sign-In (ID tokens)", "parameters": {}}]})}
_RESPONSES["preset"] = {
    200: ("GET /v1/presets/auth0?tenant_domain=acme.us.auth0.com&audience=https://api.acme.com", {
        "provider": "auth0", "title": "Auth0", "issuer": "https://acme.us.auth0.com/",
        "jwks_uri": "https://acme.us.auth0.com/.well-known/jwks.json", "parameters": _AUTH0_PARAMETERS,
        "policy": {"issuer": "https://acme.us.auth0.com/", "audiences": ["https://api.acme.com"],
                   "allowed_algs": ["RS256"], "jwks_uri": "https://acme.us.auth0.com/.well-known/jwks.json",
                   "required_claims": ["sub"], "clock_skew_seconds": 60, "token_type": None},
        "notes": "The audience is your API's Identifier (Dashboard > Applications > APIs), not the application's "
                 "client id; ..."}),
    404: ("Unknown provider", {
        "type": "urn:jwt-decision:problem:preset-not-found", "title": "Preset not found", "status": 404,
        "detail": "No preset for provider 'auth1'.", "code": "PRESET_NOT_FOUND",
        "known": ["auth0", "cognito", "entra_id", "firebase", "github_actions", "gitlab", "google", "keycloak",
                  "okta"]}),
    422: ("A parameter is unknown, missing or malformed", {
        "type": "urn:jwt-decision:problem:request-invalid", "title": "Invalid request", "status": 422,
        "detail": "The request is invalid: expected a host name such as 'acme.us.auth0.com' (not a URL: drop "
                  "'https://' and any path).", "code": "REQUEST_INVALID",
        "errors": [{"loc": ["query", "tenant_domain"], "msg": "expected a host name such as 'acme.us.auth0.com' "
                    "(not a URL: drop 'https://' and any path)", "type": "value_error"}]}),
}


# Authorization decisions (authorization.md sections 3 and 4).

AUTHORIZE_DESCRIPTION = (
    "Decides whether a request is allowed by an authorizer (an id from AUTHORIZERS_JSON, or an inline authorizer "
    "for testing rules). Order: normalise the path (`path_rejected`), extract the token (`token_missing`, "
    "`invalid_request` when more than one), validate it (`token_invalid`, `keys_unavailable`), run the rules with "
    "deny-overrides combining (`rule_denied`, `default_deny`, `rule_allowed`, `default_allow`), then the rate "
    "limit (`rate_limited`; consumed only by requests that would be allowed). Always **200** for a well-formed "
    "request: `status` is what forward-auth would answer. `explain: true` adds a per-rule, per-condition `trace`."
)
FORWARD_AUTH_DESCRIPTION = (
    "The decision as a status, for nginx `auth_request`, Traefik `forwardAuth` and Caddy `forward_auth`. The "
    "original request comes from `X-Forwarded-Method`/`X-Original-Method` and `X-Forwarded-Uri`/`X-Original-URI` "
    "(the proxy must set them, overriding what clients send). 200 carries the `claims_to_headers` headers (those "
    "it leaves out, a claim the token lacks, named in `X-Envoy-Auth-Headers-To-Remove`); 401 "
    "`WWW-Authenticate`; 403; 429 (or the authorizer's `rate_limit.status`) with `Retry-After` and `RateLimit-*`; "
    "400 for a rejected path or several tokens. Any method but CONNECT is accepted (granian turns a 2xx answer to "
    "CONNECT into a tunnel); the body is ignored."
)
FORWARD_AUTH_PATH_DESCRIPTION = (
    FORWARD_AUTH_DESCRIPTION + " Without the forwarded-URI headers the original path is the part of this URL after "
    "the authorizer segment, with the query string (Envoy `ext_authz` with `path_prefix`)."
)
_ORG_RULE = {"id": "org-isolation", "effect": "allow", "methods": ["GET"],
             "path": {"path": {"pattern": "^/v1/organisations/{{orgId}}(/.*)?$"}, "presence": "must_exist"},
             "variables": [{"name": "orgId", "source": "jwtClaim", "key": "https://myapp.com/org_id"}]}
_REQUESTS["authorize"] = [
    Example(summary="A request against a configured authorizer", value={
        "authorizer": "api-premium",
        "request": {"method": "GET", "path": "/v1/organisations/acme/reports?x=1",
                    "headers": {"authorization": "Bearer " + RFC7515_A1_TOKEN}},
        "explain": False}),
    Example(summary="Test rules with an inline authorizer and an explicit token", value={
        "authorizer": {"policy": {"issuer": "joe", "audiences": ["https://api.example.com"],
                                  "allowed_algs": ["HS256"], "jwks": {"keys": [RFC7515_A1_JWK]}},
                       "rules": [_ORG_RULE], "default_effect": "deny"},
        "request": {"method": "GET", "path": "/v1/organisations/acme/reports"},
        "token": RFC7515_A1_TOKEN, "explain": True}),
]
_RESPONSES["authorize"] = {
    200: ("The decision (always 200 for a well-formed request)", {
        "allowed": False, "decision": "deny", "status": 403, "reason": "rule_denied", "authorizer": "api-premium",
        "rule": {"id": "tier-check", "index": 0, "effect": "deny", "priority": 0,
                 "notes": "Standard proxy: free and standard plans only"},
        "variables": {}, "validation": {"valid": True, "statuses": {
            "format": "pass", "algorithm": "pass", "key": "pass", "signature": "pass", "issuer": "pass",
            "audience": "pass", "time": "pass", "lifetime": "skip", "token_type": "skip", "required_claims": "pass"},
            "findings": []},
        "headers": {}, "www_authenticate": "Bearer realm=\"api-premium\", error=\"insufficient_scope\"",
        "rate_limit": None, "cache_ttl": 0, "trace": None}),
    422: ("The request or its inline authorizer is invalid", {
        "type": "urn:jwt-decision:problem:policy-invalid", "title": "Invalid authorizer", "status": 422,
        "detail": "The authorizer is inconsistent: RE2 refuses this pattern: invalid escape sequence: \\1 (at "
                  "body.authorizer.rules.0.path.pattern).", "code": "POLICY_INVALID",
        "errors": [{"loc": ["body", "authorizer", "rules", 0, "path", "pattern"],
                    "msg": "RE2 refuses this pattern: invalid escape sequence: \\1", "type": "value_error"}]}),
    404: ("Unknown authorizer", {
        "type": "urn:jwt-decision:problem:authorizer-not-found", "title": "Authorizer not found", "status": 404,
        "detail": "No authorizer 'api' is configured.", "code": "AUTHORIZER_NOT_FOUND",
        "known": ["api-premium", "api-standard"]}),
    413: _RESPONSES["validate"][413],
}
_RESPONSES["forwardAuth"] = {200: ("Allowed: the claims_to_headers headers are set",
                                   {"decision": "allow", "reason": "rule_allowed", "rule": "org-isolation"})}
_FORWARD_DENIALS = {
    400: ("Path rejected (encoded slash, backslash, NUL) or several tokens",
          {"decision": "deny", "reason": "path_rejected", "rule": None}),
    401: ("No token, or a bad one (see WWW-Authenticate)", {"decision": "deny", "reason": "token_invalid",
                                                           "rule": None}),
    403: ("Denied by the rules", {"decision": "deny", "reason": "rule_denied", "rule": "tier-check"}),
    429: ("Rate limited (see Retry-After)", {"decision": "deny", "reason": "rate_limited", "rule": "premium"}),
}


def forward_auth_responses() -> dict[int, ResponseSpec]:
    from app.api.authorize import ForwardAuthBody
    from app.problems import ProblemDetails

    specs = {status: ResponseSpec(data_container=ForwardAuthBody, description=description,
                                  examples=[Example(summary=description, value=value)])
             for status, (description, value) in _FORWARD_DENIALS.items()}
    description, value = _RESPONSES["authorize"][404]
    specs[404] = ResponseSpec(data_container=ProblemDetails, description=description,
                              examples=[Example(summary=description, value=value)],
                              media_type="application/problem+json")
    return specs
