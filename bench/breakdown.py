"""Where the in-process time goes: each stage of `validate` (and of the HTTP edge around it) timed on its own.

The stages are called directly with the inputs `validate` would give them, so the parts add up to roughly the
whole (the remainder is call overhead and the glue in `validate`). Private helpers of app.validation are used
read-only; when a refactor renames them the row says so instead of failing the run.
`python -m bench.breakdown [--profile]` prints the table (and cProfile's top functions).
"""

from __future__ import annotations

import cProfile
import hashlib
import io
import pstats
import sys
import time
from typing import Any, Callable

import msgspec

from app.checks import Context
from app.keys import ALGORITHMS, KeyView
from app.policy import PolicyCache, VerifyPolicy
from app.validation import VerifiedCache, validate
from bench import tokens as T
from bench.inprocess import MAX_TOKEN_BYTES, compiled, loop, median_us

Row = tuple[str, str, float | None, str]  # (alg, stage, µs, note)


def _stage(rows: list[Row], alg: str, name: str, fn: Callable[[Any], Any], items: list[Any], repeats: int,
           note: str = "") -> None:
    try:
        fn(items[0])
        rows.append((alg, name, median_us(loop(fn, items), repeats), note))
    except Exception as exc:  # noqa: BLE001 - a renamed helper must not stop the harness
        rows.append((alg, name, None, f"n/a: {type(exc).__name__}: {exc}"[:120]))


def stages(alg: str, distinct: list[str], now: float, *, repeats: int = 5, calls: int = 5000) -> list[Row]:
    from app import token as tok
    from app import validation as V
    from app.checks import claims as C, header as H, time as TM

    policy = compiled(alg)
    keys = KeyView(policy.static_keys, policy.key_source)
    raw = distinct[0]
    same = [raw] * calls
    rows: list[Row] = []
    kw = {"max_token_bytes": MAX_TOKEN_BYTES}

    def cold(item: str) -> Any:
        return validate(item, policy, keys, now, **kw, cache=None)

    _stage(rows, alg, "validate, cold (no cache)", cold, distinct, repeats)
    cache = VerifiedCache(10_000)
    validate(raw, policy, keys, now, **kw, cache=cache)
    _stage(rows, alg, "validate, warm (cache hit)", lambda item: validate(item, policy, keys, now, **kw, cache=cache),
           same, repeats)
    _stage(rows, alg, "  sha256 + token id", lambda item: hashlib.sha256(item.encode("utf-8", "surrogatepass"))
           .digest().hex()[:16], same, repeats)
    _stage(rows, alg, "  parse (token.parse)", lambda item: tok.parse(item, MAX_TOKEN_BYTES), same, repeats)
    head, payload, signature = raw.split(".")
    _stage(rows, alg, "    strict base64url x3 (b64url_decode)",
           lambda _: (tok.b64url_decode(head, "header"), tok.b64url_decode(payload, "payload"),
                      tok.b64url_decode(signature, "signature")), same, repeats,
           "regex fullmatch + decode + canonical re-encode")
    head_bytes, payload_bytes = tok.b64url_decode(head, "header"), tok.b64url_decode(payload, "payload")
    _stage(rows, alg, "    JSON objects x2 (decode_json_object)",
           lambda _: (tok.decode_json_object(head_bytes, "header"), tok.decode_json_object(payload_bytes, "payload")),
           same, repeats, "msgspec decode + re-encode duplicate check")
    _stage(rows, alg, "      of which msgspec.json.decode x2",
           lambda _: (msgspec.json.decode(head_bytes), msgspec.json.decode(payload_bytes)), same, repeats)
    parsed = tok.parse(raw, MAX_TOKEN_BYTES)
    _stage(rows, alg, "  static checks (_run_static)",
           lambda _: V._run_static(Context(parsed, policy, keys, now)), same, repeats)
    ctx = Context(parsed, policy, keys, now)
    H.check_algorithm(ctx)
    H.check_key(ctx)
    for name, check in (("check_algorithm", H.check_algorithm), ("check_key", H.check_key),
                        ("check_signature", H.check_signature), ("check_issuer", C.check_issuer),
                        ("check_audience", C.check_audience), ("check_lifetime", TM.check_lifetime),
                        ("check_token_type", C.check_token_type),
                        ("check_required_claims", C.check_required_claims)):
        _stage(rows, alg, f"    {name}", lambda _, check=check: check(ctx), same, repeats)
    key = policy.static_keys.keys[0].key if policy.static_keys else None
    verify = ALGORITHMS[alg].verify
    _stage(rows, alg, "      of which the raw verify", lambda _: verify(key, parsed.signing_input, parsed.signature),
           same, repeats)
    verified = V._run_static(Context(parsed, policy, keys, now))
    tid = hashlib.sha256(raw.encode()).hexdigest()[:16]
    _stage(rows, alg, "  assemble (_assemble)", lambda _: V._assemble(verified, ctx, tid), same, repeats,
           "time check + summary + result Struct, every call")
    _stage(rows, alg, "    check_time", lambda _: TM.check_time(ctx), same, repeats)
    digest = hashlib.sha256(raw.encode()).digest()
    cache_key = (digest, policy.fingerprint, policy.static_keys.version if policy.static_keys else "")
    _stage(rows, alg, "  cache get (hit)", lambda _: cache.get(cache_key), same, repeats)
    _stage(rows, alg, "  Context + ParsedToken for a hit",
           lambda _: Context(tok.ParsedToken(verified.header, verified.claims, b"", b"", ""), policy, keys, now),
           same, repeats)

    # The HTTP edge around the core, per request (app/api/validation.py, app/verifier.py).
    from app.api.validation import ValidateRequest

    body = msgspec.json.encode({"token": raw, "policy": T.policy_doc(alg)})
    _stage(rows, alg, "edge: decode request body (ValidateRequest)",
           lambda _: msgspec.json.decode(body, type=ValidateRequest), same, repeats, f"{len(body)} bytes incl. policy")
    request = msgspec.json.decode(body, type=ValidateRequest)
    policies = PolicyCache()
    assert isinstance(request.policy, VerifyPolicy)
    policies.get(request.policy, ())
    _stage(rows, alg, "edge: PolicyCache.get (hit)", lambda _: policies.get(request.policy, ()), same, repeats,
           "re-encodes the policy and hashes it every request")
    result = validate(raw, policy, keys, now, **kw, cache=cache)
    _stage(rows, alg, "edge: encode response (ValidationResult)", lambda _: msgspec.json.encode(result), same,
           repeats, f"{len(msgspec.json.encode(result))} bytes")
    return rows


def profile(alg: str, distinct: list[str], now: float, *, warm: bool, top: int = 20) -> str:
    policy = compiled(alg)
    keys = KeyView(policy.static_keys, policy.key_source)
    cache = VerifiedCache(10_000)
    items = [distinct[0]] * len(distinct) if warm else distinct
    profiler = cProfile.Profile()
    profiler.enable()
    for raw in items:
        validate(raw, policy, keys, now, max_token_bytes=MAX_TOKEN_BYTES, cache=cache)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv: list[str]) -> int:
    now = time.time()
    for alg in ("RS256", "HS256"):
        distinct = T.mint_range(alg, 0, 1000, now)
        for _, name, value, note in stages(alg, distinct, now):
            figure = f"{value:8.2f} µs" if value is not None else "     n/a   "
            print(f"{alg:6} {name:48} {figure}  {note}")
        if "--profile" in argv:
            for warm in (False, True):
                print(f"--- cProfile {alg} {'warm' if warm else 'cold'} (tottime) ---")
                print(profile(alg, distinct, now, warm=warm))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
