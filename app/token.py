"""Parsing a compact JWS (RFC 7515 section 7.1) strictly, without trusting anything in it.

"The JWS Compact Serialization represents digitally signed or MACed content as a compact, URL-safe string"
(RFC 7515 section 3.1): three base64url segments without padding, the first two JSON objects in UTF-8.
Everything else (padding, other characters, duplicate member names, non-finite numbers, excessive depth,
five segments of a JWE) is refused here, before any key or signature work, at a cost bounded by the size cap.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

import msgspec
import re2

MAX_JSON_DEPTH = 64
# Objects and arrays in a header or payload: far above any issuer's tokens (a Keycloak token listing 500 clients'
# roles holds ~1,000), low enough that decoding them costs about what validating a large valid token does.
MAX_JSON_CONTAINERS = 1024

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
# Float literals through Python's float(): msgspec's own parser takes ~11 µs for a literal at the edge of the range
# (1e308, 5e-324), so a forged 16 KB payload of them cost 100x a valid token (found by a review); float() takes
# 0.2-0.5 µs for any literal (hook call included), gives the same value, and tokens seldom hold a float at all.
def _finite_float(literal: str) -> float:
    value = float(literal)
    if value in (_INFINITY, -_INFINITY):  # msgspec's own "Number out of range" (RFC 8259: numbers are finite)
        raise ValueError("Number out of range")
    return value


_INFINITY = float("inf")
_DECODE = msgspec.json.Decoder(float_hook=_finite_float).decode
_ENCODE = msgspec.json.encode
_SEGMENT_NAMES = ("header", "payload", "signature")


class MalformedToken(Exception):
    """The token is not a well-formed compact JWS. Carries whatever could be decoded, for diagnosis."""

    def __init__(
        self,
        reason: str,
        evidence: dict[str, Any] | None = None,
        remediation: str | None = None,
        header: dict[str, Any] | None = None,
        claims: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.evidence = evidence or {}
        self.remediation = remediation
        self.header = header
        self.claims = claims


@dataclass(slots=True)
class ParsedToken:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes
    signature_segment: str = field(repr=False)
    weight: int = 0  # an upper bound of the decoded header's and claims' memory, in bytes (`decoded_weight`)


_SEPARATORS = b",:{["


def _separators(data: bytes) -> int:
    """How many of `,:{[` the JSON text holds: one less than the values it can decode into, at most."""
    return len(data) - len(data.translate(None, _SEPARATORS))


def decoded_weight(data: bytes, separators: int | None = None) -> int:
    """An upper bound, in bytes, of what decoding this JSON text holds in memory: its bytes (four times when it
    holds non-ASCII text, which CPython stores in up to 4 bytes a character), and 96 a value (a float, an int, a
    short string, a dict's or a list's slot; counted by the separators and brackets before it). A 16 KiB payload of
    `0.5,0.5,...` decodes into ~150 KB of floats: the verified-token cache is bounded by these weights, not only by
    its count of entries (found by a review; tests/test_verified_cache.py measures the bound on hostile shapes)."""
    values = (_separators(data) if separators is None else separators) + 1
    # A dict holds 184 bytes and more, 88 more than its value's share (found by a review: chains of one-key objects
    # held 1.14x their bound); a `{` inside a string is counted too, which only overestimates.
    objects = data.count(b"{")
    # One character outside Latin-1 (raw, or escaped as \uXXXX) makes CPython store its whole string at up to 4
    # bytes a character (found by a review: a 12,000-character string ending in an escaped emoji held 4x). A
    # backslash is looked for first: one byte is found in a fifth of the time of two.
    wide = not data.isascii() or (data.find(b"\\") >= 0 and b"\\u" in data)
    return (4 * len(data) if wide else len(data)) + 96 * values + 160 * objects


# A JWS or JWE in compact form, anywhere in a text: its protected header is a JSON object, so its base64url starts
# with `eyJ` (`{"`), `eyA` (`{` and a space) or `ewo`, `ewk`, `ew0` (`{` and a line feed, tab or carriage return),
# at least 16 characters long (`{"alg":"none"}` has 19), not right after a letter or digit (unless that ends a
# `%XX` escape: `Bearer%20eyJ...`), and a dot follows. What a trace or a variable shows is hidden when it holds
# one, whether or not it is the request's token (a token in a query parameter no source names was shown; found by
# a review). `eyJ` alone missed `{ "alg"...` headers and hid `/eyJx.min.js`; `ey` or `ew` alone, or inside a
# word, hid `/survey-results-dashboard.bundle.js` and `framework-2c79e2a6.js.map` (found by reviews).
# RE2, linear: Python's `re` took quadratic time on `eyJeyJeyJ...` (1.2 s for a 60 KB path; found by a review).
_JWT_SHAPED = re2.compile(r"(?:^|[^A-Za-z0-9]|%[0-9A-Fa-f]{2})e(?:y[JA]|w[ok0])[A-Za-z0-9_-]{13,}\.[A-Za-z0-9_-]*\.")
_SEGMENT = re2.compile(r"[A-Za-z0-9_-]+")


def holds_jwt(text: str, *, glued: bool = False) -> bool:
    """Whether `text` contains something shaped like a compact JWT (see _JWT_SHAPED). `glued`: right after a letter
    or a digit too, for what is logged (a request id, a rule id, a key set's label): `r<token>` as X-Request-ID was
    logged whole (found by a review)."""
    if "ey" not in text and "ew" not in text:
        return False
    return _JWT_SHAPED.search(text) is not None or glued and _glued_header(text)


def _glued_header(text: str) -> bool:
    """A JWT right after a letter or a digit: a run of base64url followed by a dot, a run (or none) and a dot, whose
    end from an `eyJ`-like start reads as a JSON object naming `alg` or `enc`, as every JWS and JWE header does.
    The shape alone hid words: `framework-auth...` holds `ewo` and 13 name characters before a dot; and a first
    version tried 16 starts, which 16 decoys used up (found by reviews). Every start is tried, in linear time: a
    run is decoded once at each of base64's four alignments, and a start reads the bytes from its own on."""
    for run in _SEGMENT.finditer(text):
        start, end = run.span()
        if end - start < 16 or text[end:end + 1] != ".":
            continue
        following = _SEGMENT.match(text, end + 1)
        if text[following.end() if following else end + 1:][:1] != ".":
            continue
        segment = text[start:end]
        last_name: dict[int, int] = {}  # alignment -> where its bytes last hold "alg" or "enc"
        at = segment.find("e")
        while 0 <= at <= len(segment) - 16:
            if segment.startswith(_HEADER_STARTS, at):  # their bytes start with `{`
                align = at % 4
                if align not in last_name:
                    quartets = segment[align:len(segment) - (len(segment) - align) % 4]
                    data = base64.urlsafe_b64decode(quartets)  # base64url only, whole quartets: never an error
                    last_name[align] = max(data.rfind(b'"alg"'), data.rfind(b'"enc"'))
                if last_name[align] >= (at - align) // 4 * 3:
                    return True
            at = segment.find("e", at + 1)
    return False


_HEADER_STARTS = ("eyJ", "eyA", "ewo", "ewk", "ew0")


def token_id(raw: str) -> str:
    """The token's fingerprint for answers and logs: the first 16 hex characters of SHA-256 of the token."""
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:16]


