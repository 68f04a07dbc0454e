"""The verified-token cache: signature work once per token, policy and key set; time checks on every hit."""

from __future__ import annotations

import dataclasses
import json

import pytest

from app import keys as keys_module
from app.keys import KeyView
from app.policy import VerifyPolicy, compile_policy
from app.validation import VerifiedCache, validate
from tests.conftest import AUDIENCE, ISSUER, NOW, claims
from tests.mint import key_for, mint


@pytest.fixture
def rsa_calls(monkeypatch) -> list[int]:
    """Counts RS256 signature verifications by wrapping the registered verifier."""
    calls: list[int] = []
    algorithm = keys_module.ALGORITHMS["RS256"]
    original = algorithm.verify

    def counting(key, data, signature):
        calls.append(1)
        return original(key, data, signature)

    monkeypatch.setitem(keys_module.ALGORITHMS, "RS256", dataclasses.replace(algorithm, verify=counting))
    return calls


def policy(**overrides):
    fields = {"issuer": ISSUER, "audiences": [AUDIENCE], "allowed_algs": ["RS256"],
              "public_key": key_for("RS256").public_pem, **overrides}
    return compile_policy(VerifyPolicy(**fields), inline=False)  # a profile's (see the cache's two classes)


def run(token, compiled, cache, now=NOW):
    return validate(token, compiled, KeyView(compiled.static_keys, compiled.key_source), now,
                    max_token_bytes=16384, cache=cache)


def test_second_validation_of_the_same_token_does_no_signature_work(rsa_calls):
    cache, compiled, token = VerifiedCache(100), policy(), mint(claims(), key_for("RS256"))
    first, second = run(token, compiled, cache), run(token, compiled, cache)
    assert first.valid and second.valid
    assert len(rsa_calls) == 1
    assert (cache.hits, cache.misses) == (1, 1)
    assert second.claims == first.claims and second.key == first.key


def test_token_cached_while_valid_is_rejected_once_expired(rsa_calls):
    cache, compiled = VerifiedCache(100), policy(clock_skew_seconds=0)
    token = mint(claims(exp=NOW + 100), key_for("RS256"))
    assert run(token, compiled, cache).valid
    later = run(token, compiled, cache, now=NOW + 100)
    assert [item.code for item in later.findings] == ["TOKEN_EXPIRED"]
    assert later.expires_in == 0
    assert len(rsa_calls) == 1


def test_replaying_a_bad_signature_does_no_rsa_work(rsa_calls):
    cache, compiled = VerifiedCache(100), policy()
    forged = mint(claims(), key_for("RS256", "attacker"))
    results = [run(forged, compiled, cache) for _ in range(50)]
    assert all([item.code for item in result.findings] == ["SIGNATURE_INVALID"] for result in results)
    assert len(rsa_calls) == 1


def test_another_policy_is_another_cache_entry(rsa_calls):
    cache, token = VerifiedCache(100), mint(claims(), key_for("RS256"))
    assert run(token, policy(), cache).valid
    other = run(token, policy(audiences=["https://other.example.com"]), cache)
    assert [item.code for item in other.findings] == ["AUDIENCE_MISMATCH"]
    assert len(rsa_calls) == 2


def test_cache_is_bounded_least_recently_used_first_out(rsa_calls):
    cache, compiled = VerifiedCache(3), policy()
    tokens = [mint(claims(jti=str(index)), key_for("RS256")) for index in range(4)]
    for token in tokens:
        run(token, compiled, cache)
    assert len(cache) == 3
    run(tokens[0], compiled, cache)  # evicted: signature work again
    assert len(rsa_calls) == 5


def test_forget_version_empties_the_entries_of_a_key_set(rsa_calls):
    cache, compiled, token = VerifiedCache(100), policy(), mint(claims(), key_for("RS256"))
    run(token, compiled, cache)
    cache.forget_version(compiled.static_keys.version)
    assert len(cache) == 0
    run(token, compiled, cache)
    assert len(rsa_calls) == 2


