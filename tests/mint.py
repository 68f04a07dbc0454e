"""An independent token minter for tests: signs with `cryptography` directly, never with the code under test, and
can produce the hostile shapes (alg none, DER signatures, embedded keys) a real library would refuse to make."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from functools import cache
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc.jwk import ECKey, OKPKey, RSAKey

HASHES = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}
CURVE_BYTES = {"ES256": 32, "ES384": 48, "ES512": 66}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


@dataclass(frozen=True)
class SigningKey:
    alg: str
    private: Any
    kid: str

    @property
    def public_pem(self) -> str:
        if isinstance(self.private, bytes):
            raise TypeError("an HMAC secret has no public half")
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    @property
    def jwk(self) -> dict[str, Any]:
        """The public JWK (with kid and use)."""
        if isinstance(self.private, bytes):
            return {"kty": "oct", "k": b64(self.private), "kid": self.kid}
        cls = {"RS": RSAKey, "PS": RSAKey, "ES": ECKey, "Ed": OKPKey}[self.alg[:2]]
        data = cls.import_key(self.public_pem).as_dict(private=False)
        return {**data, "kid": self.kid, "use": "sig"}

    def sign(self, signing_input: bytes) -> bytes:
        return sign(self.alg, self.private, signing_input)


def sign(alg: str, private: Any, data: bytes) -> bytes:
    family, bits = alg[:2], alg[2:]
    if family == "HS":
        return hmac.new(private, data, getattr(hashlib, f"sha{bits}")).digest()
    if family == "RS":
        return private.sign(data, padding.PKCS1v15(), HASHES[bits])
    if family == "PS":
        return private.sign(data, padding.PSS(padding.MGF1(HASHES[bits]), HASHES[bits].digest_size), HASHES[bits])
    if family == "ES":
        r, s = decode_dss_signature(private.sign(data, ec.ECDSA(HASHES[bits])))
        size = CURVE_BYTES[alg]
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if alg == "EdDSA":
        return private.sign(data)
    raise ValueError(alg)


@cache
def key_for(alg: str, kid: str | None = None) -> SigningKey:
    """One key per algorithm family and kid, generated once per test session."""
    kid = kid or f"{alg.lower()}-1"
    family = alg[:2]
    if family == "HS":
        private: Any = hashlib.sha512(f"test secret {kid}".encode()).digest()
    elif family in ("RS", "PS"):
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif family == "ES":
        private = ec.generate_private_key({"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(),
                                           "ES512": ec.SECP521R1()}[alg])
    elif alg == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(alg)
    return SigningKey(alg, private, kid)


def mint(claims: dict[str, Any], key: SigningKey, *, header: dict[str, Any] | None = None, alg: str | None = None,
         kid: str | None | bool = True) -> str:
    """A compact JWS of `claims` signed by `key`; `header` entries override the defaults."""
    head: dict[str, Any] = {"alg": alg or key.alg, "typ": "JWT"}
    if kid is True:
        head["kid"] = key.kid
    elif isinstance(kid, str):
        head["kid"] = kid
    head.update(header or {})
    signing_input = f"{segment(head)}.{segment(claims)}"
    return f"{signing_input}.{b64(key.sign(signing_input.encode()))}"


def jwks(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [key.jwk for key in keys]}
