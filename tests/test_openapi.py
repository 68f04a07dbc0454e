"""The OpenAPI document: committed, served, complete (operation ids, summaries, examples, the code enum), and true:
every answer the service gives, and every example, validates against the schema it declares for it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from jsonschema import Draft202012Validator, ValidationError

from app.findings import VALIDATION_CODES

ROOT = Path(__file__).resolve().parent.parent


def test_committed_document_equals_python_m_app_openapi():
    printed = subprocess.run([sys.executable, "-m", "app", "openapi"], cwd=ROOT, capture_output=True, text=True,
                             check=True, env={"PATH": "/usr/bin:/bin"}).stdout
    committed = (ROOT / "openapi" / "openapi.json").read_text()
    assert printed == committed, "openapi/openapi.json is stale: run `python3 .ci/dev.py openapi` and commit it"


def test_served_document_is_openapi_3_1_with_examples_for_every_route(client):
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["schemas"]["FindingCode"]["enum"] == list(VALIDATION_CODES)
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            assert operation.get("operationId"), (path, method)
            assert operation.get("summary") and operation.get("description"), (path, method)
            ok = operation["responses"].get("200") or operation["responses"].get("201")
            if method == "options" and not path.startswith("/v1/forward-auth/"):
                ok = operation["responses"]["204"]
            assert ok is not None, (path, method)
            for content in ok.get("content", {}).values():
                assert content.get("examples"), (path, method)
            if "requestBody" in operation:
                for content in operation["requestBody"]["content"].values():
                    assert content.get("examples"), (path, method)


def test_docs_ui_is_served_from_packaged_files(client):
    page = client.get("/docs")
    assert page.status_code == 200 and "swagger-ui-bundle.js" in page.text
    asset = client.get("/docs/static/swagger-ui-bundle.js")
    assert asset.status_code == 200 and len(asset.content) > 100_000
    # A file of no known type (a source map) is bytes, never HTML a browser would render on this origin.
    mapped = client.get("/docs/static/swagger-ui.css.map")
    assert mapped.status_code == 200 and mapped.headers["content-type"] == "application/octet-stream"


@pytest.mark.parametrize("path", ["/docs/static/%00", "/docs/static/" + "a" * 300, "/docs/static/swagger-ui.css/x",
                                  "/docs/static/..%2Fopenapi.py", "/docs/static/index.j2x", "/_schema/x",
                                  "/_schema/swagger", "/_schema/%00"],
                         ids=["nul", "name-too-long", "under-a-file", "encoded-dot-dot", "unknown", "schema-name",
                              "schema-renderer-not-installed", "schema-nul"])
def test_an_unknown_docs_or_schema_path_is_a_404_problem_never_a_500_or_html(client, path):
    """Found by a review: the static files router answered 500 (a NUL in os.stat, ENAMETOOLONG, ENOTDIR) on a
    route without an API key, and /_schema/<name> Litestar's HTML 404 page."""
    for method in (client.get, client.head):
        response = method(path)
        assert response.status_code == 404 and response.headers["content-type"] == "application/problem+json"
    assert client.get(path).json()["code"] == "NOT_FOUND"
    assert client.get("/_schema").json()["openapi"].startswith("3.1")
    assert client.get("/docs/static/swagger-ui.css").headers["content-type"].startswith("text/css")


def test_the_api_key_scheme_is_declared_on_every_guarded_route_and_required_only_when_keys_are_set():
    from litestar.testing import TestClient

    from app.server import create_app
    from app.settings import Settings

    for keys, expected in (((), [{}, {"apiKey": []}]), (("k" * 32,), [{"apiKey": []}])):
        with TestClient(create_app(Settings(api_keys=keys))) as fresh:
            doc = fresh.get("/openapi.json").json()
        assert doc["components"]["securitySchemes"]["apiKey"] == {**doc["components"]["securitySchemes"]["apiKey"],
                                                                  "type": "apiKey", "in": "header", "name": "X-API-Key"}
        for path, item in doc["paths"].items():
            guarded = path.startswith("/v1/") and not path.startswith("/v1/presets")
            for operation in item.values():
                assert operation.get("security") == (expected if guarded else None), (keys, path)


