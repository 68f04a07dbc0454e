"""Presets over HTTP (trust.md section 3): the list, one template, or a template filled from query parameters."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, QueryParameter

from app import examples
from app.presets import NAME_LIKE, ParameterError, Preset
from app.problems import ApiError, request_invalid
from app.policy import Problem

Presets = dict[str, Preset]


class PresetSummary(msgspec.Struct, frozen=True):
    provider: str
    title: str
    parameters: dict[str, str]


class PresetList(msgspec.Struct, frozen=True):
    presets: list[PresetSummary]


class PresetView(msgspec.Struct, frozen=True):
    """JWTShield's shape (`provider`, `issuer`, `policy`, `notes`) plus `title`, `jwks_uri` and `parameters`.

    `policy` is complete: it holds `issuer` and `jwks_uri` too, as templates or, once filled, as values."""

    provider: str
    title: str
    issuer: str | list[str]
    jwks_uri: str
    parameters: dict[str, str]
    policy: dict[str, Any]
    notes: str


class PresetController(Controller):
    path = "/v1/presets"
    tags = ["presets"]

    @get("/", operation_id="listPresets", summary="List identity-provider presets",
         description=examples.PRESETS_DESCRIPTION, responses=examples.responses("presets"))
    async def list_presets(self, presets: NamedDependency[Presets]) -> PresetList:
        return PresetList([PresetSummary(preset.provider, preset.title, dict(preset.parameters))
                           for _, preset in sorted(presets.items())])

    @get("/{provider:str}", operation_id="getPreset", summary="Get a preset, as a template or filled in",
         description=examples.PRESET_DESCRIPTION, responses=examples.responses("preset"))
    async def get_preset(self, provider: FromPath[str], request: Request[Any, Any, Any],
                         presets: NamedDependency[Presets],
                         audience: Annotated[list[str] | None, QueryParameter(
                             name="audience", required=False,
                             description="Audiences of the filled policy (repeat it or separate with commas): 1 "
                                         "to 64 in all, each at most 2,048 characters."
                         )] = None) -> PresetView:
        # `audience` is declared for the OpenAPI document; it is read below with the preset's own parameters.
        preset = presets.get(provider)
        if preset is None:
            named = repr(provider) if NAME_LIKE.fullmatch(provider) else "by that name"  # never echo what no name is
            raise ApiError(404, "PRESET_NOT_FOUND", "Preset not found", f"No preset for provider {named}.",
                           known=sorted(presets))
        params: dict[str, list[str]] = {}
        for name, value in request.query_params.multi_items():
            params.setdefault(name, []).append(value)
        if not params:
            template = preset.template()
            return PresetView(preset.provider, preset.title, template["issuer"], preset.jwks_uri,
                              dict(preset.parameters), template, preset.notes)
        try:
            policy = preset.fill(params)
        except ParameterError as exc:
            raise request_invalid([Problem(("query", *problem.loc), problem.msg, problem.type)
                                   for problem in exc.problems]) from None
        if not policy["audiences"]:
            raise request_invalid([Problem(("query", "audience"), "missing: the audience your API expects in the "
                                                                  "tokens (a filled policy needs at least one)",
                                            "missing")])
        return PresetView(preset.provider, preset.title, policy["issuer"], policy["jwks_uri"],
                          dict(preset.parameters), policy, preset.notes)


def dependencies(presets: Presets) -> dict[str, Provide]:
    return {"presets": Provide(lambda: presets, sync_to_thread=False, use_cache=True)}
