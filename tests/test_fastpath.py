"""The hot routes' fast path (app/api/fastpath.py) answers exactly as the Litestar routes do, and takes only the
requests it should: every request below goes once through the app as served and once through the same app
with the fast path removed, and the answers must be identical byte for byte (the request id aside)."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
import structlog
from litestar.testing import TestClient

from app.observability import Observe
from app.server import create_app
from app.settings import Settings
from tests.conftest import NOW, FixedClock, claims, rs256_policy
from tests.mint import key_for, mint

AUTHORIZERS = Path(__file__).parent / "fixtures" / "authorizers.json"
ORG = "https://myapp.com/org_id"
KEY = "s3cret-api-key"


class CountingLitestar:
    """Litestar's own handler, counting the requests that reach it."""

    def __init__(self, app: Any) -> None:
        self.app, self.calls = app, 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += scope["type"] == "http"
        await self.app(scope, receive, send)


def _apps(api_keys: list[str]) -> tuple[TestClient[Any], TestClient[Any], CountingLitestar]:
    served, plain = _pair(issuer_profiles_json=json.dumps({"test-issuer": rs256_policy()}),
                          authorizers_json=str(AUTHORIZERS), api_keys=api_keys, max_body_bytes=4096)
    fast = served.asgi_handler.app  # Observe(FastPath(litestar))
    counting = fast.app = CountingLitestar(fast.app)
    for app in (served, plain):  # each app's access lines to a buffer of its own
        app.state.access_log = io.BytesIO()
        app.asgi_handler.sink = structlog.BytesLogger(app.state.access_log)
    return TestClient(served), TestClient(plain), counting


def _pair(**settings: Any) -> tuple[Any, Any]:
    """The app as served and the same app without the fast path."""
    served = create_app(Settings(**settings), clock=FixedClock())
    plain = create_app(Settings(**settings), clock=FixedClock())
    plain.asgi_handler = Observe(plain.asgi_handler.app.app, plain.routes)
    return served, plain


def token(**overrides: Any) -> str:
    return mint(claims(**overrides), key_for("RS256"))


GOOD = token(**{ORG: "acme"})
JSON = {"content-type": "application/json"}
VALIDATE = {"token": GOOD, "policy": rs256_policy()}
DECIDE = {"authorizer": "orgs", "request": {"method": "GET", "path": "/v1/organisations/acme/reports",
                                             "headers": {"Authorization": f"Bearer {GOOD}"}}}
FORWARD = {"authorization": f"Bearer {GOOD}", "x-forwarded-method": "GET",
           "x-forwarded-uri": "/v1/organisations/acme/reports"}

