"""Where the in-process time goes: each stage of `validate` (and of the HTTP edge around it) timed on its own.

The stages are called directly with the inputs `validate` would give them, so the parts add up to roughly the
whole (the remainder is call overhead and the glue in `validate`). Private helpers of app.validation are used
read-only; when a refactor renames them the row says so instead of failing the run.
`python -m bench.breakdown [--profile]` prints the table (and cProfile's top functions).
"""

from __future__ import annotations

import cProfile
import gc
import hashlib
import io
import os
import pstats
import statistics
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
           .digest()[:8].hex(), same, repeats)
    _stage(rows, alg, "  parse (token.parse)", lambda item: tok.parse(item, MAX_TOKEN_BYTES), same, repeats)
    # What `parse` does for a clean token (`_parse_fast`): the header is memoised by its segment, so it decodes
    # the payload and the signature and reads one JSON object.
    head, payload, signature = raw.split(".")
    _stage(rows, alg, "    strict base64url x2 (_strict_b64url)",
           lambda _: (tok._strict_b64url(payload), tok._strict_b64url(signature)),
           same, repeats, "payload and signature: alphabet translated, msgspec's base64 (the header is memoised)")
    payload_bytes = tok.b64url_decode(payload, "payload")
    separators = tok._separators(payload_bytes)
    _stage(rows, alg, "    payload JSON object (_json_object_fast)",
           lambda _: tok._json_object_fast(payload_bytes, separators), same, repeats,
           "msgspec decode + duplicate-name check")
    _stage(rows, alg, "      of which msgspec.json.decode",
           lambda _: msgspec.json.decode(payload_bytes), same, repeats)
    parsed = tok.parse(raw, MAX_TOKEN_BYTES)
    _stage(rows, alg, "  straight line for a clean token (_clean)", lambda _: V._clean(parsed, policy, keys), same,
           repeats, "every check's pass condition, then the signature")
    _stage(rows, alg, "  explaining pipeline (_run_static)",
           lambda _: V._run_static(Context(parsed, policy, keys, now)), same, repeats,
           "what a token with a finding goes through")
    ctx = Context(parsed, policy, keys, now)
    H.check_algorithm(ctx)
    H.check_key(ctx)
    key = policy.static_keys.keys[0].key if policy.static_keys else None
    verify = ALGORITHMS[alg].verify
    for name, check in (("check_algorithm", H.check_algorithm), ("check_key", H.check_key),
                        ("check_signature", H.check_signature), ("check_issuer", C.check_issuer),
                        ("check_audience", C.check_audience), ("check_lifetime", TM.check_lifetime),
                        ("check_token_type", C.check_token_type),
                        ("check_required_claims", C.check_required_claims)):
        _stage(rows, alg, f"    {name}", lambda _, check=check: check(ctx), same, repeats)
        if name == "check_signature":
            _stage(rows, alg, "      of which the raw verify",
                   lambda _: verify(key, parsed.signing_input, parsed.signature), same, repeats)
    verified = V._run_static(Context(parsed, policy, keys, now))
    tid = hashlib.sha256(raw.encode()).digest()[:8].hex()
    _stage(rows, alg, "  assemble (_assemble)", lambda _: V._assemble(verified, policy, keys, now, tid), same,
           repeats, "time test + result Struct, every call (cache hits too)")
    _stage(rows, alg, "  time_window (once per cold validation)", lambda _: TM.time_window(parsed.claims, policy),
           same, repeats, "kept in the cache entry; not part of assemble")
    digest = hashlib.sha256(raw.encode()).digest()
    cache_key = (digest, policy.fingerprint, policy.static_keys.version if policy.static_keys else "")
    _stage(rows, alg, "  cache get (hit)", lambda _: cache.get(cache_key), same, repeats)

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


