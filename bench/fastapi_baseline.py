"""The baseline a Python user would write: FastAPI + PyJWT doing the same validation as /v1/validate/jwt.

Same request body (`{"token": ..., "policy": {...}}`), same checks (alg allow-list, signature, iss, aud, exp/nbf/iat
with the policy's leeway, exp/iat/iss/aud required), keys loaded once and kept by their PEM or secret (so PyJWT is
not charged for parsing keys), an `async def` handler (no thread pool hop). Served by granian like ours.

For forward-auth, the same validation as a GET that reads the bearer token from `Authorization`, with the
benchmark's RS256 policy fixed at startup (BENCH_POLICY_JSON, as a proxy's auth endpoint has it): 200 with
`X-User-Id`, else 401.
No rules: the rows comparing with it say "validation only".
`PORT=8002 WORKERS=2 python -m bench.fastapi_baseline`
"""

from __future__ import annotations

import json
import os
from typing import Any

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from bench import tokens as T

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
_KEYS: dict[str, Any] = {}


class Policy(BaseModel):
    issuer: str
    audiences: list[str]
    allowed_algs: list[str]
    secret: str | None = None
    public_key: str | None = None
    required_claims: list[str] = []
    clock_skew_seconds: int = 60


class ValidateRequest(BaseModel):
    token: str
    policy: Policy


def _key(policy: Policy) -> Any:
    material = policy.public_key or policy.secret or ""
    key = _KEYS.get(material)
    if key is None:
        key = load_pem_public_key(material.encode()) if policy.public_key else material.encode()
        _KEYS[material] = key
    return key


def _decode(token: str, policy: Policy) -> dict[str, Any]:
    """PyJWT with the policy's checks (raises jwt.PyJWTError)."""
    return jwt.decode(token, _key(policy), algorithms=policy.allowed_algs, audience=policy.audiences,
                      issuer=policy.issuer, leeway=policy.clock_skew_seconds,
                      options={"require": sorted({"exp", "iat", "iss", "aud", *policy.required_claims})})


@app.post("/v1/validate/jwt")
async def validate(body: ValidateRequest) -> dict[str, Any]:
    policy = body.policy
    try:
        claims = _decode(body.token, policy)
    except jwt.PyJWTError as exc:
        return {"valid": False, "error": type(exc).__name__, "message": str(exc)}
    return {"valid": True, "claims": claims}


# The benchmark's keys are made per process (tests/mint.py): the harness passes its policy, as it writes the
# service's AUTHORIZERS_JSON; called in process (bench.breakdown), the process's own.
_FORWARD_POLICY = Policy(**json.loads(os.environ.get("BENCH_POLICY_JSON") or json.dumps(T.policy_doc("RS256"))))


@app.get("/v1/forward-auth/bench-10")
async def forward_auth(authorization: str | None = Header(default=None)) -> JSONResponse:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return JSONResponse({"decision": "deny"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
    policy = _FORWARD_POLICY
    try:
        claims = _decode(token, policy)
    except jwt.PyJWTError:
        return JSONResponse({"decision": "deny"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
    return JSONResponse({"decision": "allow"}, headers={"X-User-Id": str(claims.get("sub", ""))})


if __name__ == "__main__":
    from bench.serve import serve

    serve("bench.fastapi_baseline:app")