# (name, method, path, headers, body, whether the fast path answers it)
CASES: list[tuple[str, str, str, dict[str, str], Any, bool]] = [
    ("validate-inline", "POST", "/v1/validate/jwt", JSON, VALIDATE, True),
    ("validate-charset", "POST", "/v1/validate/jwt", {"content-type": "application/json; charset=utf-8"},
     VALIDATE, True),
    ("validate-profile", "POST", "/v1/validate/jwt", JSON, {"token": GOOD, "issuer_profile_id": "test-issuer"}, True),
    ("validate-expired", "POST", "/v1/validate/jwt", JSON, {**VALIDATE, "token": token(exp=NOW - 60)}, True),
    ("validate-garbage-token", "POST", "/v1/validate/jwt", JSON, {**VALIDATE, "token": "a.b.c"}, True),
    ("validate-unknown-profile", "POST", "/v1/validate/jwt", JSON, {"token": GOOD, "issuer_profile_id": "nope"},
     False),
    ("validate-both", "POST", "/v1/validate/jwt", JSON, {**VALIDATE, "issuer_profile_id": "test-issuer"}, False),
    ("validate-neither", "POST", "/v1/validate/jwt", JSON, {"token": GOOD}, False),
    ("validate-bad-policy", "POST", "/v1/validate/jwt", JSON,
     {"token": GOOD, "policy": rs256_policy(allowed_algs=["none"])}, False),
    ("validate-unknown-field", "POST", "/v1/validate/jwt", JSON, {**VALIDATE, "extra": 1}, False),
    ("validate-wrong-type", "POST", "/v1/validate/jwt", JSON, {**VALIDATE, "token": 5}, False),
    ("validate-not-json", "POST", "/v1/validate/jwt", JSON, b"{not json", False),
    ("validate-text-plain", "POST", "/v1/validate/jwt", {"content-type": "text/plain"}, VALIDATE, False),
    ("validate-too-large", "POST", "/v1/validate/jwt", JSON, {**VALIDATE, "token": "a" * 5000}, False),
    ("validate-get", "GET", "/v1/validate/jwt", {}, None, False),
    ("authorize-allow", "POST", "/v1/authorize", JSON, DECIDE, True),
    ("authorize-deny", "POST", "/v1/authorize", JSON,
     {**DECIDE, "request": {**DECIDE["request"], "path": "/v1/organisations/evil"}}, True),
    ("authorize-explain", "POST", "/v1/authorize", JSON, {**DECIDE, "explain": True}, True),
    ("authorize-anonymous", "POST", "/v1/authorize", JSON, {**DECIDE, "request": {**DECIDE["request"],
                                                                                "headers": {}}}, True),
    ("authorize-inline", "POST", "/v1/authorize", JSON,
     {**DECIDE, "authorizer": {"policy": rs256_policy(), "rules": [{"effect": "allow"}]}}, True),
    ("authorize-inline-invalid", "POST", "/v1/authorize", JSON,
     {**DECIDE, "authorizer": {"policy": rs256_policy(), "rules": [{"effect": "allow", "path": {"pattern": "("}}]}},
     False),
    ("authorize-unknown", "POST", "/v1/authorize", JSON, {**DECIDE, "authorizer": "nope"}, False),
    ("forward-allow", "GET", "/v1/forward-auth/orgs", FORWARD, None, True),
    ("forward-deny", "GET", "/v1/forward-auth/orgs", {**FORWARD, "x-forwarded-uri": "/v1/organisations/evil"},
     None, True),
    ("forward-no-token", "GET", "/v1/forward-auth/orgs", {"x-forwarded-uri": "/v1/organisations/acme"}, None, True),
    ("forward-rate-limited-authorizer", "GET", "/v1/forward-auth/api-premium", FORWARD, None, True),
    ("forward-path-form", "GET", "/v1/forward-auth/orgs/v1/organisations/acme/reports",
     {"authorization": f"Bearer {GOOD}"}, None, True),
    ("forward-path-traversal", "GET", "/v1/forward-auth/orgs/v1/organisations/acme/%2e%2e/evil",
     {"authorization": f"Bearer {GOOD}"}, None, True),
    ("forward-trailing-slash", "GET", "/v1/forward-auth/orgs/", {"authorization": f"Bearer {GOOD}"}, None, True),
    ("forward-two-slashes", "GET", "/v1/forward-auth/orgs//", {"authorization": f"Bearer {GOOD}"}, None, True),
    ("forward-bad-host", "GET", "/v1/forward-auth/orgs", {**FORWARD, "host": "a b"}, None, False),
    ("validate-bad-host", "POST", "/v1/validate/jwt", {**JSON, "host": "x/y"}, VALIDATE, False),
    ("forward-unknown", "GET", "/v1/forward-auth/nope", FORWARD, None, False),
    ("forward-head", "HEAD", "/v1/forward-auth/orgs", FORWARD, None, False),
    ("forward-post", "POST", "/v1/forward-auth/orgs", FORWARD, None, False),
]


@pytest.fixture(scope="module", params=[[], [KEY]], ids=["open", "api-keys"])
def clients(request: Any) -> Any:
    served, plain, counting = _apps(request.param)
    with served, plain:
        yield served, plain, counting, bool(request.param)


def _send(client: TestClient[Any], method: str, path: str, headers: dict[str, str], body: Any) -> Any:
    content = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    response = client.request(method, path, headers=headers, content=content)
    # Litestar lists the methods of a 405's Allow header in no fixed order.
    kept = [(name, ", ".join(sorted(value.split(", "))) if name == "allow" else value)
            for name, value in response.headers.multi_items() if name != "x-request-id"]
    return response.status_code, kept, response.content


def _access_line(client: TestClient[Any]) -> dict[str, Any]:
    buffer = client.app.state.access_log
    (line,) = [json.loads(text) for text in buffer.getvalue().splitlines()]
    buffer.seek(0)
    buffer.truncate()
    return {name: value for name, value in line.items() if name not in ("request_id", "duration_ms", "timestamp")}


