"""Issuer profiles and readiness: what the service trusts and whether it can use it right now."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get

from app.jwks import KeySetCache
from app.keys import MIN_RSA_BITS, verifies_any
from app.policy import CompiledPolicy, key_set_label


class KeySetState(msgspec.Struct):
    key_state: str  # fresh | stale | unavailable | pending
    fetched_at: str | None
    age_seconds: int | None
    kids: list[str]
    error: str | None = None


class ProfileSummary(msgspec.Struct):
    id: str
    issuer: str | list[str]
    audiences: list[str]
    key_source: str
    jwks_uri: str | None
    preset: str | None
    description: str | None
    keys: KeySetState


class ProfileList(msgspec.Struct):
    profiles: list[ProfileSummary]


class Readiness(msgspec.Struct):
    status: str  # ready | not_ready
    config_loaded: bool
    profiles: dict[str, KeySetState]
    rate_limit_storage: dict[str, Any]
    config_errors: list[str]
    # The authorizers that trust a policy of their own (not a profile's), by id: their key sets gate readiness
    # like a profile's, or every request they decide would be keys_unavailable while the service says ready.
    authorizers: dict[str, KeySetState] = {}


def key_state(keys: KeySetCache, policy: CompiledPolicy) -> KeySetState:
    if policy.static_keys is not None:
        if not verifies_any(policy.static_keys, policy.allowed_algs):  # RSA keys under 2048 bits only (WEAK_KEY)
            return KeySetState("unavailable", None, None, policy.static_keys.shown_kids,
                               f"no key can verify a token: RSA keys need at least {MIN_RSA_BITS} bits")
        return KeySetState("fresh", None, None, policy.static_keys.shown_kids)
    if policy.key_source == "discovery":
        state = keys.state(issuer=policy.issuers[0], algorithms=policy.allowed_algs)
    else:
        state = keys.state(uri=policy.jwks_uri, algorithms=policy.allowed_algs)
    fetched = state["fetched_at"]
    return KeySetState(state["key_state"],
                       time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(fetched)) if fetched else None,
                       state["age_seconds"], state["kids"], state["error"])


class TrustController(Controller):
    tags = ["trust"]

    @get("/v1/profiles", operation_id="listProfiles", summary="List issuer profiles",
         description="The issuer profiles loaded from ISSUER_PROFILES_JSON with their issuer, audiences, key source "
                     "and key-set state. Secrets and key material are never shown.")
    async def list_profiles(self, request: Request[Any, Any, Any]) -> ProfileList:
        state = request.app.state
        profiles = state.profiles.value
        return ProfileList([
            ProfileSummary(profile_id, policy.expected_issuer, sorted(policy.audiences), policy.key_source,
                           key_set_label(policy.jwks_uri) if policy.jwks_uri else None,
                           profiles.presets_used.get(profile_id),
                           profiles.descriptions.get(profile_id), key_state(state.key_sets, policy))
            for profile_id, policy in sorted(profiles.policies.items())])

    @get("/readyz", operation_id="readyz", summary="Readiness",
         description="200 when configuration is loaded (and, with READY_REQUIRES_KEYS, the key set of every profile "
                     "and of every authorizer with a policy of its own is usable), else 503. Reports their key-set "
                     "state and the rate-limit storage state.")
    async def readyz(self, request: Request[Any, Any, Any]) -> Response[Readiness]:
        state = request.app.state
        profiles = {profile_id: key_state(state.key_sets, policy)
                    for profile_id, policy in sorted(state.profiles.value.policies.items())}
        authorizers = {authorizer_id: key_state(state.key_sets, authorizer.policy)
                       for authorizer_id, authorizer in sorted(state.authorizers.document.value.items())
                       if authorizer.policy is not None}
        storage_probe = getattr(state, "rate_limit_state", None)
        storage = await storage_probe() if storage_probe is not None else {"backend": "none", "ok": True}
        errors = [document.last_error for document in state.documents if document.last_error]
        ready = True
        if state.settings.ready_requires_keys:
            ready = all(item.key_state in ("fresh", "stale") for item in [*profiles.values(), *authorizers.values()])
        body = Readiness("ready" if ready else "not_ready", True, profiles, storage, errors, authorizers)
        return Response(body, status_code=200 if ready else 503)
