"""Thin controllers for validation and inspection. They decode, delegate and encode; nothing else."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, Response, post
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody
from msgspec import Meta

from app import examples
from app.api import json_response, strict_body
from app.inspect import InspectResult, inspect_token
from app.observability import annotate
from app.policy import PolicyError, VerifyPolicy
from app.profiles import PROFILE_ID
from app.problems import ApiError, ProblemDetails, invalid_policy, request_invalid
from app.policy import Problem
from app.validation import ValidationResult
from app.verifier import Verifier

# Any text names a profile or none (404 with the known ids, as validation.md asks of an unknown one); only the
# length is bounded, as the answer repeats it. Configured ids match PROFILE_ID, checked at load.
ProfileId = Annotated[str, Meta(max_length=128)]


class ValidateRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A token plus exactly one of an inline `policy` or an `issuer_profile_id`."""

    token: str
    policy: VerifyPolicy | None = None
    issuer_profile_id: ProfileId | None = None


class InspectRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    token: str


PROBLEMS = {422: ProblemDetails, 404: ProblemDetails, 413: ProblemDetails}


async def validate(verifier: Verifier, data: ValidateRequest) -> ValidationResult:
    """The route's work (also called by `app.api.fastpath`). Raises ApiError for a request it cannot answer."""
    if (data.policy is None) == (data.issuer_profile_id is None):
        raise request_invalid([Problem(("body",), "exactly one of 'policy' or 'issuer_profile_id' is required",
                                       "value_error")])
    if data.policy is not None:
        try:
            policy = verifier.compile_inline(data.policy)
        except PolicyError as exc:
            raise invalid_policy(exc, ("body", "policy")) from None
        return await verifier.validate(data.token, policy)
    assert data.issuer_profile_id is not None
    profile = verifier.profile(data.issuer_profile_id)
    if profile is None:
        named = repr(data.issuer_profile_id) if PROFILE_ID.match(data.issuer_profile_id) else "by that id"
        raise ApiError(404, "ISSUER_PROFILE_NOT_FOUND", "Issuer profile not found",  # never echo what no id is
                       f"No issuer profile {named} is configured.", known=verifier.profile_ids())
    return await verifier.validate(data.token, profile, data.issuer_profile_id)


class ValidationController(Controller):
    path = "/v1"
    tags = ["validation"]

    @post("/validate/jwt", operation_id="validateJwt", summary="Validate a JWT against a policy or issuer profile",
          description=examples.VALIDATE_DESCRIPTION, status_code=200,
          responses=examples.responses("validate"), before_request=strict_body(ValidateRequest))
    async def validate_jwt(self, verifier: NamedDependency[Verifier],
                           data: JSONBody[ValidateRequest]
                           ) -> Response[ValidationResult]:
        return json_response(await validate(verifier, data))

    @post("/inspect/token", operation_id="inspectToken", summary="Decode a token without validating it",
          description=examples.INSPECT_DESCRIPTION, status_code=200, responses=examples.responses("inspect"),
          before_request=strict_body(InspectRequest))
    async def inspect(self, verifier: NamedDependency[Verifier],
                      data: JSONBody[InspectRequest]
                      ) -> InspectResult:
        result = inspect_token(data.token, verifier.clock(), verifier.max_token_bytes)
        annotate(token_id=result.token_id)
        return result


def dependencies(verifier: Verifier) -> dict[str, Provide]:
    return {"verifier": Provide(lambda: verifier, sync_to_thread=False, use_cache=True)}
