"""Docs that run: the README's commands, tables and curl session are checked against the real thing."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.findings import code_table_markdown
from app.settings import settings_table_markdown
from tests.service import stop_process

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def section(name: str) -> str:
    match = re.search(rf"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", README, re.S)
    assert match, f"README has no {name} section"
    return match.group(1)


def test_readme_starts_with_the_two_setup_commands_and_ci_runs_the_test_one():
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["python3 .ci/dev.py run", "python3 .ci/dev.py test"]
    assert "python3 .ci/dev.py test" in (ROOT / ".ci" / "run").read_text()


def test_code_table_equals_the_catalogue():
    assert section("codes").strip() == code_table_markdown()


def test_settings_table_equals_the_settings():
    assert section("settings").strip() == settings_table_markdown()


def matches(expected: Any, actual: Any) -> bool:
    """Every field shown in the README is in the real answer with that value (outputs are abridged)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(key in actual and matches(value, actual[key])
                                                for key, value in expected.items())
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(matches(e, a) for e, a in zip(expected, actual))
    return expected == actual


def session_steps() -> list[tuple[str, str]]:
    lines = section("session").strip().strip("`").splitlines()
    steps, command = [], None
    for line in lines:
        if line.startswith("$ "):
            command = line[2:]
        elif command is not None and line.strip() and not line.startswith("```"):
            steps.append((command, line))
            command = None
    return steps


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def service() -> Any:
    port = free_port()
    env = {"PATH": os.environ["PATH"], "PORT": str(port), "LOG_LEVEL": "WARNING"}
    process = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(150):
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield port
    stop_process(process, 10)


def test_curl_session_runs_as_documented(service):
    steps = session_steps()
    assert len(steps) >= 4
    for command, expected in steps:
        argv = shlex.split(command.replace("127.0.0.1:8000", f"127.0.0.1:{service}"))
        assert argv[0] == "curl"
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, (command, result.stderr)
        actual = json.loads(result.stdout)
        assert matches(json.loads(expected), actual), (command, actual)
