"""`python -m app` as a real process on a free 127.0.0.1 port, for tests that need the server, its workers or
its output exactly as an operator runs it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    """Started with `env` added to a minimal environment; output to `output` (a file) or discarded."""

    def __init__(self, env: dict[str, str] | None = None, output: IO[Any] | None = None) -> None:
        self.port = free_port()
        host = (env or {}).get("HOST", "127.0.0.1")
        self.base = f"http://[::1]:{self.port}" if ":" in host else f"http://127.0.0.1:{self.port}"
        full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PORT": str(self.port), **(env or {})}
        target = output if output is not None else subprocess.DEVNULL
        self.process = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=full, stdout=target,
                                        stderr=subprocess.STDOUT if output is not None else subprocess.DEVNULL)
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"python -m app exited with {self.process.returncode}")
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("python -m app did not become healthy in 30 s")

    def stop(self) -> None:
        stop_process(self.process, 15)


def stop_process(process: "subprocess.Popen[Any]", timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL after `timeout` s: a test never leaves a service behind (its workers follow a killed
    main process)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