def asgi_per_request(now: float, distinct: list[str], *, calls: int = 2000, repeats: int = 5) -> list[tuple[str, float]]:
    """The HTTP stack without the network: the ASGI app called in process (scope, receive, send), µs per
    request, for the empty endpoint, FastAPI + PyJWT and ours, with the same requests wrk sends. The difference
    to the empty endpoint is what the application costs per request; wrk's figures add the server and kernel.
    The authorize and forward-auth rows appear when the app accepts the benchmark's AUTHORIZERS_JSON."""
    import asyncio
    import json
    from contextlib import AsyncExitStack

    from app.server import create_app
    from app.settings import load_settings
    from bench import authz, empty_app, fastapi_baseline

    template = msgspec.json.encode({"token": "@TOKEN@", "policy": T.policy_doc("RS256")})
    bodies = [template.replace(b"@TOKEN@", raw.encode()) for raw in distinct]
    json_headers = [(b"content-type", b"application/json")]
    # The apps log one line per request (as served); here the lines go to /dev/null, their cost stays in.
    quiet, stdout = open(os.devnull, "w"), sys.stdout
    sys.stdout = quiet
    try:
        ours = create_app(load_settings({}))
        with_rules: Any = create_app(load_settings({"AUTHORIZERS_JSON": json.dumps(authz.authorizers("RS256", (10,)))}))
    finally:
        sys.stdout = stdout
    Case = tuple[str, Any, str, str, list[tuple[bytes, bytes]], list[bytes]]
    cases: list[Case] = [
        ("empty Litestar endpoint", empty_app.app, "POST", "/empty", json_headers, [bodies[0]] * calls),
        ("FastAPI + PyJWT", fastapi_baseline.app, "POST", "/v1/validate/jwt", json_headers, [bodies[0]] * calls),
        ("ours: validate, token repeating (cache hit)", ours, "POST", "/v1/validate/jwt", json_headers,
         [bodies[0]] * calls),
        ("ours: validate, every token distinct", ours, "POST", "/v1/validate/jwt", json_headers, bodies[:calls]),
    ]
    if with_rules is not None:
        request = {"method": authz.METHOD, "path": authz.TARGET,
                   "headers": {**authz.HEADERS, "authorization": f"Bearer {distinct[0]}"}}
        authorize_body = msgspec.json.encode({"authorizer": "bench-10", "request": request})
        forward_headers = [(b"authorization", f"Bearer {distinct[0]}".encode()), (b"x-forwarded-method", b"GET"),
                           (b"x-forwarded-uri", authz.TARGET.encode()), (b"x-tenant", b"acme")]
        cases += [("ours: /v1/authorize, 10 rules, token repeating", with_rules, "POST", "/v1/authorize",
                   json_headers, [authorize_body] * calls),
                  ("empty Litestar GET endpoint (forward-auth's headers)", empty_app.app, "GET", "/empty",
                   forward_headers, [b""] * calls),
                  ("FastAPI + PyJWT forward-auth GET", fastapi_baseline.app, "GET", "/v1/forward-auth/bench-10",
                   forward_headers, [b""] * calls),
                  ("ours: forward-auth, 10 rules, token repeating", with_rules, "GET", "/v1/forward-auth/bench-10",
                   forward_headers, [b""] * calls)]

    async def call(app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
                 "headers": [(b"host", b"127.0.0.1"), (b"content-length", str(len(body)).encode()), *headers],
                 "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "state": {}}
        sent = False
        status = 0

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(scope, receive, send)
        return status

    async def measure() -> list[tuple[str, float]]:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(ours.lifespan())
            if with_rules is not None:
                await stack.enter_async_context(with_rules.lifespan())
            usable = []
            for case in cases:
                name, app, method, path, headers, items = case
                if await call(app, method, path, headers, items[0]) == 200:
                    usable.append(case)
            samples: dict[str, list[float]] = {case[0]: [] for case in usable}
            for round_ in range(repeats + 1):
                for name, app, method, path, headers, items in usable:
                    if name.endswith("distinct"):
                        ours.state.verifier.cache = type(ours.state.verifier.cache)(10_000)
                    gc.collect()
                    start = time.perf_counter_ns()
                    for body in items:
                        await call(app, method, path, headers, body)
                    if round_:
                        samples[name].append((time.perf_counter_ns() - start) / len(items) / 1000)
            return [(name, statistics.median(values)) for name, values in samples.items()]

    return asyncio.run(measure())


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
    pools = {alg: T.mint_range(alg, 0, 1000, now) for alg in ("RS256", "HS256")}
    for alg, distinct in pools.items():
        print(f"--- {alg}: stages alone, µs per call")
        for _, name, value, stage_note in stages(alg, distinct, now):
            figure = f"{value:8.2f}" if value is not None else "     n/a"
            print(f"{name:48} {figure}  {stage_note}")
        if "--profile" in argv:
            for warm in (False, True):
                print(f"--- cProfile {alg} {'warm' if warm else 'cold'} (tottime) ---")
                print(profile(alg, distinct, now, warm=warm))
    print("--- ASGI app called in process, µs per request")
    for name, value in asgi_per_request(now, pools["RS256"], calls=1000):
        print(f"{name:48} {value:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
