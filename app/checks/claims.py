"""Claim checks: issuer, audience, token type and required claims, values and scopes (RFC 7519, RFC 9068)."""

from __future__ import annotations

import re
import unicodedata
from typing import Any
from urllib.parse import SplitResult, urlsplit

from app.checks import Context
from app.findings import Finding, finding
from app.patterns import scope_words
from app.policy import CompiledPolicy, normalise_typ

_CLIENT_ID = re.compile(r"^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[A-Za-z0-9]{20,40})$")


def granted_scopes(claims: dict[str, Any]) -> list[str]:
    """Scopes granted: the space-separated `scope` string, plus `scp` (array or space-separated string) and the
    `permissions` array (Auth0 RBAC)."""
    granted: list[str] = []
    for name in ("scope", "scp", "permissions"):
        value = claims.get(name)
        if isinstance(value, str) and name != "permissions":
            granted.extend(scope_words(value))
        elif isinstance(value, list) and name != "scope":
            granted.extend(item for item in value if isinstance(item, str))
    return list(dict.fromkeys(granted))


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: `true` is not `1`, and `"true"` is not `true`."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[key], b[key]) for key in a)
    return type(a) is type(b) and a == b


def _issuer_hint(actual: str, expected: tuple[str, ...]) -> str | None:
    for wanted in expected:
        if actual.rstrip("/") == wanted.rstrip("/"):
            return (f"The two differ only by a trailing slash; issuers are compared exactly (Auth0 issuers end with "
                    f"'/', Okta and Cognito ones do not). If this is your issuer, configure {actual!r}: the token "
                    "carries it that way, and so does the issuer's discovery document.")
        if not actual.isascii() and wanted.isascii() and \
                unicodedata.normalize("NFKC", actual).lower() == wanted.lower():
            # Not a typo: a look-alike (the Kelvin sign for K, fullwidth letters) was read as "letter case"
            strange = next(char for char in actual if not char.isascii())
            return (f"The token's issuer only looks like this one: it holds U+{ord(strange):04X} "
                    f"({unicodedata.name(strange, 'a non-ASCII character')}) where the expected issuer has ASCII. "
                    "It is another issuer; a token spelled so may be forged to pass a visual check.")
        if actual.lower() == wanted.lower():
            return "The two differ only by letter case; issuers are compared case-sensitively (RFC 7519 4.1.1)."
        try:
            a, w = urlsplit(actual), urlsplit(wanted)
        except ValueError:  # `iss` is the token's text: "https://[x" is not a URL (invalid IPv6), so no scheme hint
            continue
        if a.scheme != w.scheme and _host_and_path(a) == _host_and_path(w):
            # Google issues both 'accounts.google.com' and 'https://accounts.google.com' (found by a review: one
            # without a scheme has no netloc, and got no hint)
            if a.scheme and w.scheme:
                return (f"The two differ only by scheme ({a.scheme} vs {w.scheme}); the issuer must match exactly, "
                        "and should be https.")
            return ("The two differ only by a scheme one of them lacks; the issuer must match exactly. If the "
                    "issuer really uses both forms (Google does), list both.")
    return None


def _host_and_path(url: SplitResult) -> tuple[str, str]:
    """The host (in lower case) and the path of an issuer, with or without a scheme."""
    if url.netloc:
        return url.netloc.lower(), url.path
    host, slash, path = url.path.partition("/")
    return host.lower(), slash + path


def check_issuer(ctx: Context) -> list[Finding]:
    """RFC 7519 section 4.1.1 with OIDC Core 3.1.3.7: the `iss` value MUST exactly match the expected issuer."""
    expected = ctx.policy.issuers
    actual = ctx.token.claims.get("iss")
    evidence = {"expected": ctx.policy.expected_issuer, "actual": actual}
    if actual is None:
        return [finding("ISSUER_MISMATCH", "'iss' is missing", evidence,
                        "Tokens from an OAuth/OIDC issuer always carry 'iss'; this token may not be from your IdP.")]
    if not isinstance(actual, str):
        return [finding("ISSUER_MISMATCH", "'iss' is not a string", evidence)]
    if actual in expected:
        return []
    return [finding("ISSUER_MISMATCH", "iss does not equal the expected issuer", evidence,
                    _issuer_hint(actual, expected))]


