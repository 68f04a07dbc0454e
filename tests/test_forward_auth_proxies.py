"""Real proxies in front of a local upstream, asking the real service (`python -m app`): nginx with
`auth_request` and Caddy with `forward_auth`. Their configurations and the authorizers document are read from
README.md, so the documented recipes are the ones that run; every test runs behind both proxies."""

from __future__ import annotations

import grp
import json
import os
import pwd
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.settings import Settings
from tests.conftest import claims, require_binary, rs256_policy
from tests.mint import key_for, mint
from tests.proxies import ORG, Upstream, doc_block, live_token, raw_get, stop, wait_for_port
from tests.service import Service, free_port


@dataclass
class Backend:
    """The service and the application both proxies stand in front of (one of each for the module)."""

    service: Service
    upstream: Upstream
    app_port: int


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    directory = tmp_path_factory.mktemp("backend")
    authorizers = directory / "authorizers.json"
    authorizers.write_text(doc_block("authorizers"))
    upstream = Upstream()
    app_port = upstream.start()
    try:
        service = Service({"HOST": "127.0.0.1", "AUTHORIZERS_JSON": str(authorizers), "LOG_LEVEL": "WARNING",
                           "ISSUER_PROFILES_JSON": json.dumps({"my-idp": rs256_policy()})})
    except RuntimeError:
        upstream.stop()
        raise
    try:
        yield Backend(service, upstream, app_port)
    finally:
        service.stop()
        upstream.stop()


