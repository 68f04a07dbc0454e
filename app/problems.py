"""Request errors as RFC 9457 problem+json, from one map of exception handlers. Nothing a client sends is a 5xx."""

from __future__ import annotations

import os
import re
import sysconfig
import traceback
from typing import Any

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    InternalServerException,
    MethodNotAllowedException,
    NotFoundException,
    SerializationException,
    ValidationException,
)

from app.config import shown_member, without_secrets
from app.observability import REQUEST_ID
from app.policy import PolicyError, Problem

PROBLEM_JSON = "application/problem+json"
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+|\.\.\.)\]")
log = structlog.get_logger("app.problems")


class ErrorItem(msgspec.Struct, frozen=True):
    loc: list[str | int]
    msg: str
    type: str


class ProblemDetails(msgspec.Struct, omit_defaults=True):
    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[ErrorItem] | None = None
    known: list[str] | None = None


# An answer lists at most this many errors, then how many more there were: a request naming 7,000 unknown preset
# parameters got a 929 KB answer, 19 times its size (found by a review).
MAX_ERRORS = 50


class ApiError(Exception):
    """A request error with its problem body; raised by controllers, rendered by `problem_response`."""

    def __init__(self, status: int, code: str, title: str, detail: str, *, errors: list[ErrorItem] | None = None,
                 known: list[str] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        if errors is not None and len(errors) > MAX_ERRORS:
            errors = [*errors[:MAX_ERRORS],
                      ErrorItem([], f"{len(errors) - MAX_ERRORS:,} more errors not shown", "truncated")]
        self.problem = ProblemDetails(f"urn:jwt-decision:problem:{code.lower().replace('_', '-')}", title, status,
                                      detail, code, errors, known)
        self.headers = headers or {}


def problem_response(problem: ProblemDetails, headers: dict[str, str] | None = None) -> Response[bytes]:
    """A problem+json answer, never to be cached (a forward-auth proxy caching auth answers keeps none of these)."""
    return Response(msgspec.json.encode(problem), status_code=problem.status, media_type=PROBLEM_JSON,
                    headers={"Cache-Control": "no-store", **(headers or {})})


def policy_errors(exc: PolicyError, prefix: tuple[str | int, ...]) -> list[ErrorItem]:
    return [ErrorItem([*prefix, *problem.loc], problem.msg, problem.type) for problem in exc.problems]


def invalid_policy(exc: PolicyError, prefix: tuple[str | int, ...]) -> ApiError:
    errors = policy_errors(exc, prefix)
    return ApiError(422, "POLICY_INVALID", "Invalid policy",
                    f"The {prefix[-1]} is inconsistent: {errors[0].msg}." if errors else "The policy is invalid.",
                    errors=errors)


def request_invalid(problems: list[Problem]) -> ApiError:
    errors = [ErrorItem(list(problem.loc), problem.msg, problem.type) for problem in problems]
    return ApiError(422, "REQUEST_INVALID", "Invalid request", f"The request is invalid: {errors[0].msg}.",
                    errors=errors)


def _loc(key: str | None) -> list[str | int]:
    loc: list[str | int] = ["body"]
    if not key or key == "data":
        return loc
    for name, index in _PATH_PART.findall(key):
        loc.append(name if name else (int(index) if index.isdigit() else index))
    return loc


def _validation_type(message: str) -> str:
    """Read from the start of msgspec's message only: the rest may quote the request (an enum value `truncated`
    was typed json_invalid, a field named `missing required field` missing; found by mutation testing)."""
    if message.startswith("Expected `") and ", got" in message:
        return "type_error"
    if message.startswith("Object missing required field"):
        return "missing"
    if message.startswith("Object contains unknown field"):
        return "extra_forbidden"
    if message.startswith(("JSON is malformed", "Input data was truncated")):
        return "json_invalid"
    return "value_error"


# msgspec names a missing or unknown field in its message, at the object's path: FastAPI's `loc` ends with it.
_FIELD = re.compile(r"^Object (?:missing required|contains unknown) field `([^`]*)`$")


def _field_loc(key: str | None, message: str) -> list[str | int]:
    named = _FIELD.match(message)
    if named is None:
        return _loc(key)
    # An unknown field's name (FastAPI's loc), unless it is no plain name: a token or secret pasted as one.
    name = named.group(1)
    return _loc(key) + [shown_member(name)]


def on_validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[bytes]:
    items = exc.extra if isinstance(exc.extra, list) else []
    errors = [ErrorItem(_field_loc(item.get("key"), str(item.get("message"))),
                        without_secrets(str(item.get("message"))), _validation_type(str(item.get("message"))))
              if item.get("message") != "'data'" else
              # Litestar's KeyError for the `data` it could not build from an empty body
              ErrorItem(["body"], "the body is empty; a JSON object is expected", "missing")
              for item in items if isinstance(item, dict)]
    if not errors:
        # Litestar raises this with only a detail when the body is not JSON at all.
        errors = [ErrorItem(["body"], "the body is not valid JSON", "json_invalid")]
    problem = ProblemDetails("urn:jwt-decision:problem:request-invalid", "Invalid request", 422,
                             f"The request body is invalid: {errors[0].msg} (at {'.'.join(map(str, errors[0].loc))}).",
                             "REQUEST_INVALID", errors)
    return problem_response(problem)


def on_api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[bytes]:
    return problem_response(exc.problem, exc.headers)


_STATUS_CODES = {404: ("NOT_FOUND", "Not found"), 405: ("METHOD_NOT_ALLOWED", "Method not allowed"),
                 413: ("BODY_TOO_LARGE", "Request body too large")}


def on_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    if exc.status_code >= 500:  # Litestar's InternalServerException: a disconnect, or a bug
        return on_unexpected(request, exc)
    return http_problem(exc)


def http_problem(exc: HTTPException) -> Response[bytes]:
    """A Litestar HTTPException under 500 as problem+json."""
    status = exc.status_code
    code, title = _STATUS_CODES.get(status, ("REQUEST_INVALID", "Bad request"))
    detail = {404: "No route matches this path.", 405: "This route does not accept this method.",
              413: "The request body exceeds MAX_BODY_BYTES."}.get(status, str(exc.detail)[:200])
    errors = None
    if status == 400 and isinstance(exc.__cause__, SerializationException):
        # Litestar's "JSON is malformed" and friends (raised from the body's decoding): not what the route decodes
        status, title, errors = 422, "Invalid request", [ErrorItem(["body"], str(exc.detail)[:200], "json_invalid")]
        detail = f"The request body is invalid: {errors[0].msg}."
    return problem_response(ProblemDetails(f"urn:jwt-decision:problem:{code.lower().replace('_', '-')}", title,
                                           status, detail, code, errors), dict(exc.headers or {}))


INTERNAL = ProblemDetails("urn:jwt-decision:problem:internal", "Internal error", 500,
                          "The service failed to process this request.", "INTERNAL")


def frames(exc: BaseException, limit: int = 12) -> list[str]:
    """Where an exception was raised, innermost last, as `file:line in function` (the last `limit` frames): enough
    to find the bug, and nothing the request put in it (no message, no local variable, no source line)."""
    where = []
    for frame, line in traceback.walk_tb(exc.__traceback__):
        code = frame.f_code
        where.append(f"{_short(code.co_filename)}:{line} in {code.co_name}")
    return where[-limit:]


def _roots() -> tuple[str, ...]:
    """Where code is loaded from, longest first: installed packages, the standard library, this checkout."""
    paths = sysconfig.get_paths()
    found = {os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
             *(paths[name] for name in ("purelib", "platlib", "stdlib", "platstdlib") if name in paths)}
    return tuple(sorted((root.rstrip(os.sep) + os.sep for root in found), key=len, reverse=True))


_ROOTS = _roots()


def _short(filename: str) -> str:
    """A file as its path in its package or this project (`app/rules.py`, `litestar/app.py`, `json/decoder.py`),
    not where this machine installed it."""
    for root in _ROOTS:
        if filename.startswith(root):
            return filename[len(root):]
    return os.path.basename(filename)


def log_unexpected(exc: Exception, scope: Any) -> None:
    # A bug of ours: log the exception type, where it was raised and the route only (never its message or the
    # request, which may carry tokens, nor its path: under forward-auth that is the protected application's URL).
    request_id = scope.get(REQUEST_ID)  # set by Observe: the error line and its request line share it
    log.error("unhandled_exception", error_type=type(exc).__name__, where=frames(exc),
              route=scope.get("path_template") or "unmatched",
              request_id=request_id.decode() if isinstance(request_id, bytes) else None)


# What Litestar's JSON body decoding lets escape besides msgspec.DecodeError: invalid UTF-8 inside a string and
# nesting deeper than the decoder's recursion allows. Both are the client's body, not a bug of ours.
_BODY_ERRORS = {UnicodeDecodeError: ("the body is not valid UTF-8", "json_invalid"),
                RecursionError: ("the body is nested too deeply", "json_invalid")}


# Litestar's only signal that the body stopped before its end (an http.disconnect message): the client went away,
# or granian found its chunked framing malformed (`zz` as a chunk size) and the client, still there, reads this.
_DISCONNECTED = "client disconnected prematurely"
BODY_INCOMPLETE = ProblemDetails("urn:jwt-decision:problem:body-incomplete", "Incomplete request body", 400,
                                 "The request body ended before its declared end, or its chunked framing is "
                                 "malformed.", "BODY_INCOMPLETE")


# Set in the scope when the body did not arrive within READ_TIMEOUT_SECONDS (app.api.fastpath.BodyDeadlines).
BODY_TIMED_OUT = "jwt_decision.body_timed_out"
BODY_TIMEOUT = ProblemDetails("urn:jwt-decision:problem:body-timeout", "Request body timeout", 408,
                              "The request body did not arrive within READ_TIMEOUT_SECONDS.", "BODY_TIMEOUT")


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    if isinstance(exc, InternalServerException) and exc.detail == _DISCONNECTED and request.scope.get(BODY_TIMED_OUT):
        return problem_response(BODY_TIMEOUT, {"Connection": "close"})  # RFC 9110 15.5.9
    if isinstance(exc, InternalServerException) and exc.detail == _DISCONNECTED:
        # The client's request, not a 500 of ours. It was answered `499` (nginx's status for a client that left,
        # with an empty body), which a client still connected read as an unknown status (found by a review).
        return problem_response(BODY_INCOMPLETE)
    body_error = _BODY_ERRORS.get(type(exc))
    if body_error is not None and request.method in ("POST", "PUT", "PATCH"):
        errors = [ErrorItem(["body"], *body_error)]
        return problem_response(ProblemDetails("urn:jwt-decision:problem:request-invalid", "Invalid request", 422,
                                               f"The request body is invalid: {errors[0].msg}.", "REQUEST_INVALID",
                                               errors))
    log_unexpected(exc, request.scope)
    return problem_response(INTERNAL)


EXCEPTION_HANDLERS = {
    ValidationException: on_validation,
    ApiError: on_api_error,
    NotFoundException: on_http_exception,
    MethodNotAllowedException: on_http_exception,
    HTTPException: on_http_exception,
    Exception: on_unexpected,
}