HINTED_AUDIENCES = 16


def _audience_hint(ctx: Context, actual: list[str]) -> str | None:
    claims, expected = ctx.token.claims, ctx.policy.audiences
    if actual and all(value.endswith("/userinfo") for value in actual):
        return ("The only audience is the /userinfo endpoint: the token was requested without your API's audience "
                "(Auth0: pass the 'audience' parameter of your API Identifier).")
    stripped = {wanted.rstrip("/") for wanted in expected}  # one pass each: `aud` may be a long array
    if any(value.rstrip("/") in stripped for value in actual):
        return "The audiences differ only by a trailing slash; audiences are compared exactly."
    if any(_CLIENT_ID.match(value) for value in actual) and not any(_CLIENT_ID.match(value) for value in expected):
        return ("The audience looks like a client id: this is probably an ID token (whose aud is the client) or an "
                "Entra ID v2 token (whose aud is the application's GUID, not the api:// URI). Send the access token "
                "for your API, or list the client id in audiences if that is intended.")
    return None


def check_audience(ctx: Context) -> list[Finding]:
    """RFC 7519 section 4.1.3: "If the principal processing the claim does not identify itself with a value in the
    "aud" claim when this claim is present, then the JWT MUST be rejected." Here `aud` is required, too."""
    policy, claims = ctx.policy, ctx.token.claims
    name = policy.audience_claim
    actual = claims.get(name)
    evidence = {"claim": name, "expected": sorted(policy.audiences), "actual": actual}
    if actual is None:
        if name == "aud" and "client_id" in claims and claims.get("token_use") == "access":
            hint = ("Cognito access tokens carry 'client_id', not 'aud': set audience_claim to 'client_id' "
                    "(the cognito preset does this).")
        elif name != "aud":  # (found by a review: a Cognito ID token was told Auth0's advice)
            hint = (f"This policy reads the audience from '{name}', which the token lacks"
                    + (": it is an ID token, whose audience is in 'aud'. Send the access token."
                       if is_id_token(claims) else "."))
        else:
            hint = ("Without an audience the token was not minted for an API (Auth0: a token requested without the "
                    "'audience' parameter is opaque or an ID token). Request it with your API's audience.")
        return [finding("AUDIENCE_MISMATCH", f"'{name}' is missing", evidence, hint)]
    values = [actual] if isinstance(actual, str) else actual
    if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
        return [finding("AUDIENCE_MISMATCH", f"'{name}' is not a string or an array of strings", evidence)]
    if policy.audiences.intersection(values):
        return []
    # A near miss is told from the first values: a forged token's thousand audiences buy no more work.
    return [finding("AUDIENCE_MISMATCH", f"'{name}' contains none of the expected audiences", evidence,
                    _audience_hint(ctx, values[:HINTED_AUDIENCES]))]


def is_id_token(claims: dict[str, Any]) -> bool:
    return "nonce" in claims or "at_hash" in claims or claims.get("token_use") == "id"


