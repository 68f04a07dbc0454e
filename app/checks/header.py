"""Checks on the JOSE header: algorithm, key selection, signature (RFC 7515, RFC 7518, RFC 8725)."""

from __future__ import annotations

import time as _time
from typing import Any

import msgspec

from app.checks import Context
from app.findings import Finding, finding
from app.keys import ALGORITHMS, MAX_KEYS_TRIED, MIN_RSA_BITS, SYMMETRIC, KeyEntry

HEADER_KEY_PARAMETERS = ("jwk", "jku", "x5u", "x5c")


def check_algorithm(ctx: Context) -> list[Finding]:
    """RFC 8725 section 3.1: "libraries MUST enable the caller to specify a supported set of algorithms and MUST
    NOT use any other algorithms when performing cryptographic operations." Checked before any key lookup."""
    alg = ctx.token.header.get("alg")
    policy = ctx.policy
    allowed = sorted(policy.allowed_algs)
    if not isinstance(alg, str) or not alg:
        return [finding("ALGORITHM_INVALID", "the header has no 'alg' string",
                        {"expected": allowed, "actual": alg})]
    if alg.lower() == "none":
        return [finding("ALGORITHM_INVALID", "alg 'none' (an unsigned token) is never accepted",
                        {"expected": allowed, "actual": alg},
                        "Unsigned tokens prove nothing. If your IdP issues them, fix its signing configuration.")]
    if alg not in policy.allowed_algs:
        remediation = None
        if alg in SYMMETRIC and not any(name in SYMMETRIC for name in policy.allowed_algs):
            remediation = (f"{alg} against a policy for asymmetric keys: either a key-confusion attack (a token "
                           "MACed with the public key as the HMAC secret) or an IdP/application set to sign with "
                           f"{alg}; switch its signing algorithm to {' or '.join(allowed)} and use its public keys.")
        elif any(alg.lower() == name.lower() for name in policy.allowed_algs):
            meant = next(name for name in allowed if alg.lower() == name.lower())
            remediation = f"Algorithm names are case-sensitive (RFC 7518): {meant!r}, not {alg!r}."
        elif alg in ALGORITHMS:
            remediation = f"If the issuer really signs with {alg}, add it to allowed_algs (with a key of its type)."
        return [finding("ALGORITHM_INVALID", f"alg {alg!r} is not in allowed_algs",
                        {"expected": allowed, "actual": alg}, remediation)]
    ctx.algorithm = ALGORITHMS[alg]
    return []


def _crit_finding(crit: Any) -> Finding:
    """CRIT_UNSUPPORTED, saying which of RFC 7515 4.1.11's rules the header breaks: no extension is implemented
    here, so any well-formed `crit` fails too. The evidence is JSON text, never Python's repr of it."""
    if not (isinstance(crit, list) and crit and all(isinstance(name, str) for name in crit)):
        return finding("CRIT_UNSUPPORTED", "the 'crit' header is malformed: it must be a non-empty array of "
                       "extension names (RFC 7515 section 4.1.11), so the token must be rejected",
                       {"crit": msgspec.json.encode(crit).decode()[:200]},
                       "The issuer's JOSE library wrote an invalid header; a token without 'crit' is what is expected.")
    names = [name[:64] for name in crit[:10]]
    registered = [name for name in names if name in _REGISTERED_HEADERS]
    if "b64" in names:
        hint = ("RFC 7797 unencoded payloads (b64: false) are not supported: ask the issuer for a standard JWS, whose "
                "payload is base64url-encoded.")
    elif registered:
        verb = "is" if len(registered) == 1 else "are"
        hint = (f"{', '.join(registered)} {verb} defined by RFC 7515 itself and must not be listed in 'crit': the "
                "issuer's JOSE library wrote an invalid header.")
    else:
        hint = "No JWS extension is implemented here: the issuer must not mark one as critical for this audience."
    return finding("CRIT_UNSUPPORTED", "the header lists critical extensions this service does not implement, so "
                   "the token must be rejected", {"crit": names}, hint)