def test_the_document_names_every_method_status_and_header_forward_auth_answers_with():
    """Found by an audit of the document against real answers: forward-auth was documented for GET only and no
    response header was documented anywhere."""
    from litestar.testing import TestClient

    from app.server import create_app
    from app.settings import Settings
    from tests.conftest import rs256_policy
    from tests.proxies import ORG, live_token

    fixture = ROOT / "tests" / "fixtures" / "authorizers.json"
    settings = Settings(issuer_profiles_json=json.dumps({"test-issuer": rs256_policy()}), authorizers_json=str(fixture))
    with TestClient(create_app(settings)) as client:
        doc = client.get("/openapi.json").json()
        answers = [(method, client.request(method, "/v1/forward-auth/orgs", headers={"X-Forwarded-Uri": "/x"}))
                   for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")]
        # An allow for a token without `sub`: X-User-Id left out, and named for Envoy to remove.
        allowed = client.get("/v1/forward-auth/orgs", headers={
            "Authorization": f"Bearer {live_token(sub=None, **{ORG: 'acme'})}",
            "X-Forwarded-Uri": "/v1/organisations/acme"})
        assert allowed.status_code == 200 and "X-Envoy-Auth-Headers-To-Remove" in allowed.headers
        answers.append(("GET", allowed))
    item = doc["paths"]["/v1/forward-auth/{authorizer}"]
    documented_headers = {name.lower() for name in doc["components"]["headers"]}
    for method, answer in answers:
        response = item[method.lower()]["responses"][str(answer.status_code)]
        sent = {name.lower() for name in answer.headers} & documented_headers
        assert sent and sent <= {name.lower() for name in response["headers"]}, (method, sent)
    # Every header an allow sends but the authorizer's own claims_to_headers is documented.
    own = {"x-user-id", "x-org-id", "x-plan", "content-type", "content-length", "date", "server"}
    assert {name.lower() for name in allowed.headers} - own <= {
        name.lower() for name in item["get"]["responses"]["200"]["headers"]}, allowed.headers
    assert {"200", "503"} <= set(doc["paths"]["/readyz"]["get"]["responses"])
    assert "examples" not in json.dumps(doc["components"]["schemas"])  # Litestar's were random text
    assert all("content" not in response for response in item["head"]["responses"].values())
    assert "INTERNAL" in doc["components"]["schemas"]["ProblemCode"]["enum"]
    for path_item in doc["paths"].values():
        for operation in path_item.values():
            for status, response in operation["responses"].items():
                assert "X-Request-Id" in response["headers"], status
                for content in response.get("content", {}).values():
                    for example in content.get("examples", {}).values():
                        if content["schema"].get("$ref", "").endswith("/ForwardAuthBody"):
                            assert set(example["value"]) == {"decision", "reason", "rule"}, example


def test_litestars_own_schema_routes_serve_the_same_document(client):
    """Found by an audit: /_schema and its JSON routes served the generator's raw output, without the security
    scheme, the code enums or the examples."""
    served = client.get("/openapi.json").content
    assert [client.get(path).content == served for path in ("/_schema", "/_schema/litestar.json",
                                                            "/_schema/openapi.json")] == [True, True, True]


def test_the_success_examples_are_what_the_service_answers_to_the_first_request_example(client):
    """Found by an audit: the examples had drifted (a `profile: null` the answer leaves out, a shortened hint, an
    inspect answer with one detail of three). The client's clock is the examples' `now`."""
    from app import examples
    from app.findings import CHECK_ORDER

    for name, url in (("validate", "/v1/validate/jwt"), ("inspect", "/v1/inspect/token")):
        answer = client.post(url, json=examples.request_examples(name)[0].value)
        assert answer.status_code == 200 and answer.json() == examples.success_example(name).value, name
    statuses = examples.success_example("authorize").value["validation"]["statuses"]
    assert list(statuses) == list(CHECK_ORDER)


def test_every_status_and_header_sent_outside_forward_auth_is_declared():
    """Found by an audit: a bad Host is 400 on every route, problem answers carry Cache-Control, forward-auth's
    400 for two tokens carries WWW-Authenticate; none was declared."""
    from litestar.testing import TestClient

    from app.server import create_app
    from app.settings import Settings
    from tests.conftest import rs256_policy
    from tests.proxies import ORG, live_token

    fixture = ROOT / "tests" / "fixtures" / "authorizers.json"
    settings = Settings(issuer_profiles_json=json.dumps({"test-issuer": rs256_policy()}), authorizers_json=str(fixture))
    with TestClient(create_app(settings)) as client:
        doc = client.get("/openapi.json").json()
        documented_headers = {name.lower() for name in doc["components"]["headers"]}
        requests: list[tuple[str, str, list[tuple[str, str]], int]] = [
            ("GET", path, [("Host", "bad host")], 400) for path in ("/healthz", "/readyz", "/v1/presets")]
        requests += [("GET", "/v1/forward-auth/api-standard", [("Authorization", "Bearer a"),
                                                               ("X-Forwarded-Uri", "/x?access_token=b")], 400),
                     ("GET", "/v1/forward-auth/nope", [], 404), ("GET", "/v1/presets/nope", [], 404),
                     ("GET", "/v1/presets/auth0?tenant_domain=acme.us.auth0.com", [], 422)]
        for method, url, headers, status in requests:
            answer = client.request(method, url, headers=headers)
            assert answer.status_code == status, (url, answer.text)
            template = "/v1/forward-auth/{authorizer}" if url.startswith("/v1/forward-auth/") else \
                "/v1/presets/{provider}" if url.startswith("/v1/presets/") else url.split("?")[0]
            response = doc["paths"][template][method.lower()]["responses"].get(str(answer.status_code))
            assert response is not None, (url, answer.status_code)
            sent = {name.lower() for name in answer.headers} & documented_headers
            assert sent <= {name.lower() for name in response["headers"]}, (url, sent)
            if answer.headers["content-type"].startswith("application/problem+json"):
                assert answer.headers["cache-control"] == "no-store", url
            elif url.startswith("/v1/forward-auth/api-standard"):  # two tokens
                assert 'error="invalid_request"' in answer.headers["www-authenticate"]
    declared = {parameter["name"] for parameter in doc["paths"]["/v1/presets/{provider}"]["get"]["parameters"]}
    from app.presets import load_presets
    from app.server import PRESETS_DIR

    assert {name for preset in load_presets(PRESETS_DIR).values() for name in preset.parameters} <= declared


def test_request_schemas_say_unknown_fields_are_refused(client):
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for name in ("ValidateRequest", "VerifyPolicy", "AuthorizeRequest", "RequestDoc", "AuthorizerDoc", "RuleDoc"):
        assert schemas[name]["additionalProperties"] is False, name
    assert "additionalProperties" not in schemas["ValidationResult"]
    answer = client.post("/v1/validate/jwt", json={"token": "x", "issuer_profile_id": "p", "zzz": 1})
    assert answer.status_code == 422 and answer.json()["errors"][0]["type"] == "extra_forbidden"


def _limits(node, found):
    """Every (keyword, value) limit in a schema, nested ones included."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("minLength", "maxLength", "pattern", "minItems", "maxItems", "minProperties", "maxProperties",
                       "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "propertyNames"):
                found.append((key, float(value) if isinstance(value, (int, float)) else repr(value)))  # 300 or 300.0
            _limits(value, found)
    elif isinstance(node, list):
        for value in node:
            _limits(value, found)
    return found


def test_request_schemas_state_the_limits_the_service_refuses_bodies_by(client):
    """Litestar's generator dropped limits on list items, map keys and values and union members: a body the
    document allowed (`"issuer": ""`, a 129-character authorizer id, 257 request headers) was a 422 (found by a
    review). Every limit msgspec decodes a request Struct with is in the document."""
    import msgspec
    from app.api.authorize import AuthorizeRequest, RequestDoc
    from app.api.validation import InspectRequest, ValidateRequest
    from app.authorizers import AuthorizerDoc
    from app.policy import VerifyPolicy
    from app.ruleset import RuleDoc

    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for cls in (ValidateRequest, InspectRequest, VerifyPolicy, AuthorizeRequest, RequestDoc, AuthorizerDoc, RuleDoc):
        _, components = msgspec.json.schema_components([cls])
        for field, theirs in components[cls.__name__]["properties"].items():
            ours = _limits(schemas[cls.__name__]["properties"][field], [])
            missing = [limit for limit in _limits(theirs, []) if limit not in ours or ours.remove(limit)]
            assert not missing, (cls.__name__, field, missing)
    issuer = schemas["VerifyPolicy"]["properties"]["issuer"]["oneOf"]
    assert issuer[0]["minLength"] == 1 and issuer[1]["items"]["minLength"] == 1 and issuer[1]["minItems"] == 1
    assert schemas["AuthorizeRequest"]["properties"]["authorizer"]["oneOf"][0]["maxLength"] == 128
    assert schemas["RequestDoc"]["properties"]["headers"]["maxProperties"] == 256
    answer = client.post("/v1/authorize", json={"authorizer": "a" * 129, "request": {"method": "GET", "path": "/"}})
    assert answer.status_code == 422 and "length <= 128" in answer.text


@pytest.mark.parametrize("keys", [(), ("k" * 32,)], ids=["open", "api-keys"])
def test_every_route_answers_head_and_options_as_documented(keys):
    """HEAD on a GET route and Litestar's OPTIONS were served but not documented (noticed at an earlier stop):
    each method of each documented route is sent, with and without an API key where API_KEYS is set, and its
    status (and OPTIONS' Allow) must be the document's."""
    from litestar.testing import TestClient

    from app.server import create_app
    from app.settings import Settings

    with TestClient(create_app(Settings(api_keys=keys))) as fresh:
        doc = fresh.get("/openapi.json").json()
        checked = 0
        for template, item in doc["paths"].items():
            if template.startswith("/v1/forward-auth/"):
                continue  # decided for any method: test_the_document_names_every_method_status_and_header_...
            path = template.replace("{provider}", "auth0")
            for method, operation in item.items():
                for headers in ({}, {"X-API-Key": "k" * 32}) if keys else ({},):
                    answer = fresh.request(method.upper(), path, headers=headers)
                    assert str(answer.status_code) in operation["responses"], (method, path, answer.status_code)
                    if method == "options" and answer.status_code == 204:
                        described = operation["responses"]["204"]["description"]
                        assert described.endswith(f"`Allow: {answer.headers['allow']}`"), (path, described)
                        assert "head" in item or "GET" not in answer.headers["allow"]
                    if method == "head":
                        assert answer.content == b"" and answer.status_code != 405
                    checked += 1
    assert checked >= (48 if keys else 24)  # 24 operations outside forward-auth


# Answers against the schemas the document declares for them (route, method, status, content type)

KEY = "k" * 32
PLAN, ORG = "https://myapp.com/plan", "https://myapp.com/org_id"


def _templates(doc: dict[str, Any]) -> list[tuple[re.Pattern[str], str]]:
    """Each path template as a pattern over a request path: `{path}` spans slashes, other parameters do not."""
    return [(re.compile(re.sub(r"\{(\w+)\}", lambda m: ".+" if m[1] == "path" else "[^/]+", template)), template)
            for template in doc["paths"]]


def _closed(node: Any) -> Any:
    """A copy of a schema in which an object that lists its properties has no others: a field the service sends
    but the document does not name is lost to a generated client, and is reported as such."""
    if isinstance(node, list):
        return [_closed(value) for value in node]
    if not isinstance(node, dict):
        return node
    closed = {key: value if key == "enum" else _closed(value) for key, value in node.items()}
    if "properties" in node and "additionalProperties" not in node:
        closed["properties"] = {name: _closed(value) for name, value in node["properties"].items()}
        closed["additionalProperties"] = False
    return closed


def _deepest(error: ValidationError) -> ValidationError:
    """Of a union none of whose members matched (`oneOf`: a value or null), the error deepest in the answer: the
    field that is wrong (`$.key.kid`), not the object that holds it."""
    return _deepest(max(error.context, key=lambda inner: len(inner.absolute_path))) if error.context else error


def _declared(doc: dict[str, Any], method: str, url: str, status: int) -> tuple[str, dict[str, Any] | None]:
    """The route (`METHOD template`) an answer is for and the response the document declares for its status. A
    path or method the document does not declare (an unknown route, a 405) is answered as a ProblemDetails."""
    path = url.split("?")[0]
    template = next((template for pattern, template in _templates(doc) if pattern.fullmatch(path)), path)
    operation = doc["paths"].get(template, {}).get(method.lower())
    if operation is None:
        problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}
        return f"{method} {template} (undeclared)", {"content": {} if method == "HEAD" else problem}
    return f"{method} {template}", operation["responses"].get(str(status))


def _mismatch(doc: dict[str, Any], route: str, declared: dict[str, Any] | None, answer: Any) -> str | None:
    """What is wrong with an answer as the document declares it, or None. A text body is checked by its type."""
    where = f"{route} -> {answer.status_code}"
    if declared is None:
        return f"{where}: status not declared: {answer.text[:300]}"
    content = declared.get("content", {})
    if route.startswith("HEAD ") and (content or answer.content):  # a HEAD answer has no content, and says none
        return f"{where}: a body declared ({sorted(content)}) or sent ({answer.text[:100]!r}) for HEAD"
    if not content:
        return f"{where}: a body where none is declared: {answer.text[:300]}" if answer.content else None
    sent = answer.headers.get("content-type", "").split(";")[0].strip()
    media = next((media for media in content if media.split(";")[0] == sent), None)
    if media is None:
        return f"{where}: content type {sent!r} is not one of {sorted(content)}: {answer.text[:300]}"
    if not media.endswith("json"):
        return None
    validator = Draft202012Validator(_closed({**content[media]["schema"], "components": doc["components"]}))
    errors = sorted(map(_deepest, validator.iter_errors(answer.json())), key=lambda error: list(error.absolute_path))
    found = "; ".join(f"at {error.json_path}: {error.message[:200]}" for error in errors)
    return f"{where} {media}: {found} (body: {answer.text[:400]})" if errors else None


def _token_requests(jwks_uri: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Tokens of every finding kind, validated inline (RS256, HS256, ES256 from a key set, a key set that is not
    there) and by issuer profile, and inspected."""
    from tests.conftest import AUDIENCE, ISSUER, NOW, claims, rs256_policy, rs256_token
    from tests.mint import b64, key_for, mint, segment

    es256 = {"issuer": ISSUER, "audiences": [AUDIENCE], "allowed_algs": ["ES256"], "jwks_uri": jwks_uri}
    strict = rs256_policy(max_ttl_seconds=60, token_type="at+jwt", required_claims=["scope"], required_scopes=["read"],
                          required_custom_claims={"tier": "gold"})
    hs256 = rs256_policy(public_key=None, allowed_algs=["HS256"], secret="s" * 64)
    policies = [rs256_policy(), strict, hs256, es256, {**es256, "jwks_uri": jwks_uri.replace("jwks", "missing")}]
    tokens = [
        rs256_token(), rs256_token(exp=NOW - 3600), rs256_token(aud="x"), rs256_token(nbf=NOW + 10**8, iat=NOW + 10**8),
        rs256_token(exp=None), rs256_token(exp=NOW * 1000), rs256_token(exp="soon"), rs256_token(exp=NOW + 0.5),
        rs256_token(exp=32_503_680_000, iat=1e20), rs256_token(nonce="n", token_use="id"),
        rs256_token(sub=7, **{PLAN: ["free", 1]}),
        mint(claims(), key_for("RS256", "attacker"), kid=key_for("RS256").kid),  # a bad signature
        mint(claims(), key_for("HS256")), mint(claims(), key_for("ES256")),
        mint(claims(), key_for("ES256"), kid="gone"),
        mint(claims(), key_for("RS256"), header={"jwk": key_for("RS256").jwk, "kid": "../etc", "crit": ["x"]}),
        f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(claims())}.", f"{segment({'alg': 'RS256'})}.{b64(b'[1]')}.",
        f"{b64(b'[]')}.{segment(claims())}.", f"{b64(b'{')}.{b64(b'{}')}.", "not.a.jwt", "", "8xLOxBtZp8",
        f"Bearer {rs256_token()}", "a." * 20_000]
    sent = []
    for token in tokens:
        sent += [("POST", "/v1/validate/jwt", {"json": {"token": token, "policy": policy}}) for policy in policies]
        sent += [("POST", "/v1/validate/jwt", {"json": {"token": token, "issuer_profile_id": profile}})
                 for profile in ("test-issuer", "keyed", "down")]
        sent.append(("POST", "/v1/inspect/token", {"json": {"token": token}}))
    return sent


def _decision_requests(jwks_uri: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Decisions as JSON (allow, deny, rate-limited, with and without `explain`) and as forward-auth answers of
    every status, by any method, in both URL forms."""
    from tests.conftest import AUDIENCE, ISSUER, NOW, rs256_token

    def decide(authorizer: Any, authorization: str | None, method: str = "GET", path: str = "/") -> list[Any]:
        headers = {} if authorization is None else {"authorization": authorization}
        request = {"method": method, "path": path, "headers": headers}
        return [("POST", "/v1/authorize", {"json": {"authorizer": authorizer, "request": request, "explain": explain}})
                for explain in (False, True)]

    bearer = {name: f"Bearer {token}" for name, token in (
        ("free", rs256_token(**{PLAN: "free"})), ("premium", rs256_token(**{PLAN: "premium"})),
        ("odd", rs256_token(sub=7, **{PLAN: ["free", 1]})), ("expired", rs256_token(exp=NOW - 3600)),
        ("acme", rs256_token(**{ORG: "acme"})), ("read", rs256_token(scope="read")), ("plain", rs256_token()))}
    es256 = {"issuer": ISSUER, "audiences": [AUDIENCE], "allowed_algs": ["ES256"], "jwks_uri": jwks_uri}
    limited = {"issuer_profile_id": "test-issuer", "rules": [{"effect": "allow"}],
               "rate_limit": {"per_minute": 1, "status": 403}}
    sent = [*decide("api-standard", bearer["free"]), *decide("api-standard", bearer["premium"]),
            *decide("api-standard", bearer["odd"]), *decide("api-standard", None),
            *decide("api-standard", bearer["expired"]), *decide("api-standard", "Bearer not.a.jwt"),
            *decide("orgs", bearer["acme"], path="/v1/organisations/acme/x"),
            *decide("orgs", bearer["acme"], path="/v1/organisations/other"),
            *decide("resources", bearer["read"], "DELETE", "/v1/resources/7"),
            *decide("reports", bearer["plain"], path="/v1/reports/%2e%2e/x"), *decide("limited", bearer["plain"]),
            *decide(limited, bearer["plain"]),
            *decide({"policy": es256, "rules": [{"effect": "allow"}]}, bearer["plain"]),
            *decide({"policy": {**es256, "jwks_uri": jwks_uri.replace("jwks", "missing")}}, bearer["plain"]),
            *decide("nope", None), *decide({"rules": [{"effect": "allow", "path": {"pattern": "("}}]}, None),
            *decide({"policy": es256, "issuer_profile_id": "test-issuer"}, None)]
    forward = [("api-standard", {"Authorization": bearer["free"]}), ("api-standard", {"Authorization": bearer["odd"]}),
               ("api-standard", {"Authorization": bearer["expired"]}), ("api-standard", {}),
               ("api-standard", {"Authorization": "Bearer a", "X-Forwarded-Uri": "/?access_token=b"}),
               ("resources", {"Authorization": bearer["read"], "X-Forwarded-Method": "DELETE",
                              "X-Forwarded-Uri": "/v1/resources/7"}), ("nope", {}), ("nope/x", {}),
               ("limited", {"Authorization": bearer["plain"]}), ("limited/x", {"Authorization": bearer["plain"]}),
               ("orgs/v1/organisations/acme", {"Authorization": bearer["acme"]}), ("orgs/v1/organisations/acme", {}),
               ("orgs/v1/organisations/other", {"Authorization": bearer["acme"]}),
               ("orgs/v1/organisations%2Facme", {"Authorization": bearer["acme"]}),
               ("open/x", {"Authorization": bearer["plain"]})]
    return sent + [(method, f"/v1/forward-auth/{target}", {"headers": {"X-Forwarded-Uri": "/", **headers}
                                                           if "/" not in target else headers})
                   for target, headers in forward
                   for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")]


def _other_requests(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """The document's own request examples; presets, profiles and operations; problems of every status (bodies
    broken, too large, of another type or shape, an unknown route or method, a bad Host, a wrong API key)."""
    from app.presets import PARAMETER_KINDS, load_presets
    from app.server import PRESETS_DIR
    from tests.conftest import rs256_policy, rs256_token

    sent = [(method.upper(), path, {"content": json.dumps(example["value"]), "headers": {"Content-Type": media}})
            for path, item in doc["paths"].items() for method, operation in item.items()
            for media, content in operation.get("requestBody", {}).get("content", {}).items()
            for example in content["examples"].values()]
    for provider, preset in load_presets(PRESETS_DIR).items():
        filled = "&".join(f"{name}={PARAMETER_KINDS[name].sample}" for name in preset.parameters)
        sent += [("GET", f"/v1/presets/{provider}", {}), ("GET", f"/v1/presets/{provider}?{filled}", {})]
    sent += [(method, f"/v1/presets/{query}", {}) for method in ("GET", "HEAD")
             for query in ("nope", "auth0?tenant_domain=a b", "google?tenant_domain=a.b", "auth0?audience=x",
                           "okta?" + "&".join(f"p{index}=x" for index in range(60)))]  # errors past 50 are counted
    valid = {"token": rs256_token(), "issuer_profile_id": "test-issuer"}
    for url in ("/v1/validate/jwt", "/v1/inspect/token", "/v1/authorize"):
        sent += [("POST", url, {"content": "{", "headers": {"Content-Type": "application/json"}}),
                 ("POST", url, {"content": json.dumps(valid), "headers": {"Content-Type": "text/plain"}}),
                 ("POST", url, {"json": {"token": "x" * 70_000}}), ("POST", url, {"json": {"token": 1}}),
                 ("POST", url, {"json": [valid]}), ("POST", url, {"json": {}}), ("POST", url, {"json": None}),
                 ("POST", url, {"json": {**valid, "zzz": 1}}), ("PUT", url, {"json": valid})]
    sent += [("POST", "/v1/validate/jwt", {"json": {"token": "x", **body}}) for body in (
        {}, {"policy": rs256_policy(), "issuer_profile_id": "p"}, {"policy": rs256_policy(allowed_algs=["none"])},
        {"policy": rs256_policy(allowed_algs=["HS256"])}, {"policy": rs256_policy(issuer="")},
        {"issuer_profile_id": "a b\u0000"})]
    for path in ("/healthz", "/readyz", "/metrics", "/v1/presets", "/v1/presets/auth0", "/v1/profiles",
                 "/v1/validate/jwt", "/v1/inspect/token", "/v1/authorize", "/v1/forward-auth/orgs"):
        sent += [(method, path, {"headers": headers}) for method in ("GET", "HEAD", "POST", "DELETE", "OPTIONS")
                 for headers in ({}, {"Host": "a b"}, {"X-API-Key": "x" * 32}, {"X-API-Key": ""})]
    return sent + [("GET", "/nope", {}), ("POST", "/v1/nope", {"json": {}}), ("GET", "/v1/validate", {})]


def test_every_answer_validates_against_the_schema_the_document_declares_for_it():
    """Clients are generated from the document: each answer must be what it declares for the route, method, status
    and content type (every field named, objects closed). Sent: the document's own request examples, tokens of every
    finding kind, presets, profiles, decisions (allow, deny, explained, rate-limited, storage down), forward-auth and
    problems of every status; every status the document declares must be among the answers (408 aside: a timeout)."""
    from litestar.testing import TestClient

    from app.server import create_app
    from app.settings import Settings
    from tests.conftest import AUDIENCE, ISSUER, NOW, FixedClock, rs256_policy, rs256_token
    from tests.keyserver import KeyServer
    from tests.mint import jwks, key_for

    doc = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    server = KeyServer()
    server.documents["/jwks.json"] = jwks(key_for("ES256"), key_for("RS256"))
    jwks_uri = server.url("/jwks.json")
    keyed = {"issuer": ISSUER, "audiences": [AUDIENCE], "allowed_algs": ["ES256"], "jwks_uri": jwks_uri}
    profiles = {"test-issuer": {**rs256_policy(), "description": "inline key"}, "keyed": keyed,
                "down": {**keyed, "jwks_uri": server.url("/missing.json")}}
    authorizers = json.loads((ROOT / "tests" / "fixtures" / "authorizers.json").read_text())
    allow = {"issuer_profile_id": "test-issuer", "rules": [{"effect": "allow"}]}
    authorizers |= {"limited": {**allow, "rate_limit": {"per_minute": 1}}, "open": allow,
                    "fail-closed": {**allow, "rate_limit": {"per_minute": 1, "on_storage_error": "deny"}},
                    "own-keys": {"policy": keyed, "rules": [{"effect": "allow"}]}}
    settings = Settings(issuer_profiles_json=json.dumps(profiles), authorizers_json=json.dumps(authorizers),
                        jwks_uri_allowlist=("127.0.0.1",), api_keys=(KEY,))
    # Then not ready (a key set missing), the rate-limit storage down (nothing listens on port 1).
    down = msgspec.structs.replace(settings, ready_requires_keys=True, rate_limit_storage="redis://127.0.0.1:1")
    request = {"method": "GET", "path": "/", "headers": {"authorization": f"Bearer {rs256_token()}"}}
    storage_down = [("GET", "/readyz", {}), ("HEAD", "/readyz", {}),
                    ("GET", "/v1/forward-auth/limited", {"headers": {"X-Forwarded-Uri": "/", **request["headers"]}}),
                    *[("POST", "/v1/authorize", {"json": {"authorizer": authorizer, "request": request}})
                      for authorizer in ("limited", "fail-closed")]]
    mismatches: list[str] = []
    answered: set[str] = set()
    try:
        for app_settings, requests in ((settings, _other_requests(doc) + _token_requests(jwks_uri) +
                                        _decision_requests(jwks_uri)), (down, storage_down)):
            # The clock is fractional, as time.time() is: no integer field may become a float.
            with TestClient(create_app(app_settings, clock=FixedClock(NOW + 0.5)),
                            raise_server_exceptions=False) as client:
                client.headers["X-API-Key"] = KEY
                for method, url, arguments in requests:
                    answer = client.request(method, url, **arguments)
                    route, declared = _declared(doc, method, url, answer.status_code)
                    answered.add(f"{route} -> {answer.status_code}")
                    mismatches += filter(None, [_mismatch(doc, route, declared, answer)])
    finally:
        server.stop()
    assert not mismatches, f"{len(mismatches)} answers do not match the document:\n" + "\n".join(mismatches)
    declared_statuses = {f"{method.upper()} {template} -> {status}" for template, item in doc["paths"].items()
                         for method, operation in item.items() for status in operation["responses"]}
    assert {status for status in declared_statuses - answered if not status.endswith("-> 408")} == set()
    assert len(answered) >= 200


def test_every_example_in_the_document_validates_against_the_schema_beside_it():
    """Mock servers and SDK docs show the examples: each must be a body its own schema accepts (objects closed)."""
    doc = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    checked, wrong = 0, []
    for template, item in doc["paths"].items():
        for method, operation in item.items():
            bodies = [("request", operation.get("requestBody", {})),
                      *[(status, response) for status, response in operation["responses"].items()]]
            for status, body in bodies:
                for media, content in body.get("content", {}).items():
                    validator = Draft202012Validator(_closed({**content["schema"], "components": doc["components"]}))
                    for name, example in content.get("examples", {}).items() if media.endswith("json") else ():
                        checked += 1
                        wrong += [f"{method.upper()} {template} {status} {media} {name}: at {error.json_path}: "
                                  f"{error.message[:200]}" for error in map(_deepest, validator.iter_errors(
                                      example["value"]))]
    assert checked >= 100 and not wrong, "\n".join(wrong)
