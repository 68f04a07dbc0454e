"""Verification keys and the algorithms bound to them (RFC 7517, RFC 7518, RFC 8037).

Keys are loaded once into `cryptography` objects (PEM, certificate or JWK, the latter parsed by joserfc) and
kept with the metadata key selection needs. Each algorithm names the one key type (and curve) it may be used
with, so the allow-list is bound to the key: an HS256 token can never be checked against an RSA public key.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, JWKRegistry, OKPKey, RSAKey

MIN_RSA_BITS = 2048
# Ceilings on what one RSA verification may cost, since a caller may choose the key (an inline policy) and a
# forged token costs a verify per fitting key: a 3,072-bit modulus with a 3,070-bit exponent took 7.5 ms a verify,
# 16,384 bits with e = 65537 ~2.7 ms and 8,192 bits with e = 2^32 - 1 0.58 ms, against ~0.03 for 2,048 bits
# (found by reviews). Issuers use e = 65537 (or 3) and at most 4,096 bits; 8,192 bits with e = 65537 is ~0.24 ms.
MAX_RSA_BITS = 8192
MAX_RSA_EXPONENT = 65537
MAX_KEYS_PER_SET = 100
# A token is tried against at most this many fitting keys: a hostile token must cost no more than a valid one
# (validation.md), and a forged token would otherwise cost one verify per key of the set, when it names no `kid`
# or a `kid` many keys share.
MAX_KEYS_TRIED = 4
MAX_SHOWN_KID = 128  # characters of a kid shown (KeySet.shown_kids); real kids are 8 to ~90 (x5t, thumbprints)


class KeyError_(ValueError):
    """A key that cannot be used; the message never contains key material."""


Verifier = Callable[[Any, bytes, bytes], bool]


@dataclass(frozen=True, slots=True)
class Algorithm:
    name: str
    kty: str
    crv: tuple[str, ...] | None
    verify: Verifier
    hash_bytes: int = 0


def _hmac(digest: str) -> Verifier:
    def verify(key: bytes, data: bytes, signature: bytes) -> bool:
        # RFC 7515 section 10.7: "comparisons ... must be done in constant time".
        return hmac.compare_digest(hmac.digest(key, data, digest), signature)

    return verify


def _rsa(pad: padding.AsymmetricPadding, algorithm: hashes.HashAlgorithm) -> Verifier:
    def verify(key: rsa.RSAPublicKey, data: bytes, signature: bytes) -> bool:
        # RFC 8017 8.1.2 and 8.2.2, step 1: a signature is exactly k octets, k the modulus's length. OpenSSL holds
        # PKCS#1 v1.5 to it but pads a short PSS signature: one whose leading zero byte was dropped verified, a
        # second spelling of the same token under another token_id (found by a review).
        if len(signature) != (key.key_size + 7) // 8:
            return False
        try:
            key.verify(signature, data, pad, algorithm)
        except InvalidSignature:
            return False
        return True

    return verify


def _pss(algorithm: hashes.HashAlgorithm) -> Verifier:
    # RFC 7518 section 3.5: "The size of the salt value is the same size as the hash function output."
    return _rsa(padding.PSS(mgf=padding.MGF1(algorithm), salt_length=algorithm.digest_size), algorithm)


def _ecdsa(algorithm: hashes.HashAlgorithm, size: int) -> Verifier:
    scheme = ec.ECDSA(algorithm)

    def verify(key: ec.EllipticCurvePublicKey, data: bytes, signature: bytes) -> bool:
        # RFC 7518 section 3.4: the signature is the concatenation R || S, each exactly `size` octets. A DER
        # signature, a short one, or r = 0 / s = 0 (the "psychic signature" of CVE-2022-21449) never verifies.
        if len(signature) != 2 * size:
            return False
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        if r == 0 or s == 0:
            return False
        try:
            key.verify(encode_dss_signature(r, s), data, scheme)
        except InvalidSignature:
            return False
        return True

    return verify


def _eddsa(key: ed25519.Ed25519PublicKey | ed448.Ed448PublicKey, data: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


ALGORITHMS: dict[str, Algorithm] = {
    "HS256": Algorithm("HS256", "oct", None, _hmac("sha256"), 32),
    "HS384": Algorithm("HS384", "oct", None, _hmac("sha384"), 48),
    "HS512": Algorithm("HS512", "oct", None, _hmac("sha512"), 64),
    "RS256": Algorithm("RS256", "RSA", None, _rsa(padding.PKCS1v15(), hashes.SHA256())),
    "RS384": Algorithm("RS384", "RSA", None, _rsa(padding.PKCS1v15(), hashes.SHA384())),
    "RS512": Algorithm("RS512", "RSA", None, _rsa(padding.PKCS1v15(), hashes.SHA512())),
    "PS256": Algorithm("PS256", "RSA", None, _pss(hashes.SHA256())),
    "PS384": Algorithm("PS384", "RSA", None, _pss(hashes.SHA384())),
    "PS512": Algorithm("PS512", "RSA", None, _pss(hashes.SHA512())),
    "ES256": Algorithm("ES256", "EC", ("P-256",), _ecdsa(hashes.SHA256(), 32)),
    "ES384": Algorithm("ES384", "EC", ("P-384",), _ecdsa(hashes.SHA384(), 48)),
    "ES512": Algorithm("ES512", "EC", ("P-521",), _ecdsa(hashes.SHA512(), 66)),
    "EdDSA": Algorithm("EdDSA", "OKP", ("Ed25519", "Ed448"), _eddsa),
}
SYMMETRIC = frozenset(name for name, alg in ALGORITHMS.items() if alg.kty == "oct")

_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One usable verification key with the metadata RFC 7517 section 4 gives for selecting it."""

    kty: str
    key: Any = None
    kid: str | None = None
    crv: str | None = None
    alg: str | None = None
    use: str | None = None
    key_ops: tuple[str, ...] | None = None
    thumbprint: str | None = None
    size: int = 0  # RSA modulus bits, HMAC secret bytes

    def fits(self, algorithm: Algorithm) -> bool:
        """RFC 7517 sections 4.2-4.4: type and curve fit, `use` is sig, `key_ops` allow verify, `alg` agrees."""
        return (
            self.kty == algorithm.kty
            and (algorithm.crv is None or self.crv in algorithm.crv)
            and self.use in (None, "sig")
            and (self.key_ops is None or "verify" in self.key_ops)
            and (self.alg is None or self.alg == algorithm.name)
        )

    def public_info(self, source: str) -> dict[str, Any]:
        return {"kid": self.kid, "source": source, "thumbprint": self.thumbprint}