# Header parameters RFC 7515 (and RFC 7516) define, which 4.1.11 says `crit` must not list.
_REGISTERED_HEADERS = frozenset({"alg", "jku", "jwk", "kid", "x5u", "x5c", "x5t", "x5t#S256", "typ", "cty", "crit",
                                 "enc", "zip", "epk", "apu", "apv", "iv", "tag", "p2s", "p2c"})


def check_key(ctx: Context) -> list[Finding]:
    """RFC 7515 section 4.1.11: "If any of the listed extension Header Parameters are not understood and supported
    by the recipient, then the JWS is invalid." Keys named by the token itself are never used (RFC 8725 3.10)."""
    header, keys, algorithm = ctx.token.header, ctx.keys, ctx.algorithm
    assert algorithm is not None  # gated on check_algorithm
    findings: list[Finding] = []
    if "crit" in header:
        findings.append(_crit_finding(header["crit"]))
    present = [name for name in HEADER_KEY_PARAMETERS if name in header]
    if present:
        findings.append(finding("HEADER_KEY_IGNORED", "the header names its own key; it was ignored (only the "
                                "policy's keys are trusted)", {"parameters": present}))
    if keys.keyset is None:
        findings.append(finding("JWKS_UNAVAILABLE", "no usable key set is available, so the signature could not "
                                "be checked (this says nothing about the token)",
                                {"source": keys.source, "reason": keys.error or "not fetched yet"},
                                "The service could not fetch the issuer's key set; check /readyz and the "
                                "jwks_uri's reachability. Retry shortly."))
        return findings
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        findings.append(finding("KID_NOT_FOUND", "'kid' is not a string", {"kid_type": type(kid).__name__}))
        return findings
    single_key = ctx.policy.key_source in ("secret", "public_key")
    candidates = keys.keyset.candidates(algorithm, None if single_key else kid)
    if not candidates:
        fetched_at = keys.keyset.fetched_at
        evidence = {"kid": kid, "alg": algorithm.name, "known_kids": keys.keyset.shown_kids[:20]}
        remediation = None
        if fetched_at is not None:
            evidence["fetched_at"] = _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime(fetched_at))
            evidence["fetched_seconds_ago"] = max(0, int(ctx.now - fetched_at))
            remediation = (f"The key set was last fetched {evidence['fetched_seconds_ago']} s ago. If the issuer "
                           "rotated its keys, an unknown kid triggers a refetch at most once per cooldown; a kid "
                           "that stays unknown means the token comes from another tenant or issuer.")
        elif kid is not None and kid not in keys.keyset.kids:
            # A set of the policy's own (inline `jwks`): nothing to refetch; the set or the token's issuer is wrong.
            remediation = ("The policy's own key set has no key with this kid: add the issuer's current key to "
                           "it, or check that the token comes from the issuer you meant (another tenant signs "
                           "with other keys).")
            if any(key.kid is None for key in keys.keyset.candidates(algorithm, None)):
                # The issuer's key pasted without its kid (found by a review: the hint said to add a key it had).
                remediation = (f"The policy's own key set has a key without a kid that fits {algorithm.name}: a "
                               "token naming a kid is checked only against the key with that kid. Give that key "
                               "its 'kid' as the issuer publishes it.")
        else:
            remediation = (f"No key {'with this kid ' if kid is not None else ''}fits {algorithm.name}: check the "
                           "key's `alg`, `use` (sig) and `key_ops` (verify) against the token's `alg`.")
            named = [key.kty for key in keys.keyset.keys if key.kid == kid and key.kty != "oct"]
            if kid is not None and algorithm.name in SYMMETRIC and named:
                # An HMAC keyed with the public key the kid names: the key-confusion attack (RFC 8725 2.1, 3.1).
                remediation = (f"The key with this kid is an {named[0]} public key, and the token claims "
                               f"{algorithm.name}: an HMAC made with a public key is a key-confusion attempt (RFC "
                               "8725 section 2.1) or a broken issuer. Such a token is never accepted; an HMAC key "
                               "of the set has a kid of its own.")
        message = (f"no key with kid {kid!r} fits {algorithm.name}" if kid is not None
                   else f"no key in the set fits {algorithm.name}")
        findings.append(finding("KID_NOT_FOUND", message, evidence, remediation))
        return findings
    if not single_key and len(candidates) > MAX_KEYS_TRIED:
        if kid is None:
            message = (f"the token has no 'kid' and {len(candidates)} keys of the set fit {algorithm.name}; "
                       f"without a kid at most {MAX_KEYS_TRIED} are tried")
            remediation = ("Tokens from a set with several keys name theirs in 'kid' (every major IdP does); trying "
                           "each key for every token would let a forged token cost a verification per key.")
        else:
            message = (f"{len(candidates)} keys of the set share kid {kid!r} and fit {algorithm.name}; at most "
                       f"{MAX_KEYS_TRIED} are tried")
            remediation = ("A kid names one key (RFC 7517 4.5: different keys in a set should have distinct kids); "
                           "trying every key that shares it would let a forged token cost a verification per key. "
                           "Fix the key set.")
        findings.append(finding("KID_NOT_FOUND", message,
                                {"kid": kid, "alg": algorithm.name, "fitting_keys": len(candidates),
                                 "max_tried": MAX_KEYS_TRIED, "known_kids": keys.keyset.shown_kids[:20]}, remediation))
        return findings
    ctx.candidates = candidates
    return findings


