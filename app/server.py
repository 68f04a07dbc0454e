"""The app factory: settings in, a Litestar app out, with one lifespan opening and closing shared resources."""

from __future__ import annotations

import time
from typing import Callable

from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin

from app import openapi
from app.problems import EXCEPTION_HANDLERS
from app.api import route_handlers
from app.api.validation import dependencies
from app.settings import Settings, load_settings
from app.verifier import Verifier

VERSION = "1.0.0"


def create_app(settings: Settings | None = None, *, clock: Callable[[], float] = time.time) -> Litestar:
    settings = settings or load_settings()
    verifier = Verifier(max_token_bytes=settings.max_token_bytes, cache_size=settings.verified_token_cache_size,
                        allowlist=settings.jwks_uri_allowlist, clock=clock)
    app = Litestar(
        route_handlers=[*route_handlers(), *openapi.routes()],
        dependencies=dependencies(verifier),
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(title="JWT validation and authorization decisions", version=VERSION,
                                     path="/_schema", render_plugins=[JsonRenderPlugin(path="/litestar.json")],
                                     description=openapi.DESCRIPTION, use_handler_docstrings=False),
        debug=False,
    )
    app.state.settings = settings
    app.state.verifier = verifier
    return app


def app_factory() -> Litestar:
    """Entry point for the ASGI server (`python -m app`)."""
    return create_app()


def check_config(settings: Settings) -> None:
    """Load every configuration document once before the server starts, so a bad one stops the process here
    with its source, JSON path and problem (workers would otherwise each fail on their own)."""
    create_app(settings)
