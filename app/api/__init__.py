"""Thin controllers, one module per area of the API. `route_handlers()` lists them for the app factory."""

from __future__ import annotations

from typing import Any


def route_handlers() -> list[Any]:
    from app.api.authorize import AuthorizeController, ForwardAuthController
    from app.api.presets import PresetController
    from app.api.trust import TrustController
    from app.api.operations import OperationsController
    from app.api.validation import ValidationController

    return [ValidationController, OperationsController, TrustController, AuthorizeController, ForwardAuthController,
            PresetController]
