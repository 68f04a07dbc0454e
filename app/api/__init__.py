"""Thin controllers, one module per area of the API. `route_handlers()` lists them for the app factory."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import MediaType, Response

_encode = msgspec.json.Encoder().encode


def json_response(value: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response[Any]:
    """A Struct encoded once, here, by msgspec: Litestar's generic serialisation of a returned Struct costs
    ~20 µs more per answer on the hot routes (measured in process). Routes keep the Struct as their documented
    response type."""
    return Response(_encode(value), status_code=status_code, headers=headers, media_type=MediaType.JSON)


def route_handlers() -> list[Any]:
    from app.api.authorize import AuthorizeController, ForwardAuthController
    from app.api.presets import PresetController
    from app.api.trust import TrustController
    from app.api.operations import OperationsController
    from app.api.validation import ValidationController

    return [ValidationController, OperationsController, TrustController, AuthorizeController, ForwardAuthController,
            PresetController]
