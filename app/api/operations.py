"""Operations: liveness, Prometheus metrics, and the API-key gate on `/v1/*`."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Controller, Response, get
from litestar.di import NamedDependency

from app import examples
from app.observability import CONTENT_TYPE, ApiKeys, flush_metrics, metrics_text, needs_api_key, routed_path
from app.problems import PROBLEM_JSON, ApiError
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
        aged = verifier.keys.aged() if verifier.keys is not None else None
        text = await asyncio.to_thread(metrics_text, held=aged, flush=False)
        return Response(text, media_type=CONTENT_TYPE)


class ApiKeyGate:
    """ASGI layer in front of Litestar's router: with API_KEYS set, `/v1/*` (presets excepted) needs a configured
    key in X-API-Key (every X-API-Key line, when repeated). Not `Authorization`: in forward-auth that header
    carries the user's token. Before routing, so that a request without a key learns nothing from the answer: a
    route guard ran after routing, and 404 and 405 answers told which routes and methods exist (found by a
    review). `app.api.fastpath` checks the key the same way before answering itself."""

    def __init__(self, app: Any, keys: ApiKeys) -> None:
        self.app, self.keys = app, keys

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and needs_api_key(routed_path(scope)):
            presented = [value for name, value in scope["headers"] if name == b"x-api-key"]
            if not presented or not all(self.keys.accepts(value.decode("latin-1")) for value in presented):
                refused = api_key_refused(bool(presented))
                headers = [(b"cache-control", b"no-store"), (b"www-authenticate", b'ApiKey header="X-API-Key"')]
                body = msgspec.json.encode(refused.problem)
                await send({"type": "http.response.start", "status": 401, "headers": [
                    *headers, (b"content-type", PROBLEM_JSON.encode()), (b"content-length", b"%d" % len(body))]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def api_key_refused(presented: bool) -> ApiError:
    """The 401 for a missing or unknown X-API-Key, answered by ApiKeyGate."""
    return ApiError(401, "UNAUTHORIZED", "API key required",
                    "The X-API-Key header does not match a configured key." if presented
                    else "This route needs a valid X-API-Key header.",
                    headers={"WWW-Authenticate": 'ApiKey header="X-API-Key"'})
