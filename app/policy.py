"""VerifyPolicy: what the caller trusts (validation.md section 2), decoded at the edge and compiled once.

`VerifyPolicy` is the wire shape (a frozen msgspec Struct, so wrong types are refused with a JSON path for free).
`compile_policy` turns it into a `CompiledPolicy` of plain values with keys loaded into `cryptography`
objects, refusing inconsistent policies with one `Problem` per mistake. Inline policies seen again are not
re-parsed: `PolicyCache` keeps compiled policies by fingerprint, bounded.
"""

from __future__ import annotations

import fnmatch
import hashlib
import ipaddress
import re
import socket
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

import httpx
import msgspec
from msgspec import Meta

from app.keys import ALGORITHMS, SYMMETRIC, KeyError_, KeySet, KeyView, jwk_set, key_set, pem_key, secret_key
from app.token import holds_jwt

NonEmpty = Annotated[str, Meta(min_length=1, max_length=2048)]
Claim = Annotated[str, Meta(min_length=1, max_length=256)]


class JwkSetDoc(msgspec.Struct, frozen=True):
    keys: Annotated[list[dict[str, Any]], Meta(max_length=100)]


class VerifyPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An inline policy. Exactly one key source among `secret`, `public_key`, `jwks`, `jwks_uri`/`discovery`."""

    issuer: NonEmpty | Annotated[list[NonEmpty], Meta(min_length=1, max_length=32)]
    audiences: Annotated[list[NonEmpty], Meta(min_length=1, max_length=64)]
    allowed_algs: Annotated[list[Annotated[str, Meta(max_length=32)]], Meta(min_length=1, max_length=16)]
    secret: Annotated[str, Meta(min_length=1, max_length=4096)] | None = None
    public_key: Annotated[str, Meta(min_length=1, max_length=16384)] | None = None
    jwks: JwkSetDoc | None = None
    jwks_uri: NonEmpty | None = None
    discovery: bool = False
    required_claims: Annotated[list[Claim], Meta(max_length=64)] = []
    required_scopes: Annotated[list[NonEmpty], Meta(max_length=64)] = []
    required_custom_claims: Annotated[dict[Claim, Any], Meta(max_length=64)] = {}
    clock_skew_seconds: Annotated[int, Meta(ge=0, le=300)] = 60
    max_ttl_seconds: Annotated[int, Meta(ge=1, le=31_536_000)] | None = None
    token_type: Annotated[str, Meta(min_length=1, max_length=128)] | None = None
    require_exp: bool = True
    audience_claim: Claim = "aud"


class Problem(msgspec.Struct, frozen=True):
    """One thing wrong with a request or a config document: where (path), what, and its kind."""

    loc: tuple[str | int, ...]
    msg: str
    type: str = "value_error"


class PolicyError(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(problem.msg for problem in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """A policy ready for the pure core: plain values, keys loaded, nothing left to parse per request."""

    fingerprint: str
    issuers: tuple[str, ...]
    audiences: frozenset[str]
    allowed_algs: frozenset[str]
    key_source: str  # secret | public_key | jwks | jwks_uri | discovery
    static_keys: KeySet | None
    jwks_uri: str | None
    required_claims: tuple[str, ...]
    required_scopes: tuple[str, ...]
    required_custom_claims: tuple[tuple[str, Any], ...]
    clock_skew: int
    max_ttl: int | None
    token_type: str | None
    require_exp: bool
    audience_claim: str
    # Sent by the caller (the request's own policy or authorizer): its keys are the caller's to know about.
    inline: bool = False
    # The view of `static_keys`, which never changes: built once here rather than per validation.
    static_view: KeyView | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.static_keys is not None:
            object.__setattr__(self, "static_view", KeyView(self.static_keys, self.key_source))

    @property
    def expected_issuer(self) -> str | list[str]:
        return self.issuers[0] if len(self.issuers) == 1 else list(self.issuers)


def normalise_typ(value: str) -> str:
    """RFC 7515 section 4.1.9: `typ` is a media type; "application/" may be omitted; compared case-insensitively."""
    lowered = value.lower()
    return lowered[len("application/"):] if lowered.startswith("application/") else lowered


def is_loopback_host(host: str) -> bool:
    """Whether a URL's host is this machine: `localhost` (and `*.localhost`, RFC 6761, with or without the final
    dot), a loopback address, or an address that reaches this host all the same on Linux: the unspecified one
    (`0.0.0.0`, `::`) and IPv4-mapped loopback (`::ffff:127.0.0.1`). Those two passed as remote, so a remote
    issuer's discovery could send this service to its own ports (found by a review)."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return any(item is not None and (item.is_loopback or item.is_unspecified) for item in (address, mapped))