def nginx_conf(directory: Path, snippet: str, listen: int, service: int, app: int) -> str:
    """The documented block inside a main configuration that keeps every file in `directory`."""
    server_block = (snippet.replace("listen 127.0.0.1:80;", f"listen 127.0.0.1:{listen};")
                    .replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{service};")
                    .replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{app};"))
    assert server_block.count(f":{listen};") == 1 and server_block.count(f":{service};") == 1
    user = ""
    if os.geteuid() == 0:  # workers would otherwise run as nobody, unable to use the temp directories
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"
    temp = "\n".join(f"    {kind}_temp_path {directory / kind};" for kind in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""daemon off;
worker_processes 1;
{user}
pid {directory / 'nginx.pid'};
error_log {directory / 'error.log'} warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
{temp}
{server_block}
}}
"""


def caddyfile(snippet: str, listen: int, service: int, app: int) -> str:
    """The documented site block on 127.0.0.1 only, with the admin endpoint and automatic HTTPS off."""
    site = (snippet.replace(":80 {", f"http://127.0.0.1:{listen} {{\n\tbind 127.0.0.1", 1)
            .replace("127.0.0.1:8000", f"127.0.0.1:{service}").replace("127.0.0.1:8080", f"127.0.0.1:{app}"))
    assert site.count(f"127.0.0.1:{service}") == 1 and site.count(f"127.0.0.1:{app}") == 1
    return "{\n\tadmin off\n\tauto_https off\n}\n\n" + site


def start_nginx(directory: Path, listen: int, backend: Backend) -> tuple[subprocess.Popen[bytes], Path]:
    nginx = require_binary("nginx")
    conf = directory / "nginx.conf"
    conf.write_text(nginx_conf(directory, doc_block("nginx"), listen, backend.service.port, backend.app_port))
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (directory / kind).mkdir()
    args = ["-p", str(directory), "-c", str(conf), "-e", str(directory / "error.log")]
    check = subprocess.run([nginx, "-t", *args], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    return subprocess.Popen([nginx, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), \
        directory / "error.log"


def start_caddy(directory: Path, listen: int, backend: Backend) -> tuple[subprocess.Popen[bytes], Path]:
    caddy = require_binary("caddy")
    config = directory / "Caddyfile"
    config.write_text(caddyfile(doc_block("caddy"), listen, backend.service.port, backend.app_port))
    # Caddy keeps state under $HOME and the XDG directories: all of them in the test's directory.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(directory),
           "XDG_DATA_HOME": str(directory / "data"), "XDG_CONFIG_HOME": str(directory / "config")}
    log = directory / "caddy.log"
    with open(log, "wb") as output:
        process = subprocess.Popen([caddy, "run", "--config", str(config), "--adapter", "caddyfile"], env=env,
                                   stdout=output, stderr=subprocess.STDOUT)
    return process, log


@dataclass
class Stack:
    name: str
    base: str
    upstream: Upstream
    refused_status: int  # what the client gets when the service answers 400 (nginx reports any refusal as 500)


@pytest.fixture(scope="module", params=[pytest.param("nginx", marks=pytest.mark.nginx),
                                        pytest.param("caddy", marks=pytest.mark.caddy)])
def stack(request: pytest.FixtureRequest, backend: Backend, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Stack]:
    name = request.param
    listen = free_port()
    start = start_nginx if name == "nginx" else start_caddy
    process, log = start(tmp_path_factory.mktemp(name), listen, backend)
    try:
        wait_for_port(listen, process, log)
        yield Stack(name, f"http://127.0.0.1:{listen}", backend.upstream, 500 if name == "nginx" else 400)
    finally:
        stop(process)


def test_allowed_request_reaches_the_upstream_with_x_user_id_from_the_token(stack):
    before = len(stack.upstream.seen)
    response = httpx.get(f"{stack.base}/v1/organisations/acme/reports?page=2",
                         headers={"Authorization": f"Bearer {live_token(**{ORG: 'acme'})}"})
    assert response.status_code == 200
    received = response.json()
    assert received["path"] == "/v1/organisations/acme/reports?page=2"
    assert received["headers"]["x-user-id"] == "user-42" and received["headers"]["x-org-id"] == "acme"
    assert len(stack.upstream.seen) == before + 1


def test_a_client_can_neither_set_x_user_id_nor_choose_the_authorized_uri(stack):
    response = httpx.get(f"{stack.base}/v1/organisations/acme", headers={
        "Authorization": f"Bearer {live_token(**{ORG: 'acme'}, sub='real-user')}", "X-User-Id": "admin"})
    assert response.status_code == 200 and response.json()["headers"]["x-user-id"] == "real-user"
    spoofed = httpx.get(f"{stack.base}/v1/organisations/evil", headers={
        "Authorization": f"Bearer {live_token(**{ORG: 'acme'})}", "X-Forwarded-Uri": "/v1/organisations/acme",
        "X-Forwarded-Method": "GET", "X-Original-URI": "/v1/organisations/acme"})
    assert spoofed.status_code == 403


def test_a_claim_the_token_lacks_never_lets_the_client_value_through(stack):
    """The service sends no X-User-Id for a token without `sub`; the client's own must not reach the application
    in its place (nginx sends none; Caddy 2.6, Debian's, its unresolved placeholder, later versions none)."""
    response = httpx.get(f"{stack.base}/v1/organisations/acme", headers={
        "Authorization": f"Bearer {live_token(sub=None, **{ORG: 'acme'})}", "X-Org-Id": "evil", "X-User-Id": "admin"})
    assert response.status_code == 200
    received = response.json()["headers"]
    assert received["x-org-id"] == "acme"
    assert received.get("x-user-id") in (None, "{http.reverse_proxy.header.X-User-Id}")


def test_an_underscore_spelling_of_an_identity_header_never_reaches_the_upstream(stack):
    """A WSGI or CGI application reads `X_User_Id` as `X-User-Id` (both are HTTP_X_USER_ID), and Caddy's
    `request_header -X-User-Id` removed only the dashed spelling (found by a review; nginx drops header names with
    underscores by default)."""
    response = httpx.get(f"{stack.base}/v1/organisations/acme", headers=[
        ("Authorization", f"Bearer {live_token(**{ORG: 'acme'}, sub='real-user')}"), ("X_User_Id", "admin"),
        ("X-User_Id", "admin2"), ("x_user-id", "admin3"), ("X_Org_Id", "evil"), ("x-org_id", "evil2")])
    assert response.status_code == 200
    received = response.json()["headers"]
    spelled = {name: value for name, value in received.items() if name.replace("_", "-") in ("x-user-id", "x-org-id")}
    assert spelled == {"x-user-id": "real-user", "x-org-id": "acme"}


def _underscore_spellings(header: str) -> set[str]:
    """`X-User-Id` -> X_User_Id, X-User_Id, X_User-Id: what WSGI and CGI servers read as the same header."""
    parts = header.split("-")
    spellings = {parts[0]}
    for part in parts[1:]:
        spellings = {f"{done}{separator}{part}" for done in spellings for separator in "-_"}
    return spellings - {header}


def test_the_traefik_and_envoy_recipes_carry_the_authorizers_headers_and_refuse_their_underscore_spellings():
    """Neither proxy is packaged for the suite: their recipes are read here, so that they cannot drift from the
    authorizer they serve (its claims_to_headers) or lose what keeps a client's own identity headers out."""
    import yaml

    headers = list(json.loads(doc_block("authorizers"))["api"]["claims_to_headers"].values())
    traefik = yaml.safe_load(doc_block("traefik"))["http"]
    forward = traefik["middlewares"]["jwt-authz"]["forwardAuth"]
    assert forward["address"].endswith("/v1/forward-auth/api") and forward["trustForwardHeader"] is False
    assert forward["authResponseHeaders"] == headers
    stripped = traefik["middlewares"]["strip-identity"]["headers"]["customRequestHeaders"]
    assert stripped == {spelling: "" for header in headers for spelling in _underscore_spellings(header)}
    assert traefik["routers"]["app"]["middlewares"] == ["strip-identity", "jwt-authz"]
    envoy = yaml.safe_load(doc_block("envoy"))
    assert envoy["common_http_protocol_options"]["headers_with_underscores_action"] == "REJECT_REQUEST"
    service = envoy["http_filters"][0]["typed_config"]["http_service"]
    assert service["path_prefix"] == "/v1/forward-auth/api"
    upstream = service["authorization_response"]["allowed_upstream_headers"]["patterns"]
    assert upstream == [{"exact": header.lower()} for header in headers]
    options = envoy["clusters"][0]["typed_extension_protocol_options"]
    idle = options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["common_http_protocol_options"]
    assert envoy["clusters"][0]["name"] == service["server_uri"]["cluster"]
    assert float(idle["idle_timeout"].removesuffix("s")) < Settings().read_timeout_seconds  # closed by us first


def test_another_organisation_is_403_and_never_reaches_the_upstream(stack):
    before = len(stack.upstream.seen)
    response = httpx.get(f"{stack.base}/v1/organisations/evil",
                         headers={"Authorization": f"Bearer {live_token(**{ORG: 'acme'})}"})
    assert response.status_code == 403
    assert len(stack.upstream.seen) == before


def test_missing_token_is_401_with_the_bearer_challenge(stack):
    response = httpx.get(f"{stack.base}/v1/organisations/acme")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'


def test_bad_token_is_401_invalid_token(stack):
    now = int(time.time())
    expired = mint(claims(iat=now - 7200, exp=now - 3600, **{ORG: "acme"}), key_for("RS256"))
    response = httpx.get(f"{stack.base}/v1/organisations/acme", headers={"Authorization": f"Bearer {expired}"})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


@pytest.mark.parametrize("target, status", [
    ("/v1/organisations/acme/../evil", 403),
    ("/v1/organisations/acme/%2e%2e/evil", 403),
    ("/v1/organisations//acme/./reports", 200),
    ("/v1/organisations/evil/../acme", 403),  # an upstream routing it as sent would serve evil's subtree
    ("/v1/organisations/acme%2Fevil", None),  # the service's 400, as the proxy reports a refusal
    # Both proxies forward a raw `#` in X-Forwarded-Uri and the upstream reads a fragment from it: `?debug#=1`
    # got past a deny on `debug` (found by a review).
    ("/v1/organisations/acme/reports?debug#=1", None),
], ids=["dot-dot", "encoded-dot-dot", "slashes-and-dot", "dots-into-own-org", "encoded-slash", "raw-hash-in-query"])
def test_raw_targets_are_normalised_or_refused_by_the_service(stack, target, status):
    before = len(stack.upstream.seen)
    expected = stack.refused_status if status is None else status
    assert raw_get(stack.base, target, live_token(**{ORG: "acme"})) == expected
    assert len(stack.upstream.seen) == before + (1 if expected == 200 else 0)


def test_exhausted_rate_limit_is_403_with_retry_after_passed_on_by_the_proxy(stack):
    # One service behind both proxies: each proxy's run has its own user, so its own budget.
    bearer = live_token(**{ORG: "acme"}, sub=f"busy-user-{stack.name}")
    url, headers = f"{stack.base}/v1/organisations/acme", {"Authorization": f"Bearer {bearer}"}
    with httpx.Client() as client:
        statuses = [client.get(url, headers=headers).status_code for _ in range(121)]
        assert statuses == [200] * 120 + [403]
        refused = client.get(url, headers=headers)
        other_user = client.get(url, headers={"Authorization": f"Bearer {live_token(**{ORG: 'acme'}, sub='calm')}"})
    assert refused.status_code == 403 and 1 <= int(refused.headers["Retry-After"]) <= 60
    assert other_user.status_code == 200 and "Retry-After" not in other_user.headers


@pytest.mark.parametrize("target, status", [
    ("/v1/organisations/acme/reports?page=2", 200),
    ("/v1/organisations/evil?org=acme", 403),
    ("/v1/organisations/acme/%2e%2e/evil", 403),
    ("/v1/organisations/acme%2Fevil", 400),
], ids=["own-org", "other-org", "encoded-dot-dot", "encoded-slash"])
def test_envoy_style_path_prefix_on_the_real_server(backend, target, status):
    """Envoy ext_authz calls path_prefix + the original target: the raw path as the ASGI server hands it over."""
    bearer = live_token(**{ORG: "acme"})
    assert raw_get(backend.service.base, "/v1/forward-auth/api" + target, bearer) == status
