"""Thin controllers, one module per area of the API. `route_handlers()` lists them for the app factory."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import SerializationException, ValidationException

from app.config import MSGSPEC_PATH, json_path, shown_member
from app.problems import ApiError
from app.token import MAX_JSON_DEPTH, nested_too_deeply

_encode = msgspec.json.Encoder().encode


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: msgspec refuses it as out of range
        raise ValueError(f"number out of range: {text[:20]}")
    return value


class ApiRequest(Request[Any, Any, Any]):
    """RFC 8259 section 8.2 lets a JSON string hold a lone UTF-16 surrogate escape (`"\\ud800"`), which msgspec
    refuses. A token is any string (validation.md: HTTP 200 for any token string, however broken), so a body
    msgspec refuses that holds such an escape is read by the standard library instead, refusing what msgspec
    refuses besides (invalid UTF-8, NaN and Infinity, numbers out of range, nesting too deep; duplicate members:
    the last wins in both), and refusing a lone surrogate anywhere but the top-level `token` (a policy, a header
    or a path holding one could not be encoded further on). Everything after that is unchanged; the fast path
    hands such a body here (its decoder refuses it too)."""

    async def json(self) -> Any:
        if nested_too_deeply(await self.body()):
            raise SerializationException(f"the body is nested deeper than {MAX_JSON_DEPTH} levels")
        try:
            return await super().json()
        except SerializationException:
            body = await self.body()
            if not _SURROGATE_ESCAPE.search(body):
                raise
        try:
            value = json.loads(body.decode("utf-8"), parse_constant=_no_constant, parse_float=_finite)
        except UnicodeDecodeError:  # said as msgspec's path says it (app.problems), not in the codec's words
            raise SerializationException("the body is not valid UTF-8") from None
        except RecursionError:
            raise SerializationException("the body is nested too deeply") from None
        except ValueError as exc:  # JSONDecodeError: where the text stops being JSON
            raise SerializationException(str(exc)) from None
        where = _surrogate_outside_token(value)
        if where is not None:
            raise SerializationException(f"a lone UTF-16 surrogate escape is accepted only in 'token' (found at "
                                         f"{where}): no policy, header, path or name can hold one")
        return value


def _has_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _where(parts: tuple[str | int, ...]) -> str:
    """A JSON path whose member names are shown when they look like names (as in a 422's `loc`, found by a
    review: this path echoed a 47-character secret pasted as a claim name)."""
    return json_path(*(part if isinstance(part, int) else shown_member(part) for part in parts))


def _surrogate_outside_token(value: Any) -> str | None:
    """Where (a JSON path, `_where`) the first string other than the top-level `token` holding a lone surrogate
    is."""
    parts: tuple[str | int, ...]
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(item, (key,)) for key, item in value.items() if key != "token"] \
        if isinstance(value, dict) else [(value, ())]
    if isinstance(value, dict) and any(_has_surrogate(key) for key in value):
        return "$ (a member name)"
    while stack:
        node, parts = stack.pop()
        if isinstance(node, str):
            if _has_surrogate(node):
                return _where(parts)
        elif isinstance(node, dict):
            for key, item in node.items():
                if _has_surrogate(key):
                    return f"{_where(parts)} (a member name)"
                stack.append((item, (*parts, key)))
        elif isinstance(node, list):
            stack.extend((item, (*parts, index)) for index, item in enumerate(node))
    return None


def json_media_type(value: str | None) -> bool:
    """Whether a Content-Type names JSON: `application/json` or a `+json` type (RFC 6839), in UTF-8 if a charset is
    given. A body sent as text/plain or a form (what a browser page may send anywhere without asking: a CORS
    "simple request"), or without a type, is refused rather than read as JSON."""
    if value is None:
        return False
    media, _, parameters = value.partition(";")
    media = media.strip(" \t").lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        return False
    for parameter in parameters.split(";"):
        name, _, given = parameter.partition("=")
        if name.strip(" \t").lower() == "charset" and given.strip(" \t").strip('"').lower() not in ("utf-8", "utf8"):
            return False
    return True


def strict_body(type_: type[Any]) -> Callable[[Request[Any, Any, Any]], Awaitable[None]]:
    """A POST route's `before_request`: its body converted into the route's Struct as strictly as the fast path
    decodes it. Litestar's own conversion of `data` is lax (msgspec's `strict=False`, made for query strings), so a
    body the fast path refuses would otherwise be accepted here with its values coerced: `"require_exp": "false"`
    or `0` turned the `exp` requirement off, `"clock_skew_seconds": "300"` set a skew (found by a review). A body
    that is empty or not JSON is left to Litestar, which refuses it as before. A body not sent as JSON
    (`json_media_type`) is a 415."""

    async def check(request: Request[Any, Any, Any]) -> None:
        given = request.headers.getall("content-type", [])  # two are refused in either order (found by a review)
        if len(given) > 1 or not json_media_type(given[0] if given else None):
            await request.body()  # a body over MAX_BODY_BYTES is a 413 whatever its type (validation.md section 4)
            raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE", "Unsupported media type",
                           "Send the body as JSON, with one Content-Type: application/json header.",
                           headers={"Accept-Post": "application/json"})
        try:
            value = await request.json()
        except (SerializationException, UnicodeDecodeError, RecursionError):
            return
        if value is None:
            return
        try:
            msgspec.convert(value, type_, strict=True)
        except msgspec.ValidationError as exc:
            message = str(exc)
            where = MSGSPEC_PATH.search(message)
            key = where.group(2)[1:].lstrip(".") if where else None
            if where:  # "`key` in `$.x`": a member name of x (found by a review: it was left in the message)
                message = ("a member name: " if where.group(1) else "") + message[:where.start()]
            raise ValidationException(f"Validation failed for {request.method} {request.url.path}",
                                      extra=[{"message": message, "key": key, "source": "body"}]) from None

    return check


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
