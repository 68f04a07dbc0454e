"""Keys, policies and tokens for the benchmarks, minted with tests/mint.py (never with the code under test).

One policy per algorithm, with the checks PyJWT is asked for too: alg allow-list, signature, `iss`, `aud`,
`exp`/`nbf`/`iat` with 60 s of leeway, and `exp`, `iat`, `iss`, `aud` required.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from cryptography.hazmat.primitives import serialization

from tests.mint import SigningKey, jwks, key_for, mint

ISSUER = "https://issuer.bench.example/"
AUDIENCE = "https://api.bench.example"
ALGS = ("RS256", "ES256", "EdDSA", "HS256")
HS_SECRET = "bench-hs256-secret-" + "0123456789abcdef" * 3  # 67 ASCII bytes: no WEAK_KEY finding
REQUIRED = ["exp", "iat", "iss", "aud"]
SKEW = 60


def signing_key(alg: str) -> SigningKey:
    if alg == "HS256":
        return SigningKey("HS256", HS_SECRET.encode(), "hs256-bench")
    return key_for(alg, f"{alg.lower()}-bench")


def policy_doc(alg: str) -> dict[str, Any]:
    """The inline policy (VerifyPolicy wire shape) used in process and in every HTTP request body."""
    doc: dict[str, Any] = {"issuer": ISSUER, "audiences": [AUDIENCE], "allowed_algs": [alg],
                           "required_claims": REQUIRED, "clock_skew_seconds": SKEW}
    if alg == "HS256":
        doc["secret"] = HS_SECRET
    else:
        doc["public_key"] = signing_key(alg).public_pem
    return doc


def claims(index: int, now: float) -> dict[str, Any]:
    """A realistic access-token claim set; `sub` and `jti` make every token distinct."""
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": f"auth0|user-{index:07d}", "iat": int(now) - 5,
            "exp": int(now) + 3600, "jti": f"{index:012x}-bench", "scope": "openid read:reports write:reports",
            "org": "acme", "azp": "bench-client-0123456789"}


def mint_range(alg: str, start: int, count: int, now: float, key: SigningKey | None = None) -> list[str]:
    key = key or signing_key(alg)
    return [mint(claims(index, now), key) for index in range(start, start + count)]


_POOL_KEY: SigningKey | None = None


def _init_pool(alg: str, kid: str, pem: bytes) -> None:
    global _POOL_KEY
    _POOL_KEY = SigningKey(alg, serialization.load_pem_private_key(pem, password=None), kid)


def _mint_chunk(args: tuple[str, int, int, float]) -> list[str]:
    alg, start, count, now = args
    return mint_range(alg, start, count, now, _POOL_KEY)


def mint_many(alg: str, count: int, now: float, processes: int | None = None) -> list[str]:
    """`count` distinct tokens; RSA signing (~1 ms each) is spread over the cores."""
    processes = processes or os.cpu_count() or 1
    key = signing_key(alg)
    if count < 500 or processes == 1 or isinstance(key.private, bytes):
        return mint_range(alg, 0, count, now, key)
    pem = key.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    chunk = -(-count // (processes * 4))
    jobs = [(alg, start, min(chunk, count - start), now) for start in range(0, count, chunk)]
    with ProcessPoolExecutor(processes, initializer=_init_pool, initargs=(alg, key.kid, pem)) as pool:
        return [token for part in pool.map(_mint_chunk, jobs) for token in part]


def public_jwk(alg: str) -> dict[str, Any]:
    return jwks(signing_key(alg))["keys"][0]
