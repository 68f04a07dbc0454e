"""A worker's resident size with the verified-token cache full: run in a fresh process, like a worker.

`python -m bench.memory TOKENS_FILE POLICY_FILE [COUNT]` builds the app as a granian worker would (create_app with the
default settings, so VERIFIED_TOKEN_CACHE_SIZE = 10,000), reads VmRSS, validates COUNT distinct tokens read one
by one from the file through the app's Verifier (every result is kept in its cache; the tokens themselves are
not kept; the policy comes from POLICY_FILE, since the keys are generated per run), reads VmRSS again and prints one JSON line.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time

import msgspec


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str]) -> int:
    path, policy_path = argv[0], argv[1]
    count = int(argv[2]) if len(argv) > 2 else 10_000
    from app.policy import VerifyPolicy
    from app.server import create_app
    from app.settings import load_settings

    settings = load_settings({})
    app = create_app(settings)
    verifier = app.state.verifier
    policy = verifier.compile_inline(msgspec.json.decode(open(policy_path, "rb").read(), type=VerifyPolicy))
    gc.collect()
    before = rss_mib()

    async def fill() -> int:
        valid = 0
        with open(path) as tokens:
            for _, line in zip(range(count), tokens):
                result = await verifier.validate(line.strip(), policy)
                valid += result.valid
        return valid

    started = time.perf_counter()
    valid = asyncio.run(fill())
    elapsed = time.perf_counter() - started
    gc.collect()
    after = rss_mib()
    print(json.dumps({"rss_before_mib": round(before, 1), "rss_after_mib": round(after, 1),
                      "entries": len(verifier.cache), "cache_size": settings.verified_token_cache_size,
                      "valid": valid, "seconds": round(elapsed, 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