def _is_weak_rsa(key: KeyEntry) -> bool:
    return key.kty == "RSA" and key.size < MIN_RSA_BITS


def _weak_rsa(key: KeyEntry) -> Finding:
    return finding("WEAK_KEY", f"the RSA key has {key.size} bits; at least {MIN_RSA_BITS} are required",
                   {"kid": key.kid, "bits": key.size, "minimum_bits": MIN_RSA_BITS},
                   "Rotate to a 2048-bit (or larger) RSA key, or to ES256/EdDSA.")


def check_signature(ctx: Context) -> list[Finding]:
    """RFC 7515 section 5.2 step 8: validate the JWS Signature against the JWS Signing Input
    ASCII(BASE64URL(UTF8(JWS Protected Header)) || '.' || BASE64URL(JWS Payload))."""
    algorithm, token = ctx.algorithm, ctx.token
    assert algorithm is not None
    # An RSA key under 2048 bits never verifies. It is reported when it is what the token was checked against:
    # when no strong candidate verifies (a strong key's success is not spoiled by a weak key beside it).
    strong = [key for key in ctx.candidates if not _is_weak_rsa(key)]
    weak = [key for key in ctx.candidates if _is_weak_rsa(key)]
    if not token.signature:
        if not strong:
            return [_weak_rsa(key) for key in weak]
        return [finding("SIGNATURE_INVALID", "the signature segment is empty (stripped signature)",
                        {"alg": algorithm.name}, "A signed token has a signature after its second '.': this one was "
                        "removed (as in an 'alg: none' forgery), or lost when the token was copied.")]
    for key in strong:
        if any(key is done for done in ctx.tried):
            continue
        if algorithm.verify(key.key, token.signing_input, token.signature):
            ctx.key_used = key
            return _weak_secrets([key], algorithm.name, algorithm.hash_bytes)
    signed_by_weak = [key for key in weak if algorithm.verify(key.key, token.signing_input, token.signature)]
    if signed_by_weak or not strong:
        return [_weak_rsa(key) for key in signed_by_weak or weak]
    present = [name for name in HEADER_KEY_PARAMETERS if name in token.header]
    sizes = {_signature_bytes(algorithm.name, key) for key in strong}
    expected = sizes.pop() if len(sizes) == 1 else None
    evidence = {"alg": algorithm.name, "kid": strong[0].kid, "keys_tried": len(strong),
                "signature_bytes": len(token.signature)}
    # A short HMAC secret is weak whether or not this token's MAC matched (validation.md; found by a review), told
    # so when the caller sent it: a profile's (or a configured authorizer's) secret length is for whoever holds a
    # token it made, not for anyone who sends a forgery (found by the next review).
    weak_secrets = _weak_secrets(strong, algorithm.name, algorithm.hash_bytes) if ctx.policy.inline else []
    if expected is not None and expected != len(token.signature):  # a verify could never have succeeded
        return [finding("SIGNATURE_INVALID", f"the signature has {len(token.signature)} bytes where {algorithm.name} "
                        f"with the configured key makes {expected}", {**evidence, "expected_bytes": expected},
                        _length_hint(algorithm.name, algorithm.kty, token.signature, expected)), *weak_secrets]
    return [finding(
        "SIGNATURE_INVALID", "the signature does not verify with the configured key", evidence,
        "The token names its own key in its header; that key is never trusted." if present else
        "The token was altered, or signed by another key (another tenant, environment, or a rotated key)."),
        *weak_secrets]


