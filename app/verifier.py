"""The async edge of validation: resolve the policy's keys (awaiting the key-set cache), then call the pure core."""

from __future__ import annotations

import time
from typing import Callable, Protocol

from app.keys import KeyView
from app.policy import CompiledPolicy, PolicyCache, VerifyPolicy
from app.token import WHITESPACE, MalformedToken, b64url_decode, decode_json_object
from app.validation import ValidationResult, VerifiedCache, validate


class KeySource(Protocol):
    """The key-set cache (jwks.py): the only network I/O of validation."""

    async def view(self, uri: str, kid: str | None) -> KeyView: ...

    async def view_discovered(self, issuer: str, kid: str | None) -> KeyView: ...

    def vouch(self, uri: str) -> None: ...


def header_kid(raw: str, allowed_algs: frozenset[str], max_bytes: int) -> str | None:
    """The `kid` of a token's header, used only to decide on an unknown-kid refetch: None unless the token is
    within MAX_TOKEN_BYTES, ASCII, three segments, and its header names an allowed algorithm. A token validation
    refuses before looking for a key (validation.md: an oversized token is not even decoded) costs the IdP
    nothing."""
    raw = raw.strip(WHITESPACE)  # as validation reads it
    if len(raw) > max_bytes or not raw.isascii() or raw.count(".") != 2:
        return None
    head = raw.partition(".")[0]
    try:
        header = decode_json_object(b64url_decode(head, "header"), "header")
    except MalformedToken:
        return None
    kid, alg = header.get("kid"), header.get("alg")
    if not isinstance(alg, str) or alg not in allowed_algs:  # any JSON: a list or an object is unhashable
        return None
    return kid if isinstance(kid, str) and len(kid) <= 256 else None


class Verifier:
    def __init__(self, *, max_token_bytes: int, cache_size: int, allowlist: tuple[str, ...] = (),
                 keys: KeySource | None = None, clock: Callable[[], float] = time.time) -> None:
        self.max_token_bytes = max_token_bytes
        self.allowlist = allowlist
        self.policies = PolicyCache()
        self.cache = VerifiedCache(cache_size)
        self.keys = keys
        self.clock = clock
        # Issuer profiles by id (profiles.py fills this; replaced atomically on reload).
        self.profiles: dict[str, CompiledPolicy] = {}
        # Told of every result (the app factory points it at the metrics and the request's log line).
        self.on_result: Callable[[ValidationResult], None] | None = None

    def profile(self, profile_id: str) -> CompiledPolicy | None:
        return self.profiles.get(profile_id)

    def profile_ids(self) -> list[str]:
        return sorted(self.profiles)

    def compile_inline(self, policy: VerifyPolicy) -> CompiledPolicy:
        """Raises PolicyError; compiled policies are cached by fingerprint."""
        return self.policies.get(policy, self.allowlist)

    async def key_view(self, policy: CompiledPolicy, raw: str) -> KeyView:
        if policy.static_view is not None:
            return policy.static_view
        if self.keys is None:
            return KeyView(None, policy.key_source, error="no key-set cache is configured")
        if policy.key_source == "discovery":
            return await self.keys.view_discovered(policy.issuers[0], self._kid(policy, raw))
        assert policy.jwks_uri is not None
        return await self.keys.view(policy.jwks_uri, self._kid(policy, raw))

    def _kid(self, policy: CompiledPolicy, raw: str) -> str | None:
        return header_kid(raw, policy.allowed_algs, self.max_token_bytes)

    async def validate(self, raw: str, policy: CompiledPolicy, profile: str | None = None) -> ValidationResult:
        keys = await self.key_view(policy, raw)
        while profile is not None and self.profiles.get(profile) is not policy:
            # A reload replaced or removed the profile while this validation waited for its keys: answered with the
            # profile in force now, not with the old issuer's keys (found by a review). Reloads are seconds apart
            # at least (one per poll or SIGHUP), so this ends.
            current = self.profiles.get(profile)
            if current is None:
                keys = KeyView(None, policy.key_source, error="the issuer profile was removed by a reload while this "
                                                              "validation waited for its key set")
                break
            policy = current
            keys = await self.key_view(policy, raw)
        result = validate(raw, policy, keys, self.clock(), max_token_bytes=self.max_token_bytes, cache=self.cache)
        result.profile = profile
        if result.valid and policy.jwks_uri is not None:
            self.keys.vouch(policy.jwks_uri)  # type: ignore[union-attr]  # a jwks_uri policy has the cache
        if self.on_result is not None:
            self.on_result(result)
        return result
