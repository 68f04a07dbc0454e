"""A real HTTP key server on 127.0.0.1 for tests: serves JWK Sets and discovery documents, and misbehaves on
request (500, slow, huge, not JSON, cross-host redirect, gzip whatever was asked, a gzip bomb, down) while
counting what it was asked."""

from __future__ import annotations

import datetime
import gzip
import ipaddress
import json
import select
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


# A host name that is not this machine's to the service (no loopback exemption), served by the test servers all the
# same: only ForwardProxy ever "resolves" it, to 127.0.0.1.
REMOTE_NAME = "idp.test"


class ForwardProxy:
    """An HTTP forward proxy on 127.0.0.1 whose CONNECT tunnels lead to 127.0.0.1 whatever host they name (tests
    never leave this machine); `refuse` answers CONNECT with that status instead; with `certificate`, an https
    proxy. `tunnels` lists what was asked."""

    def __init__(self, refuse: int | None = None, certificate: Path | None = None) -> None:
        self.tunnels: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_CONNECT(self) -> None:  # noqa: N802 - http.server's naming
                proxy.tunnels.append(self.path)
                if refuse is not None:
                    self.send_response(refuse)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                upstream = socket.create_connection(("127.0.0.1", int(self.path.rsplit(":", 1)[1])), timeout=5)
                self.send_response(200, "Connection established")
                self.end_headers()
                ends = [self.connection, upstream]
                try:
                    while True:
                        ready, _, _ = select.select(ends, [], [], 5)
                        if not ready:
                            return
                        for end in ready:
                            data = end.recv(65536)
                            if not data:
                                return
                            (upstream if end is self.connection else self.connection).sendall(data)
                finally:
                    upstream.close()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if certificate is not None:  # an https proxy (its clients speak TLS to it, then through it)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certificate)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        scheme = "https" if certificate is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def private_ca(directory: Path, *, with_address: bool = True) -> tuple[Path, Path]:
    """A CA of its own and a certificate it signed for 127.0.0.1 and REMOTE_NAME (an IdP behind a private CA), or
    for REMOTE_NAME alone without `with_address`: the CA's PEM file, and the server's certificate and key in one PEM
    file."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test private CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
              .issuer_name(ca_name).public_key(server_key.public_key()).serial_number(2)
              .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
              .add_extension(x509.SubjectAlternativeName([
                  *([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))] if with_address else []),
                  x509.DNSName(REMOTE_NAME)]),
                             critical=False).sign(ca_key, hashes.SHA256()))
    ca_file, server_file = directory / "ca.pem", directory / "server.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server_file.write_bytes(server.public_bytes(serialization.Encoding.PEM) + server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return ca_file, server_file


class KeyServer:
    """`certificate`: a PEM file of the server's certificate and key, to serve https."""

    def __init__(self, certificate: Path | None = None) -> None:
        self.documents: dict[str, Any] = {}
        self.headers: dict[str, dict[str, str]] = {}
        # ok | 500 | slow | huge | not_json | bad_utf8 | redirect_other_host | redirect_same_host | redirect_bad_port
        # | gzip | gzip_bomb | 304 | 302_no_location
        self.mode: str = "ok"
        self.accept_encoding: str | None = None  # of the last request
        self.slow_seconds = 2.0
        self.hits: dict[str, int] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?")[0]
                with server._lock:
                    server.hits[path] = server.hits.get(path, 0) + 1
                    server.accept_encoding = self.headers.get("Accept-Encoding")
                server.respond(self, path)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.scheme = "https" if certificate is not None else "http"
        if certificate is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certificate)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def hit_count(self, path: str) -> int:
        with self._lock:
            return self.hits.get(path, 0)

    def respond(self, handler: BaseHTTPRequestHandler, path: str) -> None:
        mode = self.mode
        if path.startswith("/moved"):
            mode = "ok"
            path = path[len("/moved"):]
        if mode == "500":
            return self._send(handler, 500, b'{"error": "boom"}')
        if mode == "slow":
            time.sleep(self.slow_seconds)
        if mode == "huge":
            return self._send(handler, 200, b'{"keys": [' + b" " * (10 * 1024 * 1024) + b"]}")
        if mode == "gzip_bomb":  # 64 MiB of JSON whitespace in about 64 KiB
            return self._send(handler, 200, bomb(), extra={"Content-Encoding": "gzip"})
        if mode == "not_json":
            return self._send(handler, 200, b"<html>maintenance</html>", "text/html")
        if mode == "bad_utf8":  # JSON but for one byte that is not UTF-8, inside a string
            return self._send(handler, 200, b'{"keys": [{"kty": "RSA", "kid": "\xff", "n": "AQAB", "e": "AQAB"}]}')
        if mode == "redirect_other_host":
            return self._send(handler, 302, b"", extra={"Location": f"http://localhost:{self.port}/moved{path}"})
        if mode == "redirect_bad_port":
            return self._send(handler, 302, b"", extra={"Location": "http://127.0.0.1:99999/x"})
        if mode in ("304", "302_no_location"):  # a 3xx that is no redirect: nothing to follow
            return self._send(handler, int(mode[:3]), b"")
        if mode == "redirect_same_host":
            return self._send(handler, 302, b"", extra={"Location": f"/moved{path}"})
        if mode == "redirect_loop":  # to itself, for ever
            return self._send(handler, 302, b"", extra={"Location": path})
        document = self.documents.get(path)
        if document is None:
            return self._send(handler, 404, b'{"error": "not found"}')
        body, extra = json.dumps(document).encode(), dict(self.headers.get(path, {}))
        if mode == "gzip":  # whatever Accept-Encoding said
            body, extra["Content-Encoding"] = gzip.compress(body), "gzip"
        # `status_<n>`: the document under another 2xx status (a proxy's 203, a 206 range answer)
        self._send(handler, int(mode[7:]) if mode.startswith("status_") else 200, body, extra=extra)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str = "application/json",
              extra: dict[str, str] | None = None) -> None:
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(body)))
            handler.send_header("Connection", "close")  # so that stop() really means connection refused
            for name, value in (extra or {}).items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(body)
            handler.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            pass

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


_BOMB: list[bytes] = []


def bomb() -> bytes:
    if not _BOMB:
        _BOMB.append(gzip.compress(b'{"keys": [' + b" " * (64 * 1024 * 1024) + b"]}", compresslevel=6))
    return _BOMB[0]