@pytest.mark.parametrize("name, method, path, headers, body, fast", CASES, ids=[case[0] for case in CASES])
@pytest.mark.parametrize("key", [None, KEY, "wrong"], ids=["no-key", "right-key", "wrong-key"])
def test_the_fast_path_answers_exactly_like_the_litestar_routes(clients, name, method, path, headers, body, fast,
                                                                key):
    served, plain, counting, keys_required = clients
    sent = {**headers, **({"x-api-key": key} if key else {})}
    before = counting.calls
    answered = _send(served, method, path, sent, body)
    assert answered == _send(plain, method, path, sent, body)
    assert _access_line(served) == _access_line(plain)  # the same route label, outcome and token id
    taken = counting.calls == before
    assert taken == (fast and (not keys_required or key == KEY)), answered[:2]


@pytest.mark.parametrize("api_keys", [[], [KEY]], ids=["open", "api-keys"])
@pytest.mark.parametrize("repeated", [(b"content-type", b"application/json"), (b"x-api-key", KEY.encode())],
                         ids=["content-type", "api-key"])
def test_a_repeated_header_goes_to_litestar_with_the_body_intact(api_keys, repeated):
    # Raw ASGI: HTTP clients merge repeated headers into one line before they reach the app.
    fast_path = create_app(Settings(api_keys=api_keys)).asgi_handler.app
    body = json.dumps(VALIDATE).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
               (b"x-api-key", KEY.encode()), repeated]
    received: list[Any] = []

    async def litestar(scope: Any, receive: Any, send: Any) -> None:
        received.extend([await receive(), await receive()])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    fast_path.app = litestar
    chunks = [{"type": "http.request", "body": body[:10], "more_body": True},
              {"type": "http.request", "body": body[10:], "more_body": False}, {"type": "http.disconnect"}]

    async def receive() -> Any:
        return chunks.pop(0)

    async def send(message: Any) -> None:
        pass

    scope = {"type": "http", "method": "POST", "path": "/v1/validate/jwt", "headers": headers}
    asyncio.run(fast_path(scope, receive, send))
    assert received[0]["body"] + received[1]["body"] == body  # the fast path read nothing, or replayed it


