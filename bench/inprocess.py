"""In-process figures, µs per token: our `validate` cold and warm next to the floors and PyJWT.

Every figure is the median over `repeats` of the mean time per call of one loop over the tokens, timed with
`perf_counter_ns` after a warm-up pass. Cold = signature work on every call (distinct tokens, a fresh
`VerifiedCache` per repeat, so each call is a miss followed by a put, as in the server); warm = the same token
again (a cache hit: hash, lookup, time checks, result). The floors get the same tokens with everything they need
precomputed: "raw verify" is only the `cryptography` call with a preloaded key (plus the R||S -> DER conversion
ES256 needs); "parse + verify" adds base64url-decoding the three segments and msgspec-decoding header and payload,
as fast as we know how (msgspec's base64 after translating the alphabet, the header decoded once per distinct
header, as our parser does): the floor the targets are measured against. "Parse + verify, written plainly" does the
same with `base64.urlsafe_b64decode` and every header decoded, what a first implementation would do.
"""

from __future__ import annotations

import base64
import gc
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import jwt as pyjwt
import msgspec

from app.keys import ALGORITHMS, KeyView
from app.policy import VerifyPolicy, compile_policy
from app.validation import VerifiedCache, validate
from bench import tokens as T

MAX_TOKEN_BYTES = 16384


@dataclass
class AlgFigures:
    alg: str
    cold: float = 0.0
    warm: float = 0.0
    raw_verify: float = 0.0
    parse_verify: float = 0.0
    parse_verify_plain: float = 0.0
    pyjwt: float = 0.0
    notes: list[str] = field(default_factory=list)


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


_STANDARD = bytes.maketrans(b"-_", b"+/")
_BASE64 = msgspec.json.Decoder(bytes).decode  # a JSON string decoded as bytes is standard base64
_CLOSING = (b'"', b'"', b'=="', b'="')  # by the segment's length mod 4


def _b64_fast(segment: str) -> bytes:
    return _BASE64(b'"' + segment.encode().translate(_STANDARD) + _CLOSING[len(segment) & 3])


def median_us(run: Callable[[], tuple[int, int]], repeats: int) -> float:
    """`run` returns (elapsed ns, calls); the answer is the median of the per-call means, in µs."""
    return interleaved({"x": run}, repeats)["x"]


def interleaved(runs: dict[str, Callable[[], tuple[int, int]]], repeats: int) -> dict[str, float]:
    """Median µs per call of each run, measured in rounds (every run once per round, after one warm-up round) so
    that a figure and its baseline see the same machine: other jobs on a 2-core box move both, not one."""
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(repeats + 1):
        for name, run in runs.items():
            gc.collect()
            elapsed, calls = run()
            if round_:
                samples[name].append(elapsed / calls / 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def loop(fn: Callable[[Any], Any], items: list[Any]) -> Callable[[], tuple[int, int]]:
    def run() -> tuple[int, int]:
        clock = time.perf_counter_ns
        start = clock()
        for item in items:
            fn(item)
        return clock() - start, len(items)

    return run


def compiled(alg: str) -> Any:
    return compile_policy(msgspec.convert(T.policy_doc(alg), VerifyPolicy), inline=True)


def raw_verifier(alg: str) -> tuple[Any, Callable[[bytes, bytes], Any]]:
    """The preloaded `cryptography` key and the bare verify call (HMAC: hmac.digest + compare_digest)."""
    policy = compiled(alg)
    assert policy.static_keys is not None
    key = policy.static_keys.keys[0].key
    verify = ALGORITHMS[alg].verify
    return key, lambda data, signature: verify(key, data, signature)


def measure_alg(alg: str, distinct: list[str], now: float, *, repeats: int, warm_calls: int) -> AlgFigures:
    figures = AlgFigures(alg)
    policy = compiled(alg)
    keys = KeyView(policy.static_keys, policy.key_source)

    # Sanity first: a benchmark of failing validations would measure the wrong thing.
    first = validate(distinct[0], policy, keys, now, max_token_bytes=MAX_TOKEN_BYTES, cache=None)
    if not first.valid:
        raise RuntimeError(f"{alg}: the benchmark token does not validate: {first.summary}")

    def cold() -> tuple[int, int]:
        cache = VerifiedCache(10_000)
        clock = time.perf_counter_ns
        start = clock()
        for raw in distinct:
            validate(raw, policy, keys, now, max_token_bytes=MAX_TOKEN_BYTES, cache=cache)
        return clock() - start, len(distinct)

    warm_cache = VerifiedCache(10_000)
    same = distinct[0]
    validate(same, policy, keys, now, max_token_bytes=MAX_TOKEN_BYTES, cache=warm_cache)
    warm = loop(lambda raw: validate(raw, policy, keys, now, max_token_bytes=MAX_TOKEN_BYTES, cache=warm_cache),
                [same] * warm_calls)

    _, verify = raw_verifier(alg)
    prepared = []
    for raw in distinct:
        head, payload, signature = raw.split(".")
        prepared.append((f"{head}.{payload}".encode(), _b64(signature)))
    if not all(verify(data, signature) for data, signature in prepared[:3]):
        raise RuntimeError(f"{alg}: the raw verify floor rejects the benchmark tokens")

    decode = msgspec.json.decode
    headers: dict[str, Any] = {}

    def parse_verify(raw: str) -> Any:
        head, payload, signature = raw.split(".")
        if head not in headers:
            headers[head] = decode(_b64_fast(head))
        claims = decode(_b64_fast(payload))
        verify(raw[:len(head) + len(payload) + 1].encode(), _b64_fast(signature))
        return claims

    def parse_verify_plain(raw: str) -> Any:
        head, payload, signature = raw.split(".")
        decode(_b64(head))
        claims = decode(_b64(payload))
        verify(f"{head}.{payload}".encode(), _b64(signature))
        return claims

    if parse_verify(distinct[0]) != parse_verify_plain(distinct[0]):
        raise RuntimeError(f"{alg}: the two parse + verify floors read the token differently")

    jwk = pyjwt.PyJWK(T.public_jwk(alg) if alg != "HS256" else
                      {"kty": "oct", "k": base64.urlsafe_b64encode(T.HS_SECRET.encode()).rstrip(b"=").decode()},
                      algorithm=alg)
    options = {"require": T.REQUIRED}

    def pyjwt_decode(raw: str) -> Any:
        return pyjwt.decode(raw, jwk, algorithms=[alg], audience=T.AUDIENCE, issuer=T.ISSUER, options=options,
                            leeway=T.SKEW)

    pyjwt_decode(distinct[0])  # raises if PyJWT would refuse it
    medians = interleaved({"cold": cold, "warm": warm, "raw_verify": loop(lambda pair: verify(*pair), prepared),
                           "parse_verify": loop(parse_verify, distinct),
                           "parse_verify_plain": loop(parse_verify_plain, distinct),
                           "pyjwt": loop(pyjwt_decode, distinct)},
                          repeats)
    for name, value in medians.items():
        setattr(figures, name, value)
    if warm_cache.hits < warm_calls:
        figures.notes.append(f"{alg} warm: only {warm_cache.hits} cache hits")
    return figures


def measure_all(pools: dict[str, list[str]], now: float, *, repeats: int = 7, warm_calls: int = 5000
                ) -> list[AlgFigures]:
    return [measure_alg(alg, pools[alg], now, repeats=repeats, warm_calls=warm_calls) for alg in T.ALGS]
