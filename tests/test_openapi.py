"""The OpenAPI document: committed, served, complete (operation ids, summaries, examples, the code enum)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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

    fixture = ROOT / "tests" / "fixtures" / "authorizers.json"
    settings = Settings(issuer_profiles_json=json.dumps({"test-issuer": rs256_policy()}), authorizers_json=str(fixture))
    with TestClient(create_app(settings)) as client:
        doc = client.get("/openapi.json").json()
        answers = {method: client.request(method, "/v1/forward-auth/orgs", headers={"X-Forwarded-Uri": "/x"})
                   for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")}
    item = doc["paths"]["/v1/forward-auth/{authorizer}"]
    documented_headers = {name.lower() for name in doc["components"]["headers"]}
    for method, answer in answers.items():
        response = item[method.lower()]["responses"][str(answer.status_code)]
        sent = {name.lower() for name in answer.headers} & documented_headers
        assert sent and sent <= {name.lower() for name in response["headers"]}, (method, sent)
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
