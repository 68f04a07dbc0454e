"""Decoding without verifying (/v1/inspect/token): show what a token says and flag what looks wrong on sight."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from app.checks.claims import is_id_token
from app.checks.time import finer_unit, in_milliseconds, numeric_date
from app.findings import INSPECT_CODES
from app.keys import SYMMETRIC
from app.token import WHITESPACE, MalformedToken, has_bearer_prefix, parse, token_id

_JSON_TYPES = {int: "number", float: "number", bool: "boolean", list: "array", dict: "object"}
WARNING = "Decoded does not mean validated: nothing here is verified. Use /v1/validate/jwt before trusting any claim."
LONG_LIFETIME_SECONDS = 24 * 3600
# Path, quote and control characters (Unicode's Cc: C0, DEL and C1, whose U+009B is a terminal's CSI).
_SUSPICIOUS_KID = re.compile(r"[/\\'\"`\x00-\x1f\x7f-\x9f]|\.\.")


class Decoded(msgspec.Struct):
    header: dict[str, Any]
    payload: dict[str, Any]
    signature_segment: str


class Detail(msgspec.Struct, frozen=True):
    code: str
    message: str


class InspectResult(msgspec.Struct):
    decoded: Decoded | None
    validated: bool
    warning: str
    token_id: str
    suspicious_warnings: list[str]
    details: list[Detail]


def _codes(header: dict[str, Any], claims: dict[str, Any], now: float,
           reasons: dict[str, str] | None = None) -> list[str]:
    """The suspicious patterns; `reasons` receives the message for a code whose usual one would not fit."""
    codes: list[str] = []
    reasons = {} if reasons is None else reasons
    alg = header.get("alg")
    if isinstance(alg, str) and alg.lower() == "none":
        codes.append("ALG_NONE")
    # `alg` is whatever JSON the token carries: an array or object is unhashable, so test the type first.
    if isinstance(alg, str) and alg in SYMMETRIC:
        codes.append("ALG_SYMMETRIC")
    if any(name in header for name in ("jwk", "jku", "x5u", "x5c")):
        codes.append("HEADER_KEY_PRESENT")
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or _SUSPICIOUS_KID.search(kid)):
        codes.append("KID_SUSPICIOUS")
        if not isinstance(kid, str):
            reasons["KID_SUSPICIOUS"] = (f"`kid` is a JSON {_JSON_TYPES.get(type(kid), 'value')}, not a string (RFC "
                                         "7515 section 4.1.4): key lookups that expect text may misread it.")
    if "crit" in header:
        codes.append("CRIT_PRESENT")
    exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
    if "exp" not in claims:
        codes.append("EXP_MISSING")
    elif in_milliseconds(exp):
        codes.append("EXP_MISSING")
        reasons["EXP_MISSING"] = (f"`exp` is after the year 9999, a date in {finer_unit(exp)[0]} rather than "
                                  "seconds: validators that read it as seconds let the token live for millennia.")
    elif not numeric_date(exp):
        codes.append("EXP_MISSING")
        reasons["EXP_MISSING"] = ("`exp` is not a NumericDate (a JSON number of seconds): validators refuse the "
                                  "token or ignore the claim, so nothing makes it expire.")
    # From `iat`, else from `nbf`, else from now: a token without `iat` lives as long all the same.
    start, since = (iat, None) if numeric_date(iat) else (nbf, "`nbf`") if numeric_date(nbf) else (now, "now")
    if numeric_date(exp) and exp - start > LONG_LIFETIME_SECONDS:
        codes.append("LONG_LIFETIME")
        if since is not None:
            why = "the token has no `iat`" if "iat" not in claims else "its `iat` is no NumericDate"  # (a review)
            reasons["LONG_LIFETIME"] = f"`exp` is over 24 hours after {since} ({why})."
    if numeric_date(exp) and exp <= now:
        codes.append("EXPIRED")
    for name, value, code in (("nbf", nbf, "NOT_YET_VALID"), ("iat", iat, "IAT_IN_FUTURE")):
        if name not in claims:
            continue
        if numeric_date(value):
            if value > now:
                codes.append(code)
            continue
        # Validation refuses these (CLAIM_INVALID): an inspection that said nothing of them was found by a review.
        codes.append(code)
        reasons[code] = (f"`{name}` is after the year 9999 (a date in {finer_unit(value)[0]} rather than "
                         "seconds?), so validators refuse the token" if in_milliseconds(value) else
                         f"`{name}` is not a NumericDate (a JSON number of seconds since the epoch, within the year "
                         "9999): validators refuse the token")
    aud = claims.get("aud")
    if aud is None:
        codes.append("AUD_MISSING")
    elif aud == "" or not isinstance(aud, (str, list)) or \
            isinstance(aud, list) and not any(isinstance(value, str) and value for value in aud):  # [""], [1]
        codes.append("AUD_MISSING")
        reasons["AUD_MISSING"] = "`aud` names no audience (empty, or not a string or array of strings)."
    else:
        values = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if values and all(isinstance(value, str) and value.endswith("/userinfo") for value in values):
            codes.append("AUD_USERINFO")
    if is_id_token(claims):
        codes.append("ID_TOKEN")
    return codes


def _details(codes: list[str], reasons: dict[str, str] | None = None) -> list[Detail]:
    return [Detail(code, (reasons or {}).get(code, INSPECT_CODES[code])) for code in codes]


def inspect_token(raw: str, now: float, max_token_bytes: int) -> InspectResult:
    raw = raw.strip(WHITESPACE)
    tid = token_id(raw)
    prefix = has_bearer_prefix(raw)
    candidate = raw[7:].strip(WHITESPACE) if prefix else raw
    try:
        token = parse(candidate, max_token_bytes)
    except MalformedToken as exc:
        codes = ["BEARER_PREFIX"] if prefix else []
        if exc.evidence.get("segments") == 1:
            codes.append("OPAQUE_TOKEN")
        codes.append("MALFORMED_TOKEN")
        reasons = {"MALFORMED_TOKEN": exc.reason}
        decoded = None
        if exc.header is not None and exc.claims is not None:  # only the signature segment is malformed: the rest
            # is shown, as /v1/validate/jwt shows it (found by a review: inspecting it showed less)
            codes += _codes(exc.header, exc.claims, now, reasons)
            decoded = Decoded(exc.header, exc.claims, candidate.rsplit(".", 1)[-1])
        return InspectResult(decoded, False, WARNING, tid, codes, _details(codes, reasons))
    reasons: dict[str, str] = {}
    codes = (["BEARER_PREFIX"] if prefix else []) + _codes(token.header, token.claims, now, reasons)
    return InspectResult(Decoded(token.header, token.claims, token.signature_segment), False, WARNING, tid, codes,
                         _details(codes, reasons))