def check_token_type(ctx: Context) -> list[Finding] | None:
    """RFC 9068 section 4: resource servers "MUST verify that the "typ" header value is "at+jwt" or
    "application/at+jwt" and reject tokens carrying any other value" - when the policy asks for it."""
    expected, header, claims = ctx.policy.token_type, ctx.token.header, ctx.token.claims
    findings: list[Finding] = []
    id_token = is_id_token(claims)
    if expected is not None:
        typ = header.get("typ")
        if not isinstance(typ, str) or normalise_typ(typ) != expected:
            hint = None
            if id_token:
                hint = "This is an ID token; send the access token instead."
            elif expected == "at+jwt":
                hint = ("RFC 9068 access tokens carry typ 'at+jwt'. Many IdPs (Auth0, Okta, Entra ID) send 'JWT' "
                        "for access tokens: set token_type to null for them.")
            findings.append(finding("TYP_INVALID", "the 'typ' header does not match the expected token type",
                                    {"expected": expected, "actual": typ}, hint))
    if (id_token and expected == "at+jwt") or claims.get("token_use") == "id":
        findings.append(finding("TOKEN_KIND_MISMATCH", "this looks like an ID token, not an access token",
                                {"markers": [name for name in ("nonce", "at_hash") if name in claims]
                                 + (["token_use: id"] if claims.get("token_use") == "id" else [])},
                                "ID tokens tell the client who signed in; APIs must accept access tokens only. "
                                "Send the access token (Cognito: token_use 'access')."))
    if expected is None and not findings:
        return None
    return findings


def _value_hint(expected: Any, actual: Any) -> str | None:
    if isinstance(actual, str) and isinstance(expected, bool) and actual == str(expected).lower():
        return ("The claim is the string " + repr(actual) + ", not a boolean: some issuers (GitLab's "
                "'ref_protected') send booleans as strings. Expect " + repr(actual) + ".")
    if isinstance(expected, str) and isinstance(actual, bool) and expected == str(actual).lower():
        return "The claim is a JSON boolean, not a string: expect " + str(actual).lower() + " without quotes."
    return None


_JUDGED_ELSEWHERE = frozenset({"exp", "nbf", "iat", "iss"})  # and the policy's audience claim

# The token's scopes shown in each SCOPE_MISSING finding: a hostile token's thousands of scopes, repeated in each of
# up to 64 findings, would make the answer many times the token (validation.md: a hostile token costs no more
# than a valid one).
MAX_SCOPE_TEXT = 1024


def _bounded(granted: list[str]) -> dict[str, Any]:
    """`{"granted": [...]}`, cut to the first scopes that fit in MAX_SCOPE_TEXT characters, with `granted_count`
    (how many there are) when cut."""
    shown: list[str] = []
    size = 0
    for scope in granted:
        size += len(scope) + 1
        if size > MAX_SCOPE_TEXT:
            return {"granted": shown, "granted_count": len(granted)}
        shown.append(scope)
    return {"granted": shown}


def check_required_claims(ctx: Context) -> list[Finding] | None:
    """Every missing claim, wrong value or missing scope is its own finding."""
    policy = ctx.policy
    if not (policy.required_claims or policy.required_custom_claims or policy.required_scopes):
        return None
    return check_required_claims_for(policy, ctx.token.claims)