@dataclass(frozen=True, slots=True)
class KeySet:
    """An immutable set of keys. `version` changes whenever the keys do (it keys the verified-token cache)."""

    keys: tuple[KeyEntry, ...]
    version: str
    fetched_at: float | None = None
    skipped: tuple[str, ...] = ()
    # Candidates by (algorithm, kid), filled as tokens ask; only non-empty answers are kept, so the kids a token
    # can make it remember are the set's own (an attacker's random kids find nothing and add nothing).
    _candidates: dict[tuple[str, str | None], list[KeyEntry]] = field(default_factory=dict, compare=False,
                                                                      repr=False)

    @property
    def kids(self) -> list[str]:
        return [key.kid for key in self.keys if key.kid is not None]

    @property
    def shown_kids(self) -> list[str]:
        """The kids as answers, /readyz and /v1/profiles show them: each cut to MAX_SHOWN_KID characters. A kid
        has no length limit, and a set of 20 kids of 24,000 characters made every KID_NOT_FOUND answer ~480 KB
        (found by a review)."""
        return [kid if len(kid) <= MAX_SHOWN_KID else kid[:MAX_SHOWN_KID] + "..." for kid in self.kids]

    def candidates(self, algorithm: Algorithm, kid: str | None) -> list[KeyEntry]:
        """The keys that fit the algorithm (and carry `kid`, when given). The list is shared: do not mutate."""
        memo = self._candidates.get((algorithm.name, kid))
        if memo is not None:
            return memo
        found = [key for key in self.keys if key.fits(algorithm) and (kid is None or key.kid == kid)]
        if found:
            self._candidates[(algorithm.name, kid)] = found
        return found


def verifies_any(keyset: KeySet, algorithms: Iterable[str]) -> bool:
    """Whether a key of the set can verify a token of one of the algorithms: one that fits it, and an RSA key of
    at least MIN_RSA_BITS (a weaker one fails every token with WEAK_KEY)."""
    fitting = [ALGORITHMS[name] for name in algorithms if name in ALGORITHMS]
    return any(key.fits(algorithm) and not (key.kty == "RSA" and key.size < MIN_RSA_BITS)
               for key in keyset.keys for algorithm in fitting)


def key_set(keys: list[KeyEntry] | tuple[KeyEntry, ...], fetched_at: float | None = None,
            skipped: tuple[str, ...] = ()) -> KeySet:
    # Each key's fields as a JSON array: self-delimiting, and `null` is not `"None"`. Joined with `|` they were
    # ambiguous, so a set could keep the version of a set it replaced (a `kid` holding `a|RSA|...;b`, an `alg`
    # changed to "None") and the verified-token cache kept answering for a removed key (found by a review).
    digest = hashlib.sha256()
    for key in keys:
        secret = hashlib.sha256(key.key).hexdigest() if key.kty == "oct" else None
        digest.update(msgspec.json.encode([key.kid, key.kty, key.crv, key.alg, key.use, key.key_ops, key.thumbprint,
                                           key.size, secret]))
    return KeySet(tuple(keys), digest.hexdigest()[:16], fetched_at, skipped)


