"""A real Caddy with `forward_auth` in front of a local upstream, asking the real service (`python -m app`): the
Caddyfile and the authorizers document are read from README.md, so the documented recipe is the one that runs."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import claims, require_binary, rs256_policy
from tests.mint import key_for, mint
from tests.proxies import ORG, Upstream, doc_block, free_port, live_token, raw_get, stop, wait_for_port
from tests.service import Service

pytestmark = pytest.mark.caddy


def caddyfile(snippet: str, listen: int, service: int, app: int) -> str:
    """The documented site block on 127.0.0.1 only, with the admin endpoint and automatic HTTPS off."""
    site = (snippet.replace(":80 {", f"http://127.0.0.1:{listen} {{\n\tbind 127.0.0.1", 1)
            .replace("127.0.0.1:8000", f"127.0.0.1:{service}").replace("127.0.0.1:8080", f"127.0.0.1:{app}"))
    assert site.count(f"127.0.0.1:{service}") == 1 and site.count(f"127.0.0.1:{app}") == 1
    return "{\n\tadmin off\n\tauto_https off\n}\n\n" + site


@dataclass
class Stack:
    base: str
    upstream: Upstream
    service: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    caddy = require_binary("caddy")
    directory = tmp_path_factory.mktemp("caddy")
    upstream = Upstream()
    app_port = upstream.start()
    authorizers = directory / "authorizers.json"
    authorizers.write_text(doc_block("authorizers"))
    service = Service({"HOST": "127.0.0.1", "AUTHORIZERS_JSON": str(authorizers), "LOG_LEVEL": "WARNING",
                       "ISSUER_PROFILES_JSON": json.dumps({"my-idp": rs256_policy()})})
    proxy = None
    try:
        listen = free_port()
        config = directory / "Caddyfile"
        config.write_text(caddyfile(doc_block("caddy"), listen, service.port, app_port))
        # Caddy keeps state under $HOME and the XDG directories: all of them in the test's directory.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(directory),
               "XDG_DATA_HOME": str(directory / "data"), "XDG_CONFIG_HOME": str(directory / "config")}
        log = directory / "caddy.log"
        with open(log, "wb") as output:
            proxy = subprocess.Popen([caddy, "run", "--config", str(config), "--adapter", "caddyfile"], env=env,
                                     stdout=output, stderr=subprocess.STDOUT)
        wait_for_port(listen, proxy, log)
        yield Stack(f"http://127.0.0.1:{listen}", upstream, service.base)
    finally:
        if proxy is not None:
            stop(proxy)
        service.stop()
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
        "X-Forwarded-Method": "GET", "X-Original-URI": "/v1/organisations/acme"})
    assert spoofed.status_code == 403


def test_a_claim_the_token_lacks_never_lets_the_client_value_through(stack):
    """`copy_headers` sets only what the answer has (Caddy 2.6, Debian's, sets the unresolved placeholder
    instead): a token without `sub` gets no X-User-Id from the service, and the client's own is never passed on."""
    now = int(time.time())
    token = mint(claims(iat=now - 10, exp=now + 3600, sub=None, **{ORG: "acme"}), key_for("RS256"))
    response = httpx.get(f"{stack.base}/v1/organisations/acme", headers={
        "Authorization": f"Bearer {token}", "X-Org-Id": "evil", "X-User-Id": "admin"})
    assert response.status_code == 200
    received = response.json()["headers"]
    assert received["x-org-id"] == "acme"
    assert received.get("x-user-id") in (None, "{http.reverse_proxy.header.X-User-Id}")


def test_another_organisation_is_403_and_never_reaches_the_upstream(stack):
    before = len(stack.upstream.seen)
    response = httpx.get(f"{stack.base}/v1/organisations/evil",
                         headers={"Authorization": f"Bearer {live_token(**{ORG: 'acme'})}"})
    assert response.status_code == 403
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="api", error="insufficient_scope"')
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
    ("/v1/organisations/acme%2Fevil", 400),  # Caddy hands the service's refusal to the client as it is
], ids=["dot-dot", "encoded-dot-dot", "slashes-and-dot", "encoded-slash"])
def test_raw_targets_are_normalised_or_refused_by_the_service(stack, target, status):
    before = len(stack.upstream.seen)
    assert raw_get(stack.base, target, live_token(**{ORG: "acme"})) == status
    assert len(stack.upstream.seen) == before + (1 if status == 200 else 0)


def test_exhausted_rate_limit_is_403_with_retry_after_passed_on_by_caddy(stack):
    bearer = live_token(**{ORG: "acme"}, sub="busy-user")
    url, headers = f"{stack.base}/v1/organisations/acme", {"Authorization": f"Bearer {bearer}"}
    with httpx.Client() as client:
        statuses = [client.get(url, headers=headers).status_code for _ in range(121)]
        assert statuses == [200] * 120 + [403]
        refused = client.get(url, headers=headers)
        other_user = client.get(url, headers={"Authorization": f"Bearer {live_token(**{ORG: 'acme'}, sub='calm')}"})
    assert refused.status_code == 403 and 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert other_user.status_code == 200 and "Retry-After" not in other_user.headers