# What "surrounding whitespace is ignored" (validation.md) ignores: HTTP's and JSON's white space. Python's
# str.strip() also took U+001C-U+001F, NBSP, NEL and U+2028 (found by a review): a string no JWS parser
# accepts validated.
WHITESPACE = " \t\r\n"


# An Authorization header's text pasted whole, or the scheme spelled with a colon: "Bearer: <token>".
_HEADER_TEXT = re.compile(r"(?i)(?:authorization\s*:\s*)?bearer\s*:|authorization\s*:")
_QUOTES = "\"'`"
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


def _wrapping(raw: str) -> "MalformedToken | None":
    """A token wrapped in something a developer can remove: quotes (a JSON-encoded string, an env file), or URL
    encoding. Their hints were the base64url alphabet's and the opaque token's (found by a review)."""
    if raw[:1] in _QUOTES or raw[-1:] in _QUOTES:
        inner = raw.strip(_QUOTES + "\\")
        return MalformedToken(
            "the token is wrapped in quotes", {"quote": raw[0] if raw[:1] in _QUOTES else raw[-1]},
            "Send the token without its quotes (a JSON-encoded string, or an env file, keeps them)"
            + (", and without the 'Bearer ' scheme." if has_bearer_prefix(inner) else "."))
    if _ESCAPE.search(raw):
        return MalformedToken(
            "the token is URL-encoded (it holds %XX escapes)", {"escapes": len(_ESCAPE.findall(raw))},
            "URL-decode it first: a JWT's characters never need escaping.")
    return None