def _refuse_public_material(material: bytes) -> None:
    """An HMAC secret that is a public key (PEM, certificate, SSH or JWK text) lets anyone holding that public key
    sign tokens: the algorithm-confusion attack (RFC 8725 3.1), here by a misplaced key rather than by the token."""
    text = material.strip()
    kind = None
    if b"-----BEGIN" in text:
        kind = "a PEM block (a public key or certificate)"
    elif text.startswith((b"ssh-", b"ecdsa-sha2-")):
        kind = "an SSH public key"
    elif text.startswith(b"{") and b'"kty"' in text:
        kind = "a JWK"
    elif text.startswith(b"M"):  # base64 of a DER SEQUENCE (MII.., MFkw.., MCow..): a PEM body without its lines
        kind = _der_kind(text)
    if kind is not None:
        raise KeyError_(f"the HMAC secret is {kind}: anyone holding a public key could sign tokens with it; give "
                        "the shared secret, or the public key as 'public_key' with RS*/ES*/PS*/EdDSA")


def _der_kind(text: bytes) -> str | None:
    """What a base64 text is when it decodes to a public key or a certificate (Keycloak shows its realm's key
    this way; a PEM body copied without its header lines may keep its line breaks)."""
    try:
        der = binascii.a2b_base64(b"".join(text.split()), strict_mode=True)
    except binascii.Error:
        return None
    try:
        serialization.load_der_public_key(der)
        return "a public key (base64 DER, a PEM without its header lines)"
    except (ValueError, UnsupportedAlgorithm):
        pass
    try:
        x509.load_der_x509_certificate(der)
        return "a certificate (base64 DER)"
    except ValueError:
        return None


def secret_key(secret: str) -> KeyEntry:
    material = secret.encode("utf-8")
    _refuse_public_material(material)
    return KeyEntry(kty="oct", key=material, size=len(material))