def _weak_secrets(keys: list[KeyEntry], alg: str, minimum: int) -> list[Finding]:
    return [finding("WEAK_KEY", f"the HMAC secret has {key.size} bytes; {alg} needs at least {minimum} (RFC 7518 "
                    "section 3.2)", {"bytes": key.size, "minimum_bytes": minimum},
                    "Use a random secret at least as long as the hash output.", severity="warning")
            for key in keys if key.kty == "oct" and key.size < minimum]


def _length_hint(alg: str, kty: str, signature: bytes, expected: int) -> str:
    """Why a signature has another length than `alg` with the configured key makes: the length itself often says
    (found by a review: a 64-byte HS512 MAC under HS256 was blamed on "a larger key", which an HMAC's length never
    depends on, and a raw ES384 signature under ES256 on DER)."""
    size = len(signature)
    if kty == "EC" and signature[:1] == b"\x30" and expected < size <= expected + 9:  # SEQUENCE of two INTEGERs
        return "The signature is DER-encoded: a JWS carries the raw r || s (RFC 7518 3.4)."
    other = _MADE_BY.get((kty, size))
    if other is not None and other != alg:
        return (f"The signature has the length {other} makes: the issuer signs with {other}, and the header names "
                f"{alg} (a misconfigured issuer, or a header altered after signing).")
    if size > expected and kty == "RSA":
        return "The token was signed by another, larger key (another tenant, environment, or a rotated key)."
    if size < expected:
        return "The token was cut short (a log line, a display width, a copy), or its signature mangled."
    return "The signature was mangled, or made with another algorithm than the header names."


_FIXED_SIGNATURE_BYTES = {"ES256": 64, "ES384": 96, "ES512": 132, "Ed25519": 64, "Ed448": 114}
# (key type, signature length) -> the algorithm that makes signatures of that length with such a key.
_MADE_BY = {("oct", 32): "HS256", ("oct", 48): "HS384", ("oct", 64): "HS512",
            ("EC", 64): "ES256", ("EC", 96): "ES384", ("EC", 132): "ES512"}


def _signature_bytes(alg: str, key: KeyEntry) -> int | None:
    """How many bytes a signature of `alg` with `key` has (RFC 7518 3.2-3.5, RFC 8037 3.1), when fixed."""
    if key.kty == "RSA":
        return (key.size + 7) // 8
    if key.kty == "oct":
        return ALGORITHMS[alg].hash_bytes or None
    return _FIXED_SIGNATURE_BYTES.get(alg if key.kty == "EC" else key.crv or "")
