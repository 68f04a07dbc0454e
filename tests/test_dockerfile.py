"""The image contract of operations.md (no Docker engine runs here, so the Dockerfile is checked as text)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service import Service

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_image_is_multi_stage_slim_and_installs_only_runtime_dependencies():
    stages = re.findall(r"^FROM\s+(\S+)", DOCKERFILE, re.M)
    assert len(stages) >= 2 and all("slim" in stage for stage in stages)
    assert "requirements/runtime.lock" in DOCKERFILE and "dev.lock" not in DOCKERFILE
    runtime = (ROOT / "requirements" / "runtime.lock").read_text()
    for dev_only in ("pytest", "hypothesis", "fastapi", "pyjwt"):
        assert not re.search(rf"^{dev_only}==", runtime, re.M | re.I), dev_only


def test_image_runs_python_m_app_as_non_root_with_healthcheck_on_healthz():
    final = DOCKERFILE[DOCKERFILE.rindex("FROM"):]
    assert re.search(r"^USER\s+(?!root)\S+", final, re.M)
    assert re.search(r"^EXPOSE\s+8000", final, re.M)
    assert re.search(r"^HEALTHCHECK .*", final, re.M) and "/healthz" in final
    assert 'CMD ["python", "-m", "app"]' in final
    assert "HOST=0.0.0.0" in final


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::", "::1"])
def test_the_healthcheck_command_reaches_a_running_service_wherever_it_listens(host):
    """The HEALTHCHECK's own Python, run against `python -m app` listening on HOST and PORT, with HTTP_PROXY set
    as Docker's client `proxies` setting sets it in every container: urlopen sent the check to the proxy (found by
    a review)."""
    if ":" in host and not _ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    command = json.loads(re.search(r"^\s+CMD (\[.*\])$", DOCKERFILE[DOCKERFILE.index("HEALTHCHECK"):], re.M).group(1))
    assert command[:2] == ["python", "-c"]
    service = Service({"HOST": host})
    try:
        nothing = f"http://127.0.0.1:{_closed_port()}"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOST": host, "PORT": str(service.port),
               "HTTP_PROXY": nothing, "http_proxy": nothing, "NO_PROXY": "localhost"}
        assert subprocess.run([sys.executable, "-c", command[2]], env=env, timeout=30).returncode == 0
    finally:
        service.stop()
    assert subprocess.run([sys.executable, "-c", command[2]], env=env, timeout=30).returncode != 0  # stopped


def test_image_copies_the_data_directories_the_app_reads():
    for directory in ("app", "presets", "profiles"):
        assert re.search(rf"^COPY {directory} ", DOCKERFILE, re.M), directory