_QUERY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,32}")  # a name shown in a label: anything longer may be a secret


def key_set_label(uri: str) -> str:
    """A `jwks_uri` as shown outside (the /metrics label, logs, /v1/profiles): scheme, host, port, path and the
    query's parameter names; never userinfo, fragment or a query value, which may hold a credential, and a digest
    for a host and path holding something shaped like a token. The names
    keep `?token=` and `?sig=` sets apart: with the query dropped they shared one label, where one's successes
    hid the other's failures from an alert on key-set age (found by a review)."""
    try:
        parts = urlsplit(uri)
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:  # a label for whatever a caller named: never an error of its own
        return "invalid-url"
    host = parts.hostname or "?"
    host = f"[{host}]" if ":" in host else host
    query = "&".join(name + "=..." if sep and _QUERY_NAME.fullmatch(name) else "..." for name, sep, _ in
                     (item.partition("=") for item in parts.query.split("&"))) if parts.query else ""
    query = f"?{query}" if query else ""
    where = parts.netloc.rpartition("@")[2] + parts.path  # as written: `hostname` is lower-cased
    # A token placed in an inline policy's URL, its dots escaped or not (found by reviews); a digest keeps two such
    # sets apart, as the query's names do.
    if holds_jwt(where, glued=True) or "%" in where and holds_jwt(unquote(where), glued=True):
        digest = hashlib.sha256(where.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        return f"{parts.scheme}://[redacted {digest}]{query}"
    return f"{parts.scheme}://{host}{port}{parts.path}{query}"



def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _ipv4_shorthand(host: str) -> bool:
    """An IPv4 address in a form only the C library reads (`127.1`, `0x7f.1`, `2130706433`, `0`): the checks here
    saw a name, not this host, and the connection reached 127.0.0.1 all the same (found by a review)."""
    if _is_address(host):
        return False
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True


def check_key_set_url(url: str) -> str | None:
    """https is required, except for loopback hosts so that tests and sidecars can serve keys locally."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a port that is not an integer from 0 to 65535
        fetched = httpx.URL(url)  # what the fetch will parse: control characters, malformed hosts
    except (ValueError, httpx.InvalidURL):
        return "is not a URL (or its port is not a number from 1 to 65535)"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "must be an absolute https URL"
    if parts.hostname != fetched.raw_host.decode("ascii", "replace").lower():
        # The host every check here reads must be the one the fetch connects to: httpx reads `127。0。0。1` (ideographic
        # full stops) as 127.0.0.1, which was neither loopback here nor kept from a remote issuer's discovery, and
        # went through JWKS_PROXY (found by a review).
        return "must name its host in ASCII (an internationalised name in its xn-- form)"
    if is_loopback_host(parts.hostname) and parts.hostname != "localhost" and not _is_address(parts.hostname):
        return ("must name this host as `localhost` or its address (the C library looks `localhost.`, `127.0.0.1.` "
                "and `keys.localhost` up in DNS)")
    if _ipv4_shorthand(parts.hostname):
        return "must write an IPv4 address as four decimal numbers (`127.1` and `2130706433` are 127.0.0.1)"
    if port == 0 or any(char < " " or char == "\x7f" for char in url):
        return "is not a URL (or its port is not a number from 1 to 65535)"
    if parts.username or parts.password:
        return "must not carry credentials"
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        return "must use https (plain http is accepted only for loopback hosts)"
    return None


def host_allowed(url: str, allowlist: tuple[str, ...]) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return any(fnmatch.fnmatchcase(host, pattern.lower()) for pattern in allowlist)


def _compile_algorithms(policy: VerifyPolicy, source: str, static: KeySet | None, fit: bool) -> list[Problem]:
    """Each allowed alg: never `none`, a known one, and (`fit`: when the key source itself is sound) one the
    configured keys can verify."""
    problems = []
    for index, name in enumerate(policy.allowed_algs):
        loc = ("allowed_algs", index)
        if name.lower() == "none":
            problems.append(Problem(loc, "'none' is never allowed: unsigned tokens cannot be validated"))
            continue
        algorithm = ALGORITHMS.get(name)
        if algorithm is None:
            # Named only when it looks like one: a secret typed here is logged and shown by /readyz otherwise
            shown = repr(name) if re.fullmatch(r"[A-Za-z0-9]{2,8}", name) else "(not shown: no algorithm name)"
            problems.append(Problem(loc, f"unknown algorithm {shown}; supported: {', '.join(ALGORITHMS)}"))
        elif not fit:
            continue
        elif source == "secret" and name not in SYMMETRIC:
            problems.append(Problem(loc, f"{name} needs a public key; a 'secret' only fits HS256/HS384/HS512"))
        elif source in ("public_key", "jwks_uri", "discovery") and name in SYMMETRIC:
            problems.append(Problem(loc, f"{name} is symmetric and does not fit the configured {source}; "
                                         "HS* needs a 'secret' (or an oct key in an inline jwks)"))
        elif static is not None and not any(key.fits(algorithm) for key in static.keys):
            # The key's type and curve, and its `use`, `key_ops` and `alg` (RFC 7517 4.2-4.4): a key that can
            # never verify this algorithm would answer every token with a misleading KID_NOT_FOUND.
            problems.append(Problem(loc, f"{name} fits none of the configured keys (their kty/crv, 'use', "
                                         "'key_ops' and 'alg' are all checked)"))
    return problems


def _discovery_issuer(issuer: str | list[str]) -> list[Problem]:
    """Discovery fetches `{issuer}/.well-known/openid-configuration` (OIDC Discovery 1.0 section 4): the issuer
    is one URL, https (http for loopback only, as key sets), without query or fragment (section 2)."""
    if not isinstance(issuer, str):
        return [Problem(("issuer",), "discovery needs one issuer, not a list")]
    problem = check_key_set_url(issuer)
    if problem is None and (urlsplit(issuer).query or urlsplit(issuer).fragment or "?" in issuer or "#" in issuer):
        problem = "must not have a query or a fragment"
    return [Problem(("issuer",), f"with discovery, the issuer {problem} (its metadata is fetched from "
                                 "{issuer}/.well-known/openid-configuration)")] if problem else []


# A media type as `typ` names it (RFC 6838 4.2 restricted names), "application/" optional: `at+jwt`, `dpop+jwt`.
_MEDIA_NAME = r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}"
_MEDIA_TYPE = re.compile(f"{_MEDIA_NAME}(?:/{_MEDIA_NAME})?")
# Registered claims with a check of their own: as the audience claim, they would turn the audience check into a
# second look at the issuer or a time (found by a review: audience_claim "iss" with the issuer as audience).
_NOT_AUDIENCE = ("iss", "sub", "exp", "nbf", "iat", "jti")


# A metadata document's URL pasted as the issuer (OIDC Discovery 1.0 section 4 appends this to the issuer, RFC 8414
# section 3 inserts it before the issuer's path).
_METADATA_PATHS = ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server")


def _issuer_problems(policy: VerifyPolicy) -> list[Problem]:
    """Near misses no token's `iss` or `aud` can match, refused where they are written rather than answered with
    a mismatch on every token: white space around an issuer or audience (pasted), a discovery URL as the issuer."""
    problems = []
    issuers = [((), policy.issuer)] if isinstance(policy.issuer, str) else [
        ((index,), issuer) for index, issuer in enumerate(policy.issuer)]
    for field, named in (("issuer", issuers), ("audiences", [((index,), item) for index, item
                                                               in enumerate(policy.audiences)])):
        for at, text in named:
            if text != text.strip():
                problems.append(Problem((field, *at), "white space at its start or end (compared exactly: no "
                                                      "token carries it); remove it"))
    for at, issuer in issuers:
        if any(path in issuer for path in _METADATA_PATHS):
            problems.append(Problem(("issuer", *at), "this is the URL of the issuer's metadata document, not the "
                                                     "issuer: take the issuer from that document's 'issuer' member"))
    return problems


def _claim_problems(policy: VerifyPolicy) -> list[Problem]:
    problems = []
    if policy.token_type is not None and not _MEDIA_TYPE.fullmatch(normalise_typ(policy.token_type)):
        problems.append(Problem(("token_type",), "expected a media type such as 'at+jwt' or 'application/at+jwt' "
                                                 "(letters, digits and !#$&^_.+- without spaces)"))
    if policy.audience_claim in _NOT_AUDIENCE:
        problems.append(Problem(("audience_claim",), f"'{policy.audience_claim}' has a check of its own; "
                                                     "audience_claim names the claim holding the audience: 'aud', or "
                                                     "the client id claim of access tokens without one (Cognito's "
                                                     "'client_id')"))
    return problems


def compile_policy(policy: VerifyPolicy, *, inline: bool, allowlist: tuple[str, ...] = ()) -> CompiledPolicy:
    """Check a policy's consistency and load its keys. Raises PolicyError listing every problem."""
    problems: list[Problem] = []
    sources = [name for name in ("secret", "public_key", "jwks", "jwks_uri") if getattr(policy, name) is not None]
    if policy.discovery:
        sources.append("discovery")
    if len(sources) != 1:
        problems.append(Problem(
            (), "exactly one key source is required among secret, public_key, jwks, jwks_uri/discovery; "
                f"got {', '.join(sources) or 'none'}"))
    source = sources[0] if sources else ""
    static: KeySet | None = None
    try:
        if source == "secret":
            static = key_set([secret_key(policy.secret or "")])
        elif source == "public_key":
            static = key_set([pem_key(policy.public_key or "")])
        elif source == "jwks" and policy.jwks is not None:
            entries, bad = jwk_set({"keys": policy.jwks.keys}, allow_oct=True)
            problems.extend(Problem(("jwks", "keys", index), msg) for index, msg in bad)
            if not entries and not bad:
                problems.append(Problem(("jwks", "keys"), "the key set is empty"))
            static = key_set(entries)
    except KeyError_ as exc:
        problems.append(Problem((source,), str(exc)))
    if source == "jwks_uri" and policy.jwks_uri is not None:
        url_problem = check_key_set_url(policy.jwks_uri)
        if url_problem:
            problems.append(Problem(("jwks_uri",), f"jwks_uri {url_problem}"))
        elif inline and not host_allowed(policy.jwks_uri, allowlist):
            problems.append(Problem(("jwks_uri",), "jwks_uri is not allowed in an inline policy unless its host "
                                                   "matches JWKS_URI_ALLOWLIST (use an issuer profile instead)"))
    if source == "discovery" and inline:
        problems.append(Problem(("discovery",), "discovery is only available in issuer profiles"))
    elif source == "discovery":
        problems.extend(_discovery_issuer(policy.issuer))
    problems.extend(_compile_algorithms(policy, source, static, fit=not problems))
    problems.extend(_issuer_problems(policy))
    problems.extend(_claim_problems(policy))
    if problems:
        raise PolicyError(problems)
    issuers = (policy.issuer,) if isinstance(policy.issuer, str) else tuple(policy.issuer)
    return CompiledPolicy(
        # Verdicts are cached by fingerprint, and an inline policy's tell the caller more of its own keys (a short
        # secret's length when its MAC does not match): a profile with the same document keeps its own.
        fingerprint=fingerprint(policy) + (INLINE if inline else ""),
        issuers=issuers,
        audiences=frozenset(policy.audiences),
        allowed_algs=frozenset(policy.allowed_algs),
        key_source=source,
        static_keys=static,
        jwks_uri=policy.jwks_uri,
        required_claims=tuple(dict.fromkeys(policy.required_claims)),
        required_scopes=tuple(dict.fromkeys(policy.required_scopes)),
        required_custom_claims=tuple(policy.required_custom_claims.items()),
        clock_skew=policy.clock_skew_seconds,
        max_ttl=policy.max_ttl_seconds,
        token_type=normalise_typ(policy.token_type) if policy.token_type else None,
        require_exp=policy.require_exp,
        audience_claim=policy.audience_claim,
        inline=inline,
    )


INLINE = ":inline"  # the end of an inline policy's fingerprint (app.validation.VerifiedCache tells them apart)


def fingerprint(policy: VerifyPolicy) -> str:
    return hashlib.sha256(msgspec.json.encode(policy)).hexdigest()[:32]


class PolicyCache:
    """Compiled inline policies by fingerprint, least recently used first out."""

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._entries: OrderedDict[bytes, CompiledPolicy] = OrderedDict()

    def get(self, policy: VerifyPolicy, allowlist: tuple[str, ...]) -> CompiledPolicy:
        key = hashlib.sha256(msgspec.json.encode(policy)).digest()
        compiled = self._entries.get(key)
        if compiled is not None:
            self._entries.move_to_end(key)
            return compiled
        compiled = compile_policy(policy, inline=True, allowlist=allowlist)
        self._entries[key] = compiled
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return compiled

    def __len__(self) -> int:
        return len(self._entries)