def _entry_for_public_key(public: Any, kid: str | None = None) -> KeyEntry:
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size > MAX_RSA_BITS:
            raise KeyError_(f"the RSA modulus has {public.key_size} bits, more than the {MAX_RSA_BITS} accepted "
                            "(each verification would cost tens of times a 2048-bit one, or more)")
        if public.public_numbers().e > MAX_RSA_EXPONENT:
            raise KeyError_("the RSA public exponent is larger than 65537, the one issuers use (a larger exponent "
                            "makes each verification cost more, up to hundreds of times)")
        return KeyEntry("RSA", public, kid, thumbprint=RSAKey.import_key(pem).thumbprint(), size=public.key_size)
    if isinstance(public, ec.EllipticCurvePublicKey):
        crv = _CURVES.get(public.curve.name)
        if crv is None:
            raise KeyError_(f"EC curve {public.curve.name} is not supported (P-256, P-384, P-521)")
        return KeyEntry("EC", public, kid, crv=crv, thumbprint=ECKey.import_key(pem).thumbprint())
    if isinstance(public, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        crv = "Ed25519" if isinstance(public, ed25519.Ed25519PublicKey) else "Ed448"
        return KeyEntry("OKP", public, kid, crv=crv, thumbprint=OKPKey.import_key(pem).thumbprint())
    raise KeyError_(f"unsupported public key type {type(public).__name__}")


def pem_key(text: str) -> KeyEntry:
    """A PEM SubjectPublicKeyInfo or X.509 certificate. Private keys are refused: send only the public half."""
    data = text.strip().encode("utf-8")
    if b"PRIVATE KEY" in data:
        raise KeyError_("this is a private key; configure the public key (never share the private key)")
    blocks = data.count(b"-----BEGIN ")
    if blocks > 1:
        # Only one would be used, a certificate before a key whatever their order: a pasted bundle trusted a key
        # other than the one the operator sees first (found by a review).
        raise KeyError_(f"{blocks} PEM blocks, where one key is expected: give one public key or certificate (a "
                        "certificate chain's first, the signer's), or several keys as a 'jwks'")
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            public = x509.load_pem_x509_certificate(data).public_key()
        else:
            public = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyError_("not a PEM public key (SubjectPublicKeyInfo) or X.509 certificate") from None
    return _entry_for_public_key(public)


def _optional_str(jwk: dict[str, Any], name: str) -> str | None:
    value = jwk.get(name)
    if value is not None and not isinstance(value, str):
        raise KeyError_(f"'{name}' must be a string")
    return value


def jwk_key(jwk: Any, *, allow_oct: bool) -> KeyEntry:
    """One JWK (RFC 7517) as a verification key. Private keys, and `oct` keys where not allowed, are refused."""
    if not isinstance(jwk, dict):
        raise KeyError_("a JWK must be a JSON object")
    kty = jwk.get("kty")
    kid, alg, use = _optional_str(jwk, "kid"), _optional_str(jwk, "alg"), _optional_str(jwk, "use")
    key_ops = jwk.get("key_ops")
    if key_ops is not None and not (isinstance(key_ops, list) and all(isinstance(op, str) for op in key_ops)):
        raise KeyError_("'key_ops' must be an array of strings")
    if kty == "oct":
        if not allow_oct:
            raise KeyError_("symmetric 'oct' keys are only accepted in an inline jwks")
    elif kty not in ("RSA", "EC", "OKP"):
        # The value is named only when it is short and plain: a key's material pasted there is not echoed.
        raise KeyError_((f"unsupported kty {kty!r}" if re.fullmatch(r"[A-Za-z0-9-]{1,16}", kty) else
                         "unsupported kty") if isinstance(kty, str) else "'kty' is missing" if kty is None else
                        "'kty' must be a string: RSA, EC, OKP or oct")  # (it said "missing"; found by a review)
    elif "d" in jwk or any(name in jwk for name in ("p", "q", "dp", "dq", "qi")):
        raise KeyError_("this JWK contains private key parameters; publish only the public key")
    try:
        # `use` and `key_ops` are judged by KeyEntry.fits (a set may publish encryption keys beside its signing
        # keys); joserfc refuses some combinations outright, so they are not handed to it.
        imported = JWKRegistry.import_key({name: value for name, value in jwk.items()
                                           if name not in ("use", "key_ops")})
    except (JoseError, ValueError, TypeError, KeyError, UnsupportedAlgorithm):
        raise KeyError_(f"the {kty} JWK is invalid (missing or malformed parameters)") from None
    ops = tuple(key_ops) if key_ops is not None else None
    if kty == "oct":
        material = imported.raw_value
        _refuse_public_material(material)
        return KeyEntry("oct", material, kid, None, alg, use, ops, None, len(material))
    entry = _entry_for_public_key(imported.public_key, kid)
    if _certificate_disagrees(jwk.get("x5c"), entry.key):
        raise KeyError_("the first certificate of 'x5c' holds another key than the JWK's own parameters "
                        "(RFC 7517 4.7: they MUST match)")
    return KeyEntry(entry.kty, entry.key, kid, entry.crv, alg, use, ops, imported.thumbprint(), entry.size)


def _certificate_disagrees(chain: Any, key: Any) -> bool:
    """Whether `x5c`'s first certificate (RFC 7517 4.7: base64 DER, "MUST match" the JWK's other members) holds
    another public key. Only a certificate read and found different refuses the key: the key is always taken from
    the JWK's parameters (a certificate is never trusted for it), and an issuer's odd spelling of a certificate the
    service does not use is no reason to drop its key. A mismatch was accepted silently (found by a review)."""
    if not isinstance(chain, list) or not chain or not isinstance(chain[0], str):
        return False
    try:
        certificate = x509.load_der_x509_certificate(binascii.a2b_base64(chain[0].encode("ascii")))
        public = certificate.public_key()
    except Exception:  # noqa: BLE001 - any certificate not read (InvalidVersion is no ValueError: a v2 certificate
        return False  # made the whole set unusable; found by a review)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return public.public_bytes(*spki) != key.public_bytes(*spki)


def jwk_set(document: Any, *, allow_oct: bool) -> tuple[list[KeyEntry], list[tuple[int, str]]]:
    """Parse a JWK Set; bad entries are returned as (index, problem) for the caller to refuse or skip."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeyError_("a JWK Set must be a JSON object with a 'keys' array")
    entries: list[KeyEntry] = []
    problems: list[tuple[int, str]] = []
    for index, jwk in enumerate(document["keys"][:MAX_KEYS_PER_SET]):
        try:
            entries.append(jwk_key(jwk, allow_oct=allow_oct))
        except KeyError_ as exc:
            problems.append((index, str(exc)))
        except Exception as exc:  # noqa: BLE001 - a key this code cannot read is skipped, never its whole set
            problems.append((index, f"the JWK could not be read ({type(exc).__name__})"))
    if len(document["keys"]) > MAX_KEYS_PER_SET:
        problems.append((MAX_KEYS_PER_SET, f"only the first {MAX_KEYS_PER_SET} keys are used"))
    return entries, problems


@dataclass(frozen=True, slots=True)
class KeyView:
    """What the async edge knows about a policy's keys at the moment of a validation."""

    keyset: KeySet | None
    source: str
    stale_seconds: float | None = None  # set when past max age and the refresh failed (stale-if-error)
    error: str | None = None  # why no usable key set is available
    fetched_at: float | None = None