def has_bearer_prefix(raw: str) -> bool:
    """The `Bearer` scheme left in (followed by a space or a tab), or the scheme alone (a header whose token is
    missing)."""
    return (raw[:6].lower() == "bearer" and raw[6:7] in (" ", "\t")) or raw.strip(WHITESPACE).lower() == "bearer"


_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_PADDING = (b"", b"", b"==", b"=")
_SIX_BITS = {char: value for value, char in
             enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")}


def b64url_decode(segment: str, name: str) -> bytes:
    """Strict base64url (RFC 7515 section 2): URL-safe alphabet, no padding, canonical trailing bits.

    Canonical means the unused low bits of the last character are zero (RFC 4648 section 3.5): 4 of them when
    the length is 2 mod 4, 2 when it is 3 mod 4. Checking that one character replaces a re-encoding."""
    remainder = len(segment) % 4
    if not _B64URL.fullmatch(segment):
        raise MalformedToken(
            f"the {name} segment is not base64url without padding",
            {"segment": name, "length": len(segment)},
            "Use the URL-safe alphabet (A-Z a-z 0-9 - _) and strip '=' padding.",
        )
    if remainder == 1:  # no encoder writes this length: characters were lost
        raise MalformedToken(
            f"the {name} segment has a length no base64url encoding has (one more than a multiple of 4)",
            {"segment": name, "length": len(segment)},
            "Characters are missing: was the token cut short (a log line, a display width, a copy)?",
        )
    if remainder and _SIX_BITS[segment[-1]] & (0x0F if remainder == 2 else 0x03):
        raise MalformedToken(
            f"the {name} segment has non-canonical base64url trailing bits",
            {"segment": name},
            "Encode with a standard base64url encoder; the last character carries unused bits that must be zero. "
            "If the issuer's tokens validate elsewhere, this one was probably cut short.",
        )
    return binascii.a2b_base64(segment.encode("ascii").translate(_TO_STANDARD) + _PADDING[remainder])


# A string, or an unclosed one to the end of the text: requiring the closing quote made every `"` of an unclosed
# run rescan the rest of it (quadratic: 1.4 s for a forged 16 KB token; found by a review).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_SQUARE = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


def _nested_at_most(depth: int) -> Any:
    """RE2 for bracket sequences well nested at most `depth` deep: a regular language (one state per level), so
    RE2 decides it in one linear pass."""
    pattern = ""
    for _ in range(depth):
        pattern = r"(?:\[" + pattern + r"\])*"
    return re2.compile(pattern.encode())


_WITHIN_DEPTH = _nested_at_most(MAX_JSON_DEPTH)


def nested_too_deeply(data: bytes) -> bool:
    """Whether the JSON text `data` nests objects and arrays deeper than MAX_JSON_DEPTH, read from its bytes (the
    request bodies' bound too: the decoders' own, the interpreter's recursion limit, depends on how deep the
    call stack already is, so the fast path and Litestar's took different depths; found by a review). Text whose
    brackets do not even balance is left to the decoder."""
    if data.count(b"{") + data.count(b"[") <= MAX_JSON_DEPTH:
        return False
    skeleton = _skeleton(data)
    return skeleton.count(b"[") * 2 == len(skeleton) and _WITHIN_DEPTH.fullmatch(skeleton) is None


def _skeleton(data: bytes) -> bytes:
    """The JSON text's brackets alone, strings removed, `{}` read as `[]`: its nesting."""
    return _JSON_STRING.sub(b"", data).translate(_SQUARE, _NOT_BRACKETS)


def _shape_problem(data: bytes, name: str) -> MalformedToken | None:
    """Refuse JSON nested deeper than MAX_JSON_DEPTH or holding more than MAX_JSON_CONTAINERS objects and arrays,
    read from its bytes before it is decoded (validation.md: a hostile token costs no more than a valid one).
    Decoding costs a Python object per container (and the garbage collector's visits to them): a forged 16 KB
    token of 5,400 nested arrays cost 10-25x a valid one, in a walk of the decoded value and in its decoding.
    Strings removed, the brackets left are the nesting; brackets that do not even balance are left to the
    decoder, which says the text is not JSON."""
    skeleton = _skeleton(data)
    opened = skeleton.count(b"[")
    if opened * 2 != len(skeleton):
        return None
    if _WITHIN_DEPTH.fullmatch(skeleton) is None:
        return MalformedToken(f"the {name} is nested deeper than {MAX_JSON_DEPTH} levels",
                              {"segment": name, "max_depth": MAX_JSON_DEPTH})
    if opened > MAX_JSON_CONTAINERS:
        return MalformedToken(f"the {name} holds more than {MAX_JSON_CONTAINERS} objects and arrays",
                              {"segment": name, "containers": opened, "max_containers": MAX_JSON_CONTAINERS})
    return None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate member name {key!r}")
            seen.add(key)
    return result


def decode_json_object(data: bytes, name: str) -> dict[str, Any]:
    """Decode a JOSE Header or JWT Claims Set: a UTF-8 JSON object, finite numbers, unique names, depth <= 64.

    RFC 7515 section 4: "The Header Parameter names within the JOSE Header MUST be unique; JWS parsers MUST either
    reject JWSs with duplicate Header Parameter names or use a JSON parser that returns only the lexically last
    duplicate member name". We reject.
    """
    if data.count(b"{") + data.count(b"[") > MAX_JSON_DEPTH:  # else neither limit can be reached
        problem = _shape_problem(data, name)
        if problem is not None:
            raise problem
    try:
        value = _DECODE(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError, ValueError) as exc:
        reason = "is too deeply nested" if isinstance(exc, RecursionError) else "is not valid UTF-8 JSON"
        raise MalformedToken(f"the {name} {reason}", {"segment": name, "detail": _safe_detail(exc)}) from None
    if not isinstance(value, dict):
        raise MalformedToken(
            f"the {name} is JSON but not an object", {"segment": name, "json_type": type(value).__name__}
        )
    if not _unique_names(value, data):
        try:
            json.loads(data, object_pairs_hook=_no_duplicates)
        except ValueError as exc:
            raise MalformedToken(
                f"the {name} has duplicate member names", {"segment": name, "detail": str(exc)[:120]}
            ) from None
    return value


def _unique_names(value: dict[str, Any], data: bytes) -> bool:
    """Whether the JSON `data` decoded as `value` named no member twice (a duplicate is dropped from its dict).
    A byte-identical re-encoding proves it at once; otherwise (whitespace, `1e1`) the name separators (every `:`
    outside a string) of the text and of the re-encoding are counted, which costs far less than parsing it again
    with a hook per object (a forged payload of spaced-out arrays cost 7x a valid token that way; found by a
    review)."""
    encoded = _ENCODE(value)
    if encoded == data:
        return True
    return _JSON_STRING.sub(b"", encoded).count(b":") == _JSON_STRING.sub(b"", data).count(b":")


def _safe_detail(exc: BaseException) -> str:
    # msgspec's messages name a byte offset or a JSON path, never the content itself.
    return str(exc)[:120]


# Headers already decoded and proved well-formed, by their segment: an issuer signs every token with the same
# few headers, so the common case skips their decoding. Bounded, and emptied when full (a flood of distinct
# headers only costs the memo its hits). The dicts are shared: like a verified-token cache hit, never mutated.
_HEADERS: dict[str, tuple[dict[str, Any], int]] = {}  # by segment: the header and its decoded_weight
_HEADERS_MAX = 256
# A header weighing more (decoded_weight) is not memoised: 256 hostile headers of a 16 KiB token held ~30 MB a
# worker (found by a review). Real headers (alg, kid, typ, maybe x5t) weigh well under 1 KiB.
_HEADER_WEIGHT_MAX = 4096


def _json_object_fast(data: bytes, separators: int) -> dict[str, Any] | None:
    """`decode_json_object` for the common case, or None for anything it might refuse (it then explains).
    `separators` is `_separators(data)`: at most MAX_JSON_DEPTH of them leave no bracket to count."""
    if separators > MAX_JSON_DEPTH and data.count(b"{") + data.count(b"[") > MAX_JSON_DEPTH \
            and _shape_problem(data, "") is not None:
        return None  # not decoded: the explaining path refuses it undecoded
    try:
        value = _DECODE(data)
    except Exception:  # noqa: BLE001 - any doubt goes to the explaining path, which catches precisely
        return None
    if type(value) is not dict or not _unique_names(value, data):
        return None
    return value


# msgspec's base64 decoder (a JSON string decoded as `bytes`): strict like `a2b_base64(strict_mode=True)` (the
# standard alphabet only, padding to a multiple of 4 characters), in a third of its time (0.3 against 0.8 µs for an
# RS256 signature). Escapes in the JSON string would be decoded first: `_parse_fast` takes no `"` or `\`.
_BASE64 = msgspec.json.Decoder(bytes).decode
_CLOSING = (b'"', b'"', b'=="', b'="')


def _strict_b64url(segment: str) -> bytes:
    """A base64url segment through strict base64 (see `_parse_fast`). Raises msgspec.DecodeError."""
    return _BASE64(b'"' + segment.encode().translate(_TO_STANDARD) + _CLOSING[len(segment) & 3])


def _parse_fast(raw: str, max_bytes: int) -> ParsedToken | None:
    """The common case of `parse` in a few C-level calls, or None at the first doubt (`parse` then explains).

    It accepts exactly what `parse` accepts: ASCII within the size cap, without '+', '/' or '=' (nor '"' or '\\',
    which would end or escape the JSON string `_strict_b64url` decodes), so that after translating '-_' to '+/',
    strict base64 (which refuses any other character and a length of 1 mod 4) sees precisely the base64url
    alphabet; the canonical trailing bits are checked on the last character as in `b64url_decode`."""
    if len(raw) > max_bytes or not raw.isascii() or "+" in raw or "/" in raw or "=" in raw or '"' in raw \
            or "\\" in raw:
        return None
    segments = raw.split(".")
    if len(segments) != 3:
        return None
    header_b64, payload_b64, signature_b64 = segments
    for segment in segments:
        remainder = len(segment) & 3
        if remainder > 1 and segment[-1] in _SIX_BITS and _SIX_BITS[segment[-1]] & (0x0F if remainder == 2 else 0x03):
            return None
    try:
        known = _HEADERS.get(header_b64)
        if known is None:
            if not header_b64:
                return None
            data = _strict_b64url(header_b64)
            separators = _separators(data)
            header = _json_object_fast(data, separators)
            if header is None:
                return None
            known = (header, decoded_weight(data, separators))
            if known[1] <= _HEADER_WEIGHT_MAX:  # memoised: realistic headers only (the memo is bounded by both)
                if len(_HEADERS) >= _HEADERS_MAX:
                    _HEADERS.clear()
                _HEADERS[header_b64] = known
        if not payload_b64:
            return None
        payload = _strict_b64url(payload_b64)
        separators = _separators(payload)
        claims = _json_object_fast(payload, separators)
        if claims is None:
            return None
        signature = _strict_b64url(signature_b64)
    except msgspec.DecodeError:
        return None
    return ParsedToken(known[0], claims, raw[:len(header_b64) + 1 + len(payload_b64)].encode(), signature,
                       signature_b64, known[1] + decoded_weight(payload, separators))


def parse(raw: str, max_bytes: int) -> ParsedToken:
    """Split and decode a compact JWS. Raises MalformedToken; never anything else for any string."""
    token = _parse_fast(raw, max_bytes)
    if token is not None:
        return token
    size = len(raw) if raw.isascii() else len(raw.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise MalformedToken(
            "the token is larger than MAX_TOKEN_BYTES", {"size_bytes": size, "max_bytes": max_bytes}
        )
    if not raw.strip(WHITESPACE):
        raise MalformedToken("the token is empty", {"size_bytes": size},
                             "Send the token itself; an empty string often means a header or variable was not set.")
    if has_bearer_prefix(raw):
        raise MalformedToken(
            "the token starts with the 'Bearer ' scheme",
            {"prefix": raw[:6]},
            "Send only the token: strip the 'Bearer ' prefix of the Authorization header before validating.",
        )
    if _HEADER_TEXT.match(raw):
        raise MalformedToken(
            "the token starts with an Authorization header's text ('Authorization:' or 'Bearer:')",
            {"prefix": raw[:raw.index(":") + 1][:32]},
            "Send only the token: what follows 'Bearer ' in the Authorization header.",
        )
    if raw.startswith("{") and raw.rstrip(WHITESPACE).endswith("}"):
        try:
            members = _DECODE(raw.encode("utf-8", "surrogatepass"))
        except Exception:  # noqa: BLE001 - not JSON after all: named as a JSON-looking text below
            members = None
        serialized = isinstance(members, dict) and "payload" in members and (
            "signature" in members or "signatures" in members)
        raise MalformedToken(
            "the token is a JSON object: the JWS JSON serialization (RFC 7515 section 7.2), not the compact form"
            if serialized else "the token is a JSON object (claims, a key or a response?), not a JWT",
            {"size_bytes": size},
            "Send the compact serialization, header.payload.signature (each base64url); a JWT is always compact "
            "(RFC 7519 section 1)." if serialized else
            "Send the token itself: header.payload.signature, three base64url segments joined by dots.",
        )
    wrapped = _wrapping(raw)
    if wrapped is not None:
        raise wrapped
    if raw.endswith(("...", "\u2026")):
        raise MalformedToken(
            "the token ends with '...': it was cut short",
            {"size_bytes": size},
            "Send the whole token: logs and displays often shorten long values.",
        )
    if not raw.isascii():
        raise MalformedToken("the token contains non-ASCII characters", {"size_bytes": size})
    segments = raw.split(".")
    if len(segments) == 5:
        raise MalformedToken(
            "the token has five segments: it is an encrypted JWE, not a signed JWS",
            {"segments": 5},
            "This service validates signed tokens (JWS). Decrypt the JWE first, or ask the issuer for a signed token.",
        )
    if len(segments) != 3:
        opaque = len(segments) == 1
        raise MalformedToken(
            "the token is not a JWT (no '.' separators): an opaque token" if opaque
            else f"the token has {len(segments)} segments; a compact JWS has exactly 3",
            {"segments": len(segments)},
            "Opaque tokens (for example Auth0 access tokens requested without an 'audience') must be checked with "
            "the issuer's introspection or userinfo endpoint, not validated as JWTs." if opaque else None,
        )
    header_b64, payload_b64, signature_b64 = segments
    for name, segment in zip(_SEGMENT_NAMES[:2], (header_b64, payload_b64)):
        if not segment:
            raise MalformedToken(f"the {name} segment is empty", {"segment": name})
    header_json = b64url_decode(header_b64, "header")
    header = decode_json_object(header_json, "header")
    try:
        payload = b64url_decode(payload_b64, "payload")
        claims = decode_json_object(payload, "payload")
    except MalformedToken as exc:
        exc.header = header
        raise
    try:
        signature = b64url_decode(signature_b64, "signature")
    except MalformedToken as exc:
        exc.header, exc.claims = header, claims
        raise
    return ParsedToken(
        header=header,
        claims=claims,
        signing_input=raw[:len(header_b64) + 1 + len(payload_b64)].encode("ascii"),
        signature=signature,
        signature_segment=signature_b64,
        weight=decoded_weight(header_json) + decoded_weight(payload),
    )
