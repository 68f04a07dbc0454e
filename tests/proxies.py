"""What the real-proxy tests share: the README's recipes read from their marked blocks, a local application
behind the proxy that remembers what reached it, processes started and stopped, and live tokens."""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from app.server import ROOT
from tests.conftest import claims
from tests.mint import key_for, mint

DOC = ROOT / "README.md"
ORG = "https://myapp.com/org_id"


def doc_block(name: str) -> str:
    """The fenced code between `<!-- name-begin -->` and `<!-- name-end -->` in README.md."""
    text = DOC.read_text()
    match = re.search(rf"<!-- {name}-begin -->\s*```[a-z]*\n(.*?)```\s*<!-- {name}-end -->", text, re.S)
    assert match, f"README.md has no {name} block"
    return match.group(1)


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"process exited with {process.returncode}: {log.read_text()[-2000:] if log.exists() else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"nothing listens on {port}: {log.read_text()[-2000:] if log.exists() else ''}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass
class Upstream:
    """The application behind the proxy: answers 200 with the headers it received, and remembers each request."""

    seen: list[dict[str, Any]] = field(default_factory=list)

    def start(self) -> int:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                received = {"method": self.command, "path": self.path,
                            "headers": {name.lower(): value for name, value in self.headers.items()}}
                upstream.seen.append(received)
                body = json.dumps(received).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_DELETE = do_GET  # noqa: N815

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self.httpd.server_address[1]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def live_token(**overrides: Any) -> str:
    """A token valid now: the service runs on the real clock."""
    now = int(time.time())
    return mint(claims(iat=now - 10, exp=now + 3600, **overrides), key_for("RS256"))


def raw_get(base: str, target: str, bearer: str) -> int:
    """Send the target byte for byte (HTTP clients normalise dot segments away)."""
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.putrequest("GET", target, skip_accept_encoding=True)
        connection.putheader("Authorization", f"Bearer {bearer}")
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()