def check_required_claims_for(policy: CompiledPolicy, claims: dict[str, Any], first: bool = False) -> list[Finding]:
    """The findings of the required claims and scopes; with `first`, at most the first (whether any: the
    straight line's question, which built every finding and hint of a hostile token twice; found by a review)."""
    findings: list[Finding] = []
    for name in policy.required_claims:
        # `null` is no value (OIDC Core 5.1: omit a claim rather than send null); a null exp, nbf, iat, iss or aud
        # is reported by the check that reads it (CLAIM_INVALID, ISSUER_MISMATCH...), not twice.
        if name == "exp" and name not in claims and policy.require_exp:
            continue  # the time check reports it, with the same code: not twice (found by a review)
        if name not in claims or (claims[name] is None and name not in _JUDGED_ELSEWHERE
                                  and name != policy.audience_claim):
            findings.append(finding("REQUIRED_CLAIM_MISSING", f"required claim {name!r} is "
                                    f"{'null' if name in claims else 'missing'}", {"claim": name}))
            if first:
                return findings
    for name, expected in policy.required_custom_claims:
        if name not in claims:
            findings.append(finding("REQUIRED_CLAIM_MISSING", f"required claim {name!r} is missing",
                                    {"claim": name, "expected": expected},
                                    "Claim names are used as written: 'https://myapp.com/plan' is one claim name, "
                                    "not a path." if "/" in name else None))
            if first:
                return findings
            continue
        actual = claims[name]
        # Equal, or for an array claim containing it (validation.md section 2), an array among them too (it was
        # never looked for: found by a review). An array is not a set of values: ["a", "b"] is not in ["a", "b", "c"].
        matches = json_equal(actual, expected) or (
            isinstance(actual, list) and any(json_equal(item, expected) for item in actual))
        if not matches:
            findings.append(finding("CLAIM_VALUE_MISMATCH", f"claim {name!r} does not have the required value",
                                    {"claim": name, "expected": expected, "actual": actual},
                                    _value_hint(expected, actual)))
            if first:
                return findings
    if policy.required_scopes:
        granted = granted_scopes(claims)
        have = set(granted)
        missing = [scope for scope in policy.required_scopes if scope not in have]
        if first and missing:
            missing = missing[:1]
        shown = _bounded(granted)
        unread = _unread_scopes(claims) if missing and not first else []  # (hints: not asked for by `first`)
        required = list(policy.required_scopes)  # one list for every finding (a cached entry holds them all)
        for scope in missing:
            findings.append(finding("SCOPE_MISSING", f"scope {scope!r} is not granted",
                                    {"scope": scope, "required": required, **shown,
                                     "missing": missing},
                                    _SPACED_SCOPE if scope != scope.strip() or len(scope.split()) > 1 else
                                    next((hint for held, hint in unread if scope in held), None) or
                                    "Grant the scope to the client at the IdP (Auth0: enable RBAC and 'Add "
                                    "Permissions in the Access Token' for 'permissions')."))
    return findings


# A required scope holding white space is the policy's mistake (found by a review: the token was told its commas).
_SPACED_SCOPE = ("The policy requires a scope holding white space, which no scope is: 'scope' separates scopes by "
                 "spaces (RFC 6749 3.3). List each scope on its own in required_scopes.")


def _unread_scopes(claims: dict[str, Any]) -> list[tuple[frozenset[str], str]]:
    """The scopes the token carries in shapes `granted_scopes` does not read, each with its hint, in the order they
    are told (found by a review: the hint sent developers to the IdP's console to grant what the token held). Read
    once per token: once per missing scope, a 16 KB `scope` was split 4 times for each of 64 required scopes."""
    shapes: list[tuple[frozenset[str], str]] = []
    for name in ("scope", "scp", "permissions"):
        value = claims.get(name)
        if isinstance(value, list) and name == "scope":
            shapes.append((frozenset(item for item in value if isinstance(item, str)),
                           "The token holds this scope in a 'scope' array; 'scope' is one space-separated string (RFC "
                           "8693 4.2, RFC 9068 2.2.3). Fix the claim at the IdP, or send the array as 'scp'."))
        elif isinstance(value, str) and name == "permissions":
            shapes.append((frozenset(value.split()), "The token holds this scope in a 'permissions' string; "
                                                     "'permissions' is an array (Auth0 RBAC)."))
        elif isinstance(value, str) and "," in value:
            shapes.append((frozenset(map(str.strip, value.split(","))),
                           f"The token's '{name}' separates scopes with commas; they are separated by spaces (RFC "
                           "6749 3.3). Fix the claim at the IdP."))
        if isinstance(value, str) and name != "permissions":
            # str.split() also splits at tabs, line breaks and other Unicode white space (NBSP...).
            shapes.append((frozenset(value.split()),
                           f"The token's '{name}' separates scopes with other white space than the space character "
                           "(a tab, a line break or a no-break space); RFC 6749 3.3 separates them by spaces (%x20). "
                           "Fix the claim at the IdP."))
    return shapes
