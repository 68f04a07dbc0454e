"""A real nginx with `auth_request` in front of a local upstream, asking the real service (`python -m app`): the
nginx block and the authorizers document are read from README.md, so the documented recipe is the
one that runs."""

from __future__ import annotations

import grp
import json
import os
import pwd
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.server import ROOT
from tests.conftest import claims, require_binary, rs256_policy
from tests.mint import key_for, mint
from tests.proxies import ORG, Upstream, doc_block, free_port, live_token, raw_get, stop, wait_for_port

pytestmark = pytest.mark.nginx


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


@dataclass
class Stack:
    base: str
    upstream: Upstream
    service: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    nginx = require_binary("nginx")
    directory = tmp_path_factory.mktemp("nginx")
    upstream = Upstream()
    app_port = upstream.start()
    service_port, listen_port = free_port(), free_port()
    authorizers = directory / "authorizers.json"
    authorizers.write_text(doc_block("authorizers"))
    service_log = directory / "service.log"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOST": "127.0.0.1", "PORT": str(service_port),
           "AUTHORIZERS_JSON": str(authorizers), "ISSUER_PROFILES_JSON": json.dumps({"my-idp": rs256_policy()}),
           "LOG_LEVEL": "WARNING"}
    with open(service_log, "wb") as log:
        service = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    processes = [service]
    try:
        wait_for_port(service_port, service, service_log)
        conf = directory / "nginx.conf"
        conf.write_text(nginx_conf(directory, doc_block("nginx"), listen_port, service_port, app_port))
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (directory / kind).mkdir()
        check = subprocess.run([nginx, "-t", "-p", str(directory), "-c", str(conf), "-e", str(directory / "error.log")],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        proxy = subprocess.Popen([nginx, "-p", str(directory), "-c", str(conf), "-e", str(directory / "error.log")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(proxy)
        wait_for_port(listen_port, proxy, directory / "error.log")
        yield Stack(f"http://127.0.0.1:{listen_port}", upstream, f"http://127.0.0.1:{service_port}")
    finally:
        for process in reversed(processes):
            stop(process)
        upstream.stop()


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
        "X-Original-URI": "/v1/organisations/acme"})
    assert spoofed.status_code == 403


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
    ("/v1/organisations/acme%2Fevil", 500),  # the service's 400, as nginx reports any non-401/403 refusal
], ids=["dot-dot", "encoded-dot-dot", "slashes-and-dot", "encoded-slash"])
def test_raw_targets_are_normalised_or_refused_by_the_service(stack, target, status):
    before = len(stack.upstream.seen)
    assert raw_get(stack.base, target, live_token(**{ORG: "acme"})) == status
    assert len(stack.upstream.seen) == before + (1 if status == 200 else 0)


def test_exhausted_rate_limit_is_403_with_retry_after_passed_on_by_nginx(stack):
    bearer = live_token(**{ORG: "acme"}, sub="busy-user")
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
def test_envoy_style_path_prefix_on_the_real_server(stack, target, status):
    """Envoy ext_authz calls path_prefix + the original target: the raw path as the ASGI server hands it over."""
    bearer = live_token(**{ORG: "acme"})
    assert raw_get(stack.service, "/v1/forward-auth/api" + target, bearer) == status
