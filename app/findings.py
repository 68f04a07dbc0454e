"""The one catalogue of codes.

Every code the service can emit is declared here once, with the check it belongs to, its default severity and
a sentence saying what it means. The checks, the OpenAPI enum, the README table and the metrics labels all
read this catalogue, so a code cannot exist in one place and be missing in another.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

import msgspec

Severity = Literal["error", "warning"]
Status = Literal["pass", "fail", "skip"]

# The status keys of a validation answer, in the order the checks run (validation.md section 3).
CHECK_ORDER: tuple[str, ...] = (
    "format",
    "algorithm",
    "key",
    "signature",
    "issuer",
    "audience",
    "time",
    "lifetime",
    "token_type",
    "required_claims",
)


class CodeInfo(msgspec.Struct, frozen=True):
    check: str
    severity: Severity
    meaning: str


# Validation finding codes (validation.md section 3).
VALIDATION_CODES: dict[str, CodeInfo] = {
    "MALFORMED_TOKEN": CodeInfo(
        "format", "error", "Not a compact JWS: segments, base64url, JSON objects, UTF-8, duplicate names, depth or size."
    ),
    "ALGORITHM_INVALID": CodeInfo(
        "algorithm", "error", "`alg` missing, `none`, not in `allowed_algs`, or not of the configured key's family."
    ),
    "KID_NOT_FOUND": CodeInfo("key", "error", "No key in the key set has the token's `kid` and fits its `alg`, "
                                              "or the token has no `kid` and more than 4 keys fit."),
    "JWKS_UNAVAILABLE": CodeInfo(
        "key", "error", "No usable key set could be fetched; says nothing about the token's signature."
    ),
    "CRIT_UNSUPPORTED": CodeInfo("key", "error", "The `crit` header names an extension this service does not implement."),
    "JWKS_STALE": CodeInfo(
        "key", "warning", "The key set could not be refreshed; the last good set (older than its max age) was used."
    ),
    "HEADER_KEY_IGNORED": CodeInfo(
        "key", "warning", "The header names its own key (`jwk`, `jku`, `x5u`, `x5c`); it was ignored, never trusted."
    ),
    "SIGNATURE_INVALID": CodeInfo("signature", "error", "The signature does not verify with the selected key."),
    "WEAK_KEY": CodeInfo(
        "signature", "error", "RSA key under 2048 bits (error), or HMAC secret shorter than the hash output (warning)."
    ),
    "ISSUER_MISMATCH": CodeInfo("issuer", "error", "`iss` is missing or not exactly one of the expected issuers."),
    "AUDIENCE_MISMATCH": CodeInfo("audience", "error", "The audience claim is missing or shares no value with `audiences`."),
    "TOKEN_EXPIRED": CodeInfo("time", "error", "`exp` is at or before now minus the clock skew."),
    "TOKEN_NOT_YET_VALID": CodeInfo("time", "error", "`nbf` is after now plus the clock skew."),
    "TOKEN_ISSUED_IN_FUTURE": CodeInfo("time", "error", "`iat` is after now plus the clock skew."),
    "CLAIM_INVALID": CodeInfo("time", "error", "A time claim is not a number of seconds up to the year 9999 (strings and booleans are refused; a date in milliseconds, micro- or nanoseconds is named as such)."),
    "REQUIRED_CLAIM_MISSING": CodeInfo(
        "required_claims", "error",
        "A required claim is absent; `exp` (when `require_exp`) is reported by the `time` check, as `check` says."
    ),
    "TOKEN_LIFETIME_EXCEEDED": CodeInfo(
        "lifetime", "error", "`exp - iat` exceeds `max_ttl_seconds`, or `iat` is missing so it cannot be bounded."
    ),
    "TYP_INVALID": CodeInfo("token_type", "error", "The `typ` header does not match the expected `token_type`."),
    "TOKEN_KIND_MISMATCH": CodeInfo(
        "token_type", "warning",
        "An ID token (`nonce`, `at_hash`) under a policy whose `token_type` is `at+jwt`, or any token with `token_use: id`.",
    ),
    "CLAIM_VALUE_MISMATCH": CodeInfo(
        "required_claims", "error", "A `required_custom_claims` claim has another value (or its array lacks it)."
    ),
    "SCOPE_MISSING": CodeInfo("required_claims", "error", "A required scope is not granted by `scope`, `scp` or `permissions`."),
}

# Suspicious patterns reported by /v1/inspect/token (validation.md section 1).
INSPECT_CODES: dict[str, str] = {
    "MALFORMED_TOKEN": "The token cannot be decoded as a compact JWS.",
    "OPAQUE_TOKEN": "Not a JWT at all: an opaque token (for example an Auth0 token issued without an audience).",
    "BEARER_PREFIX": "The `Bearer ` scheme was left in front of the token.",
    "ALG_NONE": "`alg` is `none` (any case): an unsigned token, never acceptable.",
    "ALG_SYMMETRIC": "`alg` is HS*: anyone holding the shared secret can mint tokens.",
    "HEADER_KEY_PRESENT": "The header carries `jwk`, `jku`, `x5u` or `x5c`: a key chosen by the token's author.",
    "KID_SUSPICIOUS": "`kid` contains path, quote or control characters (injection attempts).",
    "CRIT_PRESENT": "The header has `crit`: extensions a verifier must understand or reject.",
    "EXP_MISSING": "No `exp`: the token never expires.",
    "LONG_LIFETIME": "`exp` is over 24 hours after `iat` (without `iat`: after `nbf`, else after now).",
    "EXPIRED": "`exp` is in the past.",
    "NOT_YET_VALID": "`nbf` is in the future.",
    "IAT_IN_FUTURE": "`iat` is in the future.",
    "AUD_MISSING": "No `aud` claim.",
    "AUD_USERINFO": "The only audience is an Auth0 `/userinfo` endpoint: a token for the userinfo API, not yours.",
    "ID_TOKEN": "Looks like an ID token (`nonce`, `at_hash` or `token_use: id`), not an access token.",
}

# Codes of problem+json request errors (RFC 9457 bodies).
PROBLEM_CODES: dict[str, str] = {
    "REQUEST_INVALID": "The request body is not valid JSON of the expected shape (see `errors`).",
    "POLICY_INVALID": "The inline policy or authorizer is inconsistent (see `errors`).",
    "ISSUER_PROFILE_NOT_FOUND": "No issuer profile has this id (see `known`).",
    "AUTHORIZER_NOT_FOUND": "No authorizer has this id (see `known`).",
    "PRESET_NOT_FOUND": "No preset for this provider (see `known`).",
    "BODY_TOO_LARGE": "The request body exceeds MAX_BODY_BYTES.",
    "BODY_INCOMPLETE": "The request body ended before its declared end (the client left), or its chunked framing "
                       "is malformed.",
    "BODY_TIMEOUT": "The request body did not arrive within READ_TIMEOUT_SECONDS (408).",
    "UNSUPPORTED_MEDIA_TYPE": "The request body is not sent as JSON: send Content-Type: application/json.",
    "UNAUTHORIZED": "A valid X-API-Key is required.",
    "NOT_FOUND": "No such route.",
    "METHOD_NOT_ALLOWED": "The route does not accept this method.",
    "INTERNAL": "The service failed to process this request (logged with where it was raised).",
}


class Finding(msgspec.Struct, frozen=True):
    """Errors as data: what failed, in which check, how badly, with evidence and what to do about it."""

    code: str
    check: str
    severity: Severity
    message: str
    evidence: dict[str, Any] = {}
    remediation: str | None = None


def finding(
    code: str,
    message: str,
    evidence: dict[str, Any] | None = None,
    remediation: str | None = None,
    *,
    check: str | None = None,
    severity: Severity | None = None,
) -> Finding:
    """Build a finding whose check and severity default to the catalogue's."""
    info = VALIDATION_CODES[code]
    return Finding(
        code=code,
        check=check or info.check,
        severity=severity or info.severity,
        message=message,
        evidence=evidence or {},
        remediation=remediation,
    )


ValidationCode = Enum("ValidationCode", {code: code for code in VALIDATION_CODES}, type=str)  # type: ignore[misc]
InspectCode = Enum("InspectCode", {code: code for code in INSPECT_CODES}, type=str)  # type: ignore[misc]


def code_table_markdown() -> str:
    """The README's code table, generated from the catalogue (a test keeps the README in sync)."""
    rows = ["| code | check | severity | meaning |", "|---|---|---|---|"]
    for code, info in VALIDATION_CODES.items():
        rows.append(f"| `{code}` | {info.check} | {info.severity} | {info.meaning} |")
    return "\n".join(rows)