def test_a_body_read_by_the_fast_path_and_refused_reaches_litestar_whole():
    fast_path = create_app(Settings()).asgi_handler.app
    body = json.dumps({**VALIDATE, "extra": 1}).encode()
    received: list[Any] = []

    async def litestar(scope: Any, receive: Any, send: Any) -> None:
        while True:
            received.append(await receive())
            if not received[-1].get("more_body"):
                break

    fast_path.app = litestar
    chunks = [{"type": "http.request", "body": body[:10], "more_body": True},
              {"type": "http.request", "body": body[10:], "more_body": False}]

    async def receive() -> Any:
        return chunks.pop(0)

    scope = {"type": "http", "method": "POST", "path": "/v1/validate/jwt",
             "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]}
    asyncio.run(fast_path(scope, receive, None))
    assert b"".join(message["body"] for message in received) == body and not chunks


def _raw(app: Any, scope: Any, messages: list[Any]) -> list[Any]:
    """Call an ASGI app with `messages` to receive; what it sent."""
    sent: list[Any] = []

    async def receive() -> Any:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    async def run() -> None:
        async with app.lifespan():
            await app({"type": "http", "http_version": "1.1", "scheme": "http", "query_string": b"",
                       "root_path": "", "client": ("127.0.0.1", 5), "server": ("127.0.0.1", 8000), **scope}, receive,
                      send)
    asyncio.run(run())
    return sent


def test_a_body_longer_than_its_declared_length_and_the_limit_is_refused_413():
    app = create_app(Settings(max_body_bytes=4096))
    body = json.dumps({**VALIDATE, "token": "a" * 5000}).encode()
    sent = _raw(app, {"method": "POST", "path": "/v1/validate/jwt", "raw_path": b"/v1/validate/jwt",
                      "headers": [(b"content-type", b"application/json"), (b"content-length", b"10")]},
                [{"type": "http.request", "body": body, "more_body": False}])
    assert sent[0]["status"] == 413


def test_fast_path_response_header_names_are_lower_case_like_litestar():
    app = create_app(Settings(issuer_profiles_json=json.dumps({"test-issuer": rs256_policy()}),
                              authorizers_json=str(AUTHORIZERS), max_body_bytes=4096), clock=FixedClock())
    sent = _raw(app, {"method": "GET", "path": "/v1/forward-auth/orgs", "raw_path": b"/v1/forward-auth/orgs",
                      "headers": [(name.encode(), value.encode()) for name, value in FORWARD.items()]}, [])
    names = [name for name, _ in sent[0]["headers"]]
    assert sent[0]["status"] == 200 and b"x-user-id" in names and b"cache-control" in names
    assert names == [name.lower() for name in names]


def _answers(app: Any, scope: Any, messages: list[Any]) -> tuple[int, list[Any], bytes]:
    sent = _raw(app, scope, list(messages))
    headers = [header for header in sent[0]["headers"] if header[0] != b"x-request-id"]
    return sent[0]["status"], headers, b"".join(message.get("body", b"") for message in sent[1:])


def test_raw_requests_a_client_library_would_not_send_are_answered_as_litestar_answers_them():
    served, plain = _pair(issuer_profiles_json=json.dumps({"test-issuer": rs256_policy()}),
                          authorizers_json=str(AUTHORIZERS), max_body_bytes=4096)
    body = json.dumps(VALIDATE).encode()
    forward = [(name.encode(), value.encode()) for name, value in FORWARD.items()]
    cases = [
        # 4,300 digits would make int() raise; leading zeros are a small number to an HTTP parser.
        ({"method": "POST", "path": "/v1/validate/jwt", "raw_path": b"/v1/validate/jwt",
          "headers": [(b"content-type", b"application/json"), (b"content-length", b"0" * 5000 + b"%d" % len(body))]},
         [{"type": "http.request", "body": body, "more_body": False}]),
        ({"method": "GET", "path": "/v1/forward-auth/orgs", "raw_path": b"/v1/forward-auth/orgs",
          "headers": forward}, []),
        # A body in pieces, an empty one among them; then a client gone after the first piece.
        ({"method": "POST", "path": "/v1/validate/jwt", "raw_path": b"/v1/validate/jwt",
          "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]},
         [{"type": "http.request", "body": body[:7], "more_body": True},
          {"type": "http.request", "body": b"", "more_body": True},
          {"type": "http.request", "body": body[7:], "more_body": False}]),
        ({"method": "POST", "path": "/v1/validate/jwt", "raw_path": b"/v1/validate/jwt",
          "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]},
         [{"type": "http.request", "body": body[:7], "more_body": True}, {"type": "http.disconnect"}]),
    ]
    statuses = []
    for scope, messages in cases:
        answered = _answers(served, scope, messages)
        assert answered == _answers(plain, scope, messages)
        statuses.append(answered[0])
    assert statuses[2] == 200


def test_an_exception_in_a_hot_route_is_answered_500_as_litestar_answers_it_and_the_request_runs_once(monkeypatch,
                                                                                                       capsys):
    served, plain = _pair(authorizers_json=str(AUTHORIZERS),
                          issuer_profiles_json=json.dumps({"test-issuer": rs256_policy()}))
    calls = []

    async def broken(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        raise RuntimeError("a bug")

    for app in (served, plain):
        monkeypatch.setattr(app.state.verifier, "validate", broken)
    body = json.dumps(VALIDATE).encode()
    scopes = [({"method": "POST", "path": "/v1/validate/jwt", "raw_path": b"/v1/validate/jwt",
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]},
               [{"type": "http.request", "body": body, "more_body": False}]),
              ({"method": "GET", "path": "/v1/forward-auth/orgs", "raw_path": b"/v1/forward-auth/orgs",
                "headers": [(name.encode(), value.encode()) for name, value in FORWARD.items()]}, [])]
    scopes.append(({"method": "GET", "path": "/v1/forward-auth/orgs/private/report-4711",
                    "raw_path": b"/v1/forward-auth/orgs/private/report-4711",
                    "headers": [(b"authorization", f"Bearer {GOOD}".encode())]}, []))
    for scope, messages in scopes:
        calls.clear()
        capsys.readouterr()
        answered = _answers(served, scope, messages)
        assert len(calls) == 1  # not run again through Litestar
        assert answered[0] == 500 and answered == _answers(plain, scope, messages)
        output = capsys.readouterr().out
        logged = [json.loads(line) for line in output.splitlines() if '"unhandled_exception"' in line]
        assert len(logged) == 2 and logged[0]["route"] == logged[1]["route"] != "unmatched"
        assert all(line["error_type"] == "RuntimeError" and "path" not in line for line in logged)
        # Each error line names its request's id (found by a review: with several workers only pid and time did).
        requests = [json.loads(line) for line in output.splitlines() if '"event":"request"' in line]
        assert [line["request_id"] for line in logged] == [line["request_id"] for line in requests]
        # Where it was raised, to find the bug by: files and functions, innermost last, never the message.
        assert all(line["where"][-1].startswith("tests/test_fastpath.py:") and line["where"][-1].endswith(" in broken")
                   and any(frame.startswith("app/") for frame in line["where"]) for line in logged)
        assert "a bug" not in output
        assert "report-4711" not in output and GOOD not in output  # the protected URL and the token stay out


def test_a_scope_outside_ascii_is_left_out_of_a_forward_auth_challenge_both_ways():
    """It failed Latin-1 encoding (a 500) until sent as UTF-8; RFC 6750 section 3 allows printable ASCII only, so
    the challenge names no scope then (naming `read` alone would send the client for what is not enough)."""
    authorizers = {"scoped": {"issuer_profile_id": "test-issuer",
                              "rules": [{"effect": "allow", "requiredScopes": ["読む", "read"]}]}}
    served, plain = _pair(issuer_profiles_json=json.dumps({"test-issuer": rs256_policy()}),
                          authorizers_json=json.dumps(authorizers))
    scope = {"method": "GET", "path": "/v1/forward-auth/scoped", "raw_path": b"/v1/forward-auth/scoped",
             "headers": [(name.encode(), value.encode()) for name, value in FORWARD.items()]}
    answered = _answers(served, scope, [])
    assert answered[0] == 403 and answered == _answers(plain, scope, [])
    challenge = dict(answered[1])[b"www-authenticate"]
    assert challenge == b'Bearer realm="scoped", error="insufficient_scope"'


def test_without_raw_path_forward_auth_is_left_to_litestar_whose_router_normalises_the_path_first():
    # The rules would otherwise see `/admin/` where the Litestar route sees `/admin`: a deny rule would miss.
    authorizers = {"admin": {"issuer_profile_id": "test-issuer", "rules": [
        {"effect": "allow"}, {"id": "no-admin", "effect": "deny", "path": {"pattern": "^/admin$"}}]}}
    served, plain = _pair(issuer_profiles_json=json.dumps({"test-issuer": rs256_policy()}),
                          authorizers_json=json.dumps(authorizers))
    scope = {"method": "GET", "path": "/v1/forward-auth/admin/admin/",
             "headers": [(b"authorization", f"Bearer {GOOD}".encode())]}
    answered = _answers(served, scope, [])
    assert answered == _answers(plain, scope, [])
    assert answered[0] == 403 and b'"rule":"no-admin"' in answered[2]


def _post(path: str, body: bytes, **scope: Any) -> dict[str, Any]:
    return {"method": "POST", "path": path, "raw_path": path.encode(), **scope,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]}


def test_a_final_message_without_its_optional_body_is_read_as_empty_on_every_route():
    """Found by a review: ASGI makes `body` optional (b""), Litestar reads `message["body"]`, and a body the fast
    path handed on (or any other POST route) was answered 500."""
    served, _ = _pair(issuer_profiles_json=json.dumps({"test-issuer": rs256_policy()}))
    for path, document, status in (("/v1/validate/jwt", VALIDATE, 200),
                                   ("/v1/validate/jwt", {**VALIDATE, "extra": 1}, 422),
                                   ("/v1/inspect/token", {"token": GOOD}, 200)):
        body = json.dumps(document).encode()
        answered = _answers(served, _post(path, body), [{"type": "http.request", "body": body, "more_body": True},
                                                        {"type": "http.request"}])
        assert answered[0] == status, (path, answered)


@pytest.mark.parametrize("depth", [65, 100, 980, 5000])
def test_a_body_nested_deeper_than_64_levels_is_refused_the_same_way_on_both_paths(depth):
    """Found by a review: the decoders' own bound is the interpreter's recursion limit, which depends on how deep
    the call stack already is, so the fast path took bodies nested ~980 deep that Litestar's path refused."""
    served, plain = _pair()
    policy = rs256_policy(required_custom_claims={"zz": "DEEP"})
    body = json.dumps({"token": GOOD, "policy": policy}).encode().replace(b'"DEEP"', b"[" * depth + b"]" * depth)
    scope, messages = _post("/v1/validate/jwt", body), [{"type": "http.request", "body": body}]
    answered = _answers(served, scope, messages)
    assert answered[0] == 422 and answered == _answers(plain, scope, messages)
    assert b"nested deeper than 64 levels" in answered[2]
    shallow = body.replace(b"[" * depth + b"]" * depth, b"[" * 60 + b"]" * 60)
    assert _answers(served, _post("/v1/validate/jwt", shallow), [{"type": "http.request", "body": shallow}])[0] == 200


def test_under_a_root_path_the_fast_path_routes_as_litestar_does():
    """Found by a review: the fast path compared the path with its root path in it, so it answered a path the
    router does not serve, and forward-auth read the original path from a raw path that holds the root path."""
    served, plain = _pair(issuer_profiles_json=json.dumps({"test-issuer": rs256_policy()}),
                          authorizers_json=str(AUTHORIZERS))
    body = json.dumps(VALIDATE).encode()
    messages = [{"type": "http.request", "body": body}]
    mounted = _answers(served, _post("/jwt/v1/validate/jwt", body, root_path="/jwt"), messages)
    assert mounted[0] == 200 and mounted == _answers(plain, _post("/jwt/v1/validate/jwt", body, root_path="/jwt"),
                                                     messages)
    stripped = _answers(served, _post("/v1/validate/jwt", body, root_path="/v1"), messages)
    assert stripped[0] == 404 and stripped == _answers(plain, _post("/v1/validate/jwt", body, root_path="/v1"),
                                                       messages)
    target = "/auth/v1/forward-auth/orgs/v1/organisations/acme/reports"
    scope = {"method": "GET", "path": target, "raw_path": target.encode(), "root_path": "/auth",
             "headers": [(b"authorization", f"Bearer {GOOD}".encode())]}
    answered = _answers(served, scope, [])
    assert answered[0] == 200 and answered == _answers(plain, scope, [])


def test_an_empty_method_on_forward_auth_is_decided_the_same_on_both_paths():
    """Found by a review: the fast path decided an empty method as itself, the Litestar path as GET (an allow)."""
    served, _ = _pair(issuer_profiles_json=json.dumps({"test-issuer": rs256_policy()}),
                      authorizers_json=str(AUTHORIZERS))
    headers = [(b"authorization", f"Bearer {GOOD}".encode()), (b"x-forwarded-uri", b"/v1/organisations/acme")]
    scope = {"method": "", "path": "/v1/forward-auth/orgs", "raw_path": b"/v1/forward-auth/orgs", "headers": headers}
    fast = _answers(served, scope, [])
    # A repeated header sends the request to Litestar's route (FastPath._headers).
    handed = _answers(served, {**scope, "headers": [*headers, (b"content-length", b"0"), (b"content-length", b"0")]},
                      [])
    assert fast[0] == handed[0] == 403 and fast[2] == handed[2]


def test_more_raw_requests_are_answered_as_litestar_answers_them():
    """Requests found by mutation testing where a change to the fast path answered otherwise than Litestar: a key
    that is not Latin-1 text, two Host lines, a body going on after a whole JSON document, a client leaving
    after one, a path holding its root path twice, a repeated or non-numeric Content-Length, lone surrogates
    outside `token`, an upper-case surrogate escape in it."""
    served, plain = _pair(issuer_profiles_json=json.dumps({"test-issuer": rs256_policy()}),
                          authorizers_json=str(AUTHORIZERS), api_keys=[KEY])
    body = json.dumps(VALIDATE).encode()
    keyed = [(b"x-api-key", KEY.encode()), (b"content-type", b"application/json")]
    length = (b"content-length", b"%d" % len(body))
    whole = [{"type": "http.request", "body": body}]

    def post(path: str, headers: list[Any], **scope: Any) -> dict[str, Any]:
        return {"method": "POST", "path": path, "raw_path": path.encode(), "headers": headers, **scope}

    def surrogate(document: dict[str, Any], where: bytes) -> list[Any]:
        text = json.dumps(document).encode().replace(where, where[:-1] + b"\\ud800" + where[-1:])
        return [{"type": "http.request", "body": text}]

    policy_body = {**VALIDATE, "policy": rs256_policy(audiences=["aud-X"])}
    decide_body = {**DECIDE, "request": {**DECIDE["request"], "headers": {"x-a": "v"}}}
    cases = {
        "key not Latin-1 text": (post("/v1/validate/jwt", [(b"x-api-key", b"\xff"), keyed[1], length]), whole, 401),
        "forward-auth key not Latin-1 text": ({"method": "GET", "path": "/v1/forward-auth/orgs",
                                               "raw_path": b"/v1/forward-auth/orgs",
                                               "headers": [(b"x-api-key", b"\xff")]}, [], 401),
        "two Host lines": (post("/v1/validate/jwt", [(b"host", b"a b"), (b"host", b"x"), *keyed, length]), whole,
                           400),
        "more after the document": (post("/v1/validate/jwt", [*keyed, (b"content-length", b"%d" % (len(body) + 3))]),
                                    [{"type": "http.request", "body": body, "more_body": True},
                                     {"type": "http.request", "body": b"xyz"}], 422),
        "gone after the document": (post("/v1/validate/jwt", [*keyed, (b"content-length", b"%d" % (len(body) + 3))]),
                                    [{"type": "http.request", "body": body, "more_body": True},
                                     {"type": "http.disconnect"}], 400),
        "root path twice": (post("/x/v1/validate/jwt/x", [*keyed, length], root_path="/x"), whole, 404),
        "two lengths": (post("/v1/validate/jwt", [*keyed, (b"content-length", b"99999"), length]), whole, None),
        "length not a number": (post("/v1/validate/jwt", [*keyed, (b"content-length", b"abc")]), whole, None),
        "surrogate in a policy": (post("/v1/validate/jwt", [*keyed]), surrogate(policy_body, b'"aud-X"'), 422),
        "surrogate in a member name": (post("/v1/authorize", [*keyed]), surrogate(decide_body, b'"x-a"'), 422),
    }
    upper = json.dumps(VALIDATE).replace(json.dumps(GOOD), '"\\uD800"').encode()
    cases["upper-case surrogate escape in the token"] = (post("/v1/validate/jwt", [*keyed]),
                                                         [{"type": "http.request", "body": upper}], 200)
    for name, (scope, messages, status) in cases.items():
        answered = _answers(served, scope, messages)
        assert answered == _answers(plain, scope, messages), name
        assert status is None or answered[0] == status, (name, answered)
        if status == 200:
            assert json.loads(answered[2])["findings"][0]["code"] == "MALFORMED_TOKEN"


@pytest.mark.parametrize("content_type, status", [
    (b"Application/JSON", 200), (b"application/json; Charset=UTF-8", 200), (b"application/json; Charset=latin-1", 415),
    (b"application/json; charset=latin-1", 415)])
def test_a_json_content_type_and_its_charset_are_read_without_regard_to_case(content_type, status):
    """RFC 9110 8.3.1: type, subtype and parameter names are case-insensitive; JSON is UTF-8 (RFC 8259 8.1)."""
    served, _ = _pair()
    body = json.dumps({"token": GOOD}).encode()
    scope = {"method": "POST", "path": "/v1/inspect/token", "raw_path": b"/v1/inspect/token",
             "headers": [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]}
    assert _answers(served, scope, [{"type": "http.request", "body": body}])[0] == status


def test_a_head_answer_carries_no_content_and_its_length_is_the_gets():
    served, _ = _pair()
    head = _answers(served, {"method": "HEAD", "path": "/healthz", "raw_path": b"/healthz", "headers": []}, [])
    get = _answers(served, {"method": "GET", "path": "/healthz", "raw_path": b"/healthz", "headers": []}, [])
    assert head[0] == get[0] == 200 and head[2] == b"" and get[2]
    assert dict(head[1])[b"content-length"] == b"%d" % len(get[2])


def test_body_deadlines_forget_every_read_once_it_is_over_and_let_a_cancellation_not_theirs_through():
    """A finished read leaves the watcher's table (it grew by one entry a POST, and a handler outliving the body's
    deadline was cancelled); a read cancelled by anything but the watcher (a server shutting down) is cancelled,
    not turned into a client that left."""
    from app.api.fastpath import BodyDeadlines

    async def scenario() -> None:
        deadlines = BodyDeadlines(10.0)
        scope: dict[str, Any] = {}

        async def one() -> Any:
            return {"type": "http.request", "body": b"{}"}

        assert (await deadlines.receive(one, scope)())["body"] == b"{}"
        assert deadlines.reading == {}
        never = asyncio.Event()

        async def waits() -> Any:
            await never.wait()

        task = asyncio.ensure_future(deadlines.receive(waits, scope)())
        await asyncio.sleep(0)
        assert len(deadlines.reading) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert deadlines.reading == {}

    asyncio.run(scenario())