def test_malformed_tokens_are_not_cached():
    cache, compiled = VerifiedCache(100), policy()
    run("not.a.token", compiled, cache)
    assert len(cache) == 0


def test_a_key_set_that_differs_in_any_field_gets_a_new_version():
    """The version keys the verified-token cache: a set that kept the version of the set it replaced kept a removed
    key's cached answers. Fields joined with `|` were ambiguous (a crafted `kid`, or `alg` "None" against none at
    all). Found by a review."""
    k1, k2 = key_for("RS256", "a").jwk, key_for("RS256", "b").jwk
    first = keys_module.key_set([keys_module.jwk_key(k1, allow_oct=False), keys_module.jwk_key(k2, allow_oct=False)])
    thumbprint = first.keys[0].thumbprint
    crafted = {**k2, "kid": f"a|RSA|None|None|sig|None|{thumbprint}|2048;b"}
    assert keys_module.key_set([keys_module.jwk_key(crafted, allow_oct=False)]).version != first.version
    plain = keys_module.key_set([keys_module.jwk_key(k1, allow_oct=False)])
    named = keys_module.key_set([keys_module.jwk_key({**k1, "alg": "None"}, allow_oct=False)])
    assert plain.version != named.version
    assert keys_module.key_set([keys_module.jwk_key(k1, allow_oct=False)]).version == plain.version  # stable


def _chain(keys: list[str]) -> object:
    value: object = 0
    for key in reversed(keys):
        value = {key: value}
    return value


_HOSTILE_PAYLOADS = {  # JSON texts that decode into far more memory than their size, each ~12 KB
    "floats": "[" + ",".join(["0.5"] * 3000) + "]",
    "empty-objects": "[" + ",".join(["{}"] * 1000) + "]",
    "short-strings": "[" + ",".join(f'"{index:02x}"' for index in range(2400)) + "]",
    "object-members": "{" + ",".join(f'"{index:03x}":{index}' for index in range(1400)) + "}",
    "large-ints": "[" + ",".join([str(10**30)] * 380) + "]",
    # Found by a review of the first bound: CPython stores non-ASCII text in 2 or 4 bytes a character.
    "non-ascii-strings": "[" + ",".join(['"\u0100"'] * 3000) + "]",
    "astral-strings": "[" + ",".join(['"\U0001F600\U0001F600"'] * 1200) + "]",
    "escaped-non-ascii": "[" + ",".join(['"\\u0100"'] * 1500) + "]",
    "escaped-astral": "[" + ",".join(['"\\ud83d\\ude00"'] * 900) + "]",
    "non-ascii-members": "{" + ",".join(f'"\u0100{index:03x}":0' for index in range(1200)) + "}",
    "group-ids": json.dumps({"groups": [f"{index:08x}-1111-2222-3333-444455556666" for index in range(150)]}),
    # Found by the next review: one escaped astral character makes the whole long string 4 bytes a character.
    "long-string-one-escaped-astral": '{"a":"' + "a" * 12000 + '\\ud83d\\ude00"}',
    "long-string-one-raw-astral": '{"a":"' + "a" * 12000 + '\U0001F600"}',
    "realistic": json.dumps(claims(scope="openid read:users", roles=["admin", "billing"], org={"id": "acme"})),
    # Found by a later review: a dict holds 184 bytes and more, and chains of one-key objects held 1.14x their bound.
    "one-key-object-chains": json.dumps([_chain([f"7.{index:x}" for index in range(start, start + 60)])
                                         for start in range(0, 440, 60)], separators=(",", ":")),
    "one-key-objects": "[" + ",".join('{"k%03x":%d}' % (index, index) for index in range(1200)) + "]",
}


@pytest.mark.parametrize("shape", list(_HOSTILE_PAYLOADS))
def test_a_tokens_weight_bounds_the_memory_its_decoded_claims_hold(shape):
    """The cache is bounded by these weights: they must never be lower than what decoding really holds."""
    import tracemalloc

    import msgspec

    from app.token import decoded_weight

    text = _HOSTILE_PAYLOADS[shape].encode()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        held = msgspec.json.decode(text)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held is not None and after - before <= decoded_weight(text), (after - before, decoded_weight(text))


