"""Issuer profiles (`ISSUER_PROFILES_JSON`, trust.md section 1): named, validated policies with preset inheritance.

A profile is a VerifyPolicy plus `preset` (start from that preset, then apply the profile's fields over it),
`parameters` (the preset's template parameters; derived from the profile's `issuer` when omitted) and
`description`. The whole document is validated at load and every problem reported as
`ISSUER_PROFILES_JSON: $.<id>.<field>: <problem>`; nothing is half-loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from app.config import END, ConfigError, convert_each_field, decode_document, json_path
from app.policy import CompiledPolicy, PolicyError, VerifyPolicy, compile_policy
from app.presets import HOST_PARAMETERS, NAME_LIKE, url_hostname

if TYPE_CHECKING:
    from app.presets import Preset

log = structlog.get_logger("app.profiles")
PROFILE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}" + END)
KEY_SOURCES = ("secret", "public_key", "jwks", "jwks_uri", "discovery")
_EXTRA_FIELDS = ("preset", "description", "parameters")


@dataclass(frozen=True)
class Profiles:
    policies: dict[str, CompiledPolicy] = field(default_factory=dict)
    descriptions: dict[str, str | None] = field(default_factory=dict)
    presets_used: dict[str, str | None] = field(default_factory=dict)

    def jwks_uris(self) -> set[str]:
        return {policy.jwks_uri for policy in self.policies.values() if policy.jwks_uri is not None}

    def discovery_issuers(self) -> set[str]:
        return {policy.issuers[0] for policy in self.policies.values() if policy.key_source == "discovery"}


# What a profile's required field found bad or missing is taken to be while its other fields are checked.
_FILLS: dict[str, Any] = {"issuer": "https://issuer.invalid", "audiences": ["https://audience.invalid"],
                          "allowed_algs": ["RS256"]}


def _about_filled(loc: tuple[str | int, ...], filled: set[str]) -> bool:
    """Whether a policy problem is about a field already reported (so filled in): the key-source count too, when
    the key source given was the bad field."""
    return bool(loc and loc[0] in filled or not loc and filled.intersection(KEY_SOURCES))


def _merge_preset(profile_id: str, raw: dict[str, Any], presets: dict[str, Any],
                  problems: list[tuple[str, str]]) -> dict[str, Any] | None:
    """The preset's filled policy with the profile's own fields applied over it."""
    name = raw.get("preset")
    own = {key: value for key, value in raw.items() if key not in _EXTRA_FIELDS}
    if name is None:
        return own
    # A key source written as its default (`"discovery": false`, `"jwks_uri": null`) is not one of the profile's
    # own: it says what leaving it out says, so the preset's key set stays (it was dropped, and the profile refused
    # for having no key source; found by a review).
    own = {key: value for key, value in own.items() if not (key in KEY_SOURCES and (value is None or value is False))}
    if not isinstance(name, str) or name not in presets:
        # Named only when it looks like a name: a value pasted into the wrong field (a secret) is not echoed.
        shown = f" {name!r}" if isinstance(name, str) and NAME_LIKE.fullmatch(name) else (
            "" if isinstance(name, str) else " (expected a string)")
        problems.append((json_path(profile_id, "preset"),
                         f"unknown preset{shown}; known presets: {', '.join(sorted(presets))}"))
        return None
    preset = presets[name]
    parameters = raw.get("parameters")
    if parameters is None or isinstance(parameters, dict):
        # Values the profile's issuer gives fill the parameters not given (found by a review: `"parameters": {}`
        # beside an issuer of the preset's shape turned the profile to discovery, the issuer's values unread).
        issuer = own.get("issuer")
        given = parameters or {}
        from_issuer = (preset.parameters_from_issuer(issuer) if isinstance(issuer, str) else None) or {}
        # A parameter that disagrees with the issuer (realm "other" beside an issuer of realm "acme") named a key
        # set or an audience no token of that issuer can match: refused now (found by a review). A host may differ.
        differ = [name for name, value in from_issuer.items() if name in given and name not in HOST_PARAMETERS
                  and isinstance(given[name], str) and given[name] != value]  # (case-sensitive; a non-string is
        # refused for its type below)
        for name in differ:
            problems.append((json_path(profile_id, "parameters", name), f"the issuer's {name} is "
                             f"{from_issuer[name]!r}: give the same, or leave the parameter out (the issuer gives it)"))
        if differ:
            return None
        parameters = {**from_issuer, **given}
    if not isinstance(parameters, dict) or not all(isinstance(v, str) for v in parameters.values()):
        problems.append((json_path(profile_id, "parameters"), "expected an object of string values"))
        return None
    has_own_keys = any(source in own for source in KEY_SOURCES)
    try:
        base = preset.fill(parameters, partial=has_own_keys or "issuer" in own)
    except ValueError as exc:
        problems.append((json_path(profile_id, "parameters"), f"preset {name!r}: {exc}"))
        return None
    # A partial fill keeps a missing parameter as `{name}`: in a field the profile does not give itself, that
    # issuer or audience would refuse every token (found by a review: it loaded, and failed every validation).
    taken = [field for field in ("issuer", "audiences") if field not in own]
    unfilled = preset.unfilled(base, taken)
    if unfilled:
        problems.append((json_path(profile_id, "parameters"), f"preset {name!r}: " + "; ".join(
            f"{parameter}: missing: {preset.parameters[parameter]}" for parameter in unfilled)
            + f"; or give the profile's own {' and '.join(taken)}"))
        return None
    if has_own_keys:
        for source in KEY_SOURCES:
            base.pop(source, None)
    elif "issuer" in own and "jwks_uri" in base and "{" in str(base["jwks_uri"]):
        # The issuer does not have the preset's shape, so the key-set URL cannot be derived from it. A near miss
        # (a typo) is refused now rather than failing at runtime; another shape (an Entra v1 issuer, Keycloak's
        # old `/auth` path, an Okta org server) asks the issuer itself (discovery), as it says.
        if not isinstance(own["issuer"], str):  # discovery, the fallback below, needs one issuer
            problems.append((json_path(profile_id, "issuer"), f"the {name} preset derives the key set from one issuer: "
                             "give 'parameters', or a key source of its own (jwks_uri)"))
            return None
        if _near_miss(profile_id, preset, own["issuer"], problems):
            return None
        log.info("profile_uses_discovery", profile=profile_id, preset=name,
                 reason="the issuer does not have the preset's shape, so its key set is found by OIDC discovery")
        base.pop("jwks_uri")
        base["discovery"] = True
    elif isinstance(own.get("issuer"), str):
        # Nothing above looked at the issuer: the preset's key set is one fixed URL (firebase, google), or
        # `parameters` filled it. One that nearly has the preset's shape is a typo that would never validate. With
        # parameters, an issuer on another host is another shape (an Entra v1 issuer, an Auth0 custom domain),
        # taken as written, unless its host is a letter or two from the one they name; on the provider's host a
        # trailing slash or a value of the wrong kind is a typo all the same (found by reviews). Another shape on
        # the provider's own host (a GitHub Enterprise issuer) keeps the provider's keys.
        named = base.get("issuer") if "parameters" in raw and not preset.fixed_keys else None
        named_host = url_hostname(named) if isinstance(named, str) else None
        shaped = preset.parameters_from_issuer(own["issuer"]) is not None
        if (not shaped or (named_host is not None and url_hostname(own["issuer"]) != named_host)) and \
                _near_miss(profile_id, preset, own["issuer"], problems, named_host=named_host):
            return None
    merged = {**base, **own}
    return merged


def _near_miss(profile_id: str, preset: Preset, issuer: str, problems: list[tuple[str, str]], *,
               named_host: str | None = None) -> bool:
    """Whether the issuer nearly has the preset's shape (a typo): then reported. `named_host`: the host the
    given parameters name (see Preset.near_miss)."""
    near_miss = preset.near_miss(issuer, named_host=named_host)
    if near_miss is not None:
        problems.append((json_path(profile_id, "issuer"), f"{near_miss}; fix the issuer, or give "
                         + ("'parameters', or " if named_host is None and not preset.fixed_keys else "")
                         + "a key source of its own (jwks_uri, discovery: true)"))
    return near_miss is not None


def load_profiles(data: bytes, label: str, presets: dict[str, Any]) -> Profiles:
    """Decode and compile every profile; raise one ConfigError listing every problem."""
    document = decode_document(data, label)
    if not isinstance(document, dict):
        raise ConfigError(label, [("$", "expected an object mapping profile ids to profiles")])
    problems: list[tuple[str, str]] = []
    policies: dict[str, CompiledPolicy] = {}
    descriptions: dict[str, str | None] = {}
    presets_used: dict[str, str | None] = {}
    for profile_id, raw in document.items():
        if not PROFILE_ID.match(profile_id):
            problems.append((json_path(profile_id), "a profile id is 1 to 64 letters, digits, '.', '_' or '-', "
                                                    "starting with a letter or a digit"))
            continue
        if not isinstance(raw, dict):
            problems.append((json_path(profile_id), "expected an object (a policy with optional preset)"))
            continue
        description = raw.get("description")
        if description is not None and not isinstance(description, str):
            problems.append((json_path(profile_id, "description"), "expected a string"))  # and the rest is read
        merged = _merge_preset(profile_id, raw, presets, problems)
        if merged is None:
            continue
        filled: set[str] = set()  # fields found bad or missing: the others are still checked, with these filled
        try:
            policy = convert_each_field(merged, VerifyPolicy, label, profile_id, problems, fills=_FILLS,
                                        filled=filled)
            if policy is None:
                continue
            compiled = compile_policy(policy, inline=False)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        except PolicyError as exc:
            problems.extend((json_path(profile_id, *problem.loc), problem.msg) for problem in exc.problems
                            if not _about_filled(problem.loc, filled))
            continue
        if filled:
            continue
        policies[profile_id] = compiled
        descriptions[profile_id] = description
        presets_used[profile_id] = raw.get("preset")
        pins = presets[raw["preset"]].pin_one_of if raw.get("preset") in presets else []
        if pins and not any(claim in policy.required_custom_claims for claim in pins):
            log.warning("profile_not_pinned", profile=profile_id, preset=raw["preset"], pin_one_of=pins,
                        hint="anyone can get a token from this issuer with the audience they choose: require the "
                             "value of one of these claims in required_custom_claims (or check it in every rule "
                             "of the authorizers using this profile)")
    if problems:
        raise ConfigError(label, problems)
    return Profiles(policies, descriptions, presets_used)
