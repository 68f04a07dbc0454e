"""The OpenAPI document: committed, served, complete (operation ids, summaries, examples, the code enum)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
