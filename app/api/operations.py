"""Operations: liveness, Prometheus metrics, and the API-key guard on `/v1/*`."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Controller, Response, get
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.handlers import BaseRouteHandler

from app import examples
from app.observability import CONTENT_TYPE, ApiKeys, flush_metrics, metrics_text, needs_api_key
from app.problems import ApiError
from app.verifier import Verifier


class Health(msgspec.Struct):
    status: str


class OperationsController(Controller):
    tags = ["operations"]

    @get("/healthz", operation_id="healthz", summary="Liveness", description="200 while the process serves.",
         responses=examples.responses("healthz"))
    async def healthz(self) -> Health:
        return Health("ok")

    @get("/metrics", operation_id="metrics", summary="Prometheus metrics",
         description="Prometheus text exposition of every worker: requests by route and status with a latency "
                     "histogram, validations by profile and validity, findings by code, decisions by authorizer, "
                     "decision and reason, key-set fetches by host and outcome, key-set age, verified-token cache "
                     "hits and misses, rate-limit storage errors. Open (no X-API-Key).",
         media_type=CONTENT_TYPE)
    async def metrics(self, verifier: NamedDependency[Verifier]) -> Response[bytes]:
        # The tallies are flushed here, on the event loop that writes them (a thread could swap them mid-write
        # and lose counts); reading every worker's files is left to a thread.
        flush_metrics()
        configured = verifier.keys.configured() if verifier.keys is not None else None
        text = await asyncio.to_thread(metrics_text, held=configured, flush=False)
        return Response(text, media_type=CONTENT_TYPE)


def api_key_guard(keys: ApiKeys) -> Any:
    """A Litestar guard: with API_KEYS set, `/v1/*` (presets excepted) needs a configured key in X-API-Key.
    Not `Authorization`: in forward-auth that header carries the user's token."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if not needs_api_key(connection.scope["path"]):
            return
        presented = connection.headers.get("x-api-key")
        if not keys.accepts(presented):
            raise ApiError(401, "UNAUTHORIZED", "API key required",
                           "This route needs a valid X-API-Key header." if presented is None
                           else "The X-API-Key header does not match a configured key.",
                           headers={"WWW-Authenticate": 'ApiKey header="X-API-Key"'})

    return guard