def test_forged_tokens_of_hostile_shape_cannot_fill_memory_beyond_the_byte_budget(rsa_calls):
    """Found by a review: 10,000 forged 16 KiB tokens of `0.5,0.5,...` (bad signatures are cached too) held
    1.7 GB per worker. What the cache really holds (traced) stays within its byte budget."""
    import tracemalloc

    cache, compiled = VerifiedCache(40), policy()
    forger = key_for("RS256", "forger")
    tokens = [mint(claims(jti=str(index), x=[0.5] * 700, y=["\u0100"] * 600), forger) for index in range(40)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for token in tokens:
            result = run(token, compiled, cache)
            assert [item.code for item in result.findings if item.severity == "error"] == ["SIGNATURE_INVALID"]
        del result
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert 0 < len(cache) < 40 and held <= cache.max_bytes == 40 * VerifiedCache.BYTES_PER_ENTRY, held
    realistic = [mint(claims(jti=f"r{index}"), key_for("RS256")) for index in range(40)]
    for token in realistic:
        run(token, compiled, cache)
    assert len(cache) == 40  # realistic tokens fill every slot: the count bounds them, not the bytes
    run(realistic[-1], compiled, cache)
    assert len(rsa_calls) == 40 + 40  # the last token replayed: no signature work


def test_forged_tokens_push_out_at_most_a_quarter_of_a_profiles_tokens(rsa_calls):
    """Found by a review: forged tokens of `[0,0,...]` are weighed ~11 times what they hold, so 215 of them emptied
    a full cache of its 10,000 valid tokens, each then verified again. Answers whose signature failed push out a
    profile's answers up to a quarter of the cache, entries and bytes, and only each other beyond it."""
    cache, compiled = VerifiedCache(400), policy()
    valid = [mint(claims(jti=f"v{index}"), key_for("RS256")) for index in range(400)]
    for token in valid:
        run(token, compiled, cache)
    forger = key_for("RS256", "forger")
    for index in range(300):
        run(mint(claims(jti=f"f{index}", x=[0] * 1500), forger), compiled, cache)
        run(mint(claims(jti=f"g{index}"), forger), compiled, cache)
    assert len(cache) <= 400 and cache.untrusted_bytes <= cache.max_bytes // 4
    before = len(rsa_calls)
    for token in reversed(valid):  # the newest first: replayed in the order cached, each miss would push out the next
        run(token, compiled, cache)
    assert len(rsa_calls) - before <= 100  # three quarters of the valid tokens, at least, still cached


@pytest.mark.parametrize("padding", [0, 960, 1500], ids=["small", "just-light", "heavy"])
def test_answers_under_a_callers_own_key_push_out_at_most_a_quarter_of_a_profiles_tokens(rsa_calls, padding):
    """Found by reviews: anybody who may call the API can sign tokens under an inline policy of their own key,
    which verify, and 640 of them weighed just under a bound for "heavy" emptied a profile's 10,000. Answers under
    inline policies are in the class forgeries are in, however light."""
    cache, profile = VerifiedCache(400), policy()
    valid = [mint(claims(jti=f"v{index}"), key_for("RS256")) for index in range(400)]
    for token in valid:
        run(token, profile, cache)
    own = key_for("RS256", "callers-own")
    inline = compile_policy(VerifyPolicy(issuer=ISSUER, audiences=[AUDIENCE], allowed_algs=["RS256"],
                                         public_key=own.public_pem), inline=True)
    for index in range(600):
        assert run(mint(claims(jti=f"o{index}", x=[0] * padding), own), inline, cache).valid
    assert len(cache) <= 400 and cache.untrusted_bytes <= cache.max_bytes // 4
    before = len(rsa_calls)
    for token in reversed(valid):
        run(token, profile, cache)
    assert len(rsa_calls) - before <= 100


def test_heavy_forgeries_push_out_at_most_a_quarter_of_a_profiles_entries_by_count_too(rsa_calls):
    """Found by a review: a quarter of the bytes is many light entries, and three forged tokens of ~500 KB each
    pushed out 424 of 1,000 profile answers, the light ones cached first."""
    cache, compiled = VerifiedCache(400), policy()
    light = [mint(claims(jti=f"l{index}"), key_for("RS256")) for index in range(300)]
    heavier = [mint(claims(jti=f"h{index}", groups=[f"group-{item:04d}" for item in range(150)]), key_for("RS256"))
               for index in range(60)]
    for token in light + heavier:  # 360 entries, 90 % of the bytes
        run(token, compiled, cache)
    forger = key_for("RS256", "forger")
    for index in range(20):  # ~200 KB each: the bytes of 50 light entries
        run(mint(claims(jti=f"f{index}", x=[0] * 2000), forger), compiled, cache)
    assert len(cache._trusted) == 300 and len(cache._untrusted) > 0  # three quarters kept, and forgeries too


def test_a_forgery_too_heavy_to_keep_pushes_out_nothing(rsa_calls):
    """Found by a review: an answer too heavy for the quarter pushed out every other such answer, then itself."""
    cache, compiled = VerifiedCache(100), policy()
    inline = compile_policy(VerifyPolicy(issuer=ISSUER, audiences=[AUDIENCE], allowed_algs=["RS256"],
                                         public_key=key_for("RS256").public_pem), inline=True)
    for index in range(70):
        run(mint(claims(jti=f"p{index}", groups=[f"group-{item:02d}" for item in range(20)]), key_for("RS256")),
            compiled, cache)
    mine = [mint(claims(jti=f"i{index}"), key_for("RS256")) for index in range(20)]
    for token in mine:
        run(token, inline, cache)
    run(mint(claims(x=[0] * 2500), key_for("RS256", "forger")), compiled, cache)  # weighs more than a quarter
    assert (len(cache._trusted), len(cache._untrusted)) == (70, 20)


def test_a_profiles_answer_too_heavy_to_keep_beside_the_others_share_pushes_out_nothing():
    """Found by a review (a fuzz): it pushed out every other answer of a profile, then was not kept itself."""
    from app.validation import Verified

    def entry(weight: int, signature: str) -> Verified:
        fields = {name: None for name in Verified.__struct_fields__}
        fields.update(header={}, claims={}, to_key=(), to_audience=(), after_time=(), findings=(), valid=True,
                      summary="", statuses={"signature": signature}, weight=weight)
        return Verified(**fields)

    cache = VerifiedCache(8, 8000)
    for index in range(6):
        cache.put((b"t%d" % index, "fp", "1"), entry(0, "pass"))
    cache.put((b"u", "fp", "1"), entry(0, "fail"))
    cache.put((b"heavy", "fp", "1"), entry(8000 - VerifiedCache.ENTRY_OVERHEAD, "pass"))
    assert (len(cache._trusted), len(cache._untrusted)) == (6, 1)


def test_a_service_validating_only_inline_policies_keeps_the_whole_cache(rsa_calls):
    """Answers under inline policies push out a profile's only up to a quarter; without a profile's to keep, they
    have every slot."""
    cache, inline = VerifiedCache(400), compile_policy(VerifyPolicy(
        issuer=ISSUER, audiences=[AUDIENCE], allowed_algs=["RS256"], public_key=key_for("RS256").public_pem),
        inline=True)
    tokens = [mint(claims(jti=f"i{index}"), key_for("RS256")) for index in range(400)]
    for token in tokens:
        run(token, inline, cache)
    assert len(cache) == 400 and len(rsa_calls) == 400
    for token in tokens:
        run(token, inline, cache)
    assert len(rsa_calls) == 400


@pytest.mark.parametrize("scope_length", [8, 680], ids=["short-scopes", "long-scopes"])
def test_the_findings_of_a_cached_answer_are_charged_to_the_byte_budget_too(rsa_calls, scope_length):
    """Found by a review: only the token was charged, and a caller's policy of 64 required scopes and 64 required
    claims made each forged token's answer hold 64-128 findings (~140 KB an entry against 2.7 KB charged), 1.4 GB
    a worker at the default size."""
    import tracemalloc

    cache = VerifiedCache(200)  # a budget of 1.2 MB
    compiled = policy(required_scopes=[f"{index:02d}" + "x" * scope_length for index in range(64)],
                      required_claims=[f"{index:02d}" + "c" * 180 for index in range(64)])
    forger = key_for("RS256", "forger")
    tokens = [mint(claims(jti=str(index)), forger) for index in range(40)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for token in tokens:
            result = run(token, compiled, cache)
            assert len(result.findings) == 129  # the signature, 64 claims, 64 scopes
        del result
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held <= cache.max_bytes and cache.bytes >= held, (held, cache.bytes)
    run(tokens[-1], compiled, cache)
    assert len(rsa_calls) == 40  # the last answer, cached, replayed: no signature work


def test_answers_with_many_findings_are_charged_what_they_hold_not_each_findings_copy_of_shared_lists(rsa_calls):
    """Found by a review of the charge: each SCOPE_MISSING repeats the answer's `required` and `missing` lists, and
    charging their JSON per finding put 64 missing scopes at 3 MB (85 times what they hold): ~40 such answers
    emptied a worker's cache of its valid tokens."""
    cache, plain = VerifiedCache(1000), policy()  # a budget of 12 MB
    valid = [mint(claims(jti=f"v{index}"), key_for("RS256")) for index in range(200)]
    for token in valid:
        run(token, plain, cache)
    crafted = policy(required_scopes=[f"scope:{index:02d}" for index in range(64)])
    for index in range(40):
        run(mint(claims(jti=f"c{index}"), key_for("RS256")), crafted, cache)
    assert len(cache) == 240  # nothing pushed out
    two_missing = VerifiedCache(10)
    run(mint(claims(), key_for("RS256")), policy(required_scopes=["read", "write"]), two_missing)
    assert two_missing.bytes < 8 * 1024  # a realistic refusal weighs about a slot's share


def test_a_large_header_is_not_memoised():
    """The memo of decoded headers is bounded by count and by weight: 256 hostile headers of a 16 KiB token held
    ~30 MB a worker. Found by a review."""
    from app import token as token_module

    forger = key_for("RS256", "forger")
    large = [mint(claims(), forger, header={"pad": ["\u0100"] * 1000, "n": index}) for index in range(5)]
    small = mint(claims(), forger, header={"n": "small"})
    for raw in [*large, small]:
        token_module.parse(raw, 65536)
    memo = token_module._HEADERS
    assert small.split(".")[0] in memo and not any(raw.split(".")[0] in memo for raw in large)


def test_a_cache_hit_on_a_stale_key_set_still_warns_that_it_is_stale(rsa_calls):
    """stale-if-error: the key set past its max age and its refresh failing is said on every answer, a cached one
    included (found by mutation testing: the hit answered without the warning)."""
    cache, compiled, token = VerifiedCache(100), policy(), mint(claims(), key_for("RS256"))
    assert run(token, compiled, cache).findings == []
    stale = KeyView(compiled.static_keys, compiled.key_source, stale_seconds=900, error="HTTP 503")
    answered = validate(token, compiled, stale, NOW, max_token_bytes=16384, cache=cache)
    assert answered.valid and [item.code for item in answered.findings] == ["JWKS_STALE"]


def test_an_entry_that_fits_the_byte_budget_exactly_is_kept(rsa_calls):
    compiled, token = policy(), mint(claims(), key_for("RS256"))
    probe = VerifiedCache(10)
    run(token, compiled, probe)
    exact = VerifiedCache(1, max_bytes=probe.bytes)
    run(token, compiled, exact)
    assert len(exact) == 1 and probe.bytes > VerifiedCache.ENTRY_OVERHEAD
    smaller = VerifiedCache(1, max_bytes=probe.bytes - 1)
    run(token, compiled, smaller)
    assert len(smaller) == 0
