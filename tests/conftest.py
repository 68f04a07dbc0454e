"""Shared fixtures: a fixed clock, the app under test, and tokens minted independently of the code under test."""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from app.server import create_app
from app.settings import Settings
from tests.mint import mint, key_for

NOW = 1_700_000_000  # 2023-11-14T22:13:20Z: every test passes its own `now`
ISSUER = "https://issuer.example.com/"
AUDIENCE = "https://api.example.com"


_connect = socket.socket.connect


def _loopback_only(sock: socket.socket, address: Any) -> Any:
    """Tests never reach beyond 127.0.0.1: any other destination fails loudly, in every test of this process."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        if host != "localhost" and not ipaddress.ip_address(host.split("%")[0]).is_loopback:
            raise ConnectionRefusedError(f"test tried to connect to {host}: only loopback is allowed")
    return _connect(sock, address)


socket.socket.connect = _loopback_only  # type: ignore[method-assign]


class FixedClock:
    """A clock tests move by hand."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def settings() -> Settings:
    return Settings()


@pytest.fixture
def client(settings: Settings, clock: FixedClock) -> Iterator[TestClient[Any]]:
    with TestClient(create_app(settings, clock=clock), raise_server_exceptions=False) as test_client:
        yield test_client


def claims(**overrides: Any) -> dict[str, Any]:
    """A valid claim set for ISSUER/AUDIENCE at NOW, with overrides (None removes a claim)."""
    base: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-42", "iat": NOW - 10, "exp": NOW + 3600}
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def rs256_policy(**overrides: Any) -> dict[str, Any]:
    policy: dict[str, Any] = {"issuer": ISSUER, "audiences": [AUDIENCE], "allowed_algs": ["RS256"],
                              "public_key": key_for("RS256").public_pem}
    policy.update(overrides)
    return policy


def rs256_token(**claim_overrides: Any) -> str:
    return mint(claims(**claim_overrides), key_for("RS256"))


def require_binary(name: str) -> str:
    """The path of a Debian-packaged server the test needs; skipped locally when missing, fatal under CI."""
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)),
                                      None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required under CI (.ci/run installs it)")
        pytest.skip(f"{name} is not installed (python3 .ci/dev.py system-deps installs it)")
    return path


@pytest.fixture(autouse=True)
def _logs_go_to_the_current_stdout() -> Iterator[None]:
    """create_app binds the log sink to sys.stdout as it is then: after a test whose capsys replaced it (and
    closed it at the end), later tests' background fetches would write to a closed file."""
    yield
    from app.observability import configure_logging

    configure_logging()
