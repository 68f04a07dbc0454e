"""Over HTTP on loopback: each server started in turn (never two at once), loaded with wrk, then stopped.

Every server is granian (ASGI, uvloop) with the same number of workers; wrk runs with the same threads and
connections against each; each measured run is preceded by a short warm-up run of the same script. A server
is started with its own process group and that group is terminated afterwards, whatever happens.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LUA = Path(__file__).resolve().parent / "load.lua"


@dataclass
class LoadSettings:
    duration: float = 10.0
    warmup: float = 2.0
    connections: int = 64
    threads: int = 2
    workers: int = 2


@dataclass
class Run:
    """One wrk run: requests/s and latency percentiles (ms), or why it did not happen."""

    name: str
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    requests: int = 0
    non2xx: int = 0
    errors: int = 0
    wraps: int = 0
    tokens: int = 0
    note: str = ""
    cpu_us: float | None = None  # the server's CPU time (every process of it, kernel included) per request
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.rps is not None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wrk_path() -> str | None:
    return shutil.which("wrk") or ("/usr/bin/wrk" if os.path.exists("/usr/bin/wrk") else None)


class Server:
    """A server subprocess in its own session; `stop` terminates exactly that process group."""

    def __init__(self, name: str, argv: list[str], port: int, env: dict[str, str] | None = None) -> None:
        self.name, self.port = name, port
        self.log = tempfile.TemporaryFile()
        full_env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), **(env or {})}
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=full_env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.output()[-800:]}")
            try:
                status, _, _ = request(self.port, "GET", "/healthz", timeout=1.0)
                if status:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer on port {self.port} within {timeout:.0f} s")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def _processes(self) -> list[Path]:
        """/proc entries of every process of this server's process group (the granian main process and its
        workers)."""
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and os.getpgid(int(entry.name)) == self.proc.pid:
                    found.append(entry)
            except (OSError, ProcessLookupError):
                continue
        return found

    def worker_rss_mib(self) -> list[float]:
        """VmRSS of every process of this server."""
        sizes = []
        for entry in self._processes():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    sizes.append(int(line.split()[1]) / 1024)
        return sorted(sizes)

    def cpu_seconds(self) -> float:
        """User and system CPU time of every process of this server so far (utime + stime, proc(5))."""
        ticks = 0
        for entry in self._processes():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        # Workers left behind by a main process that died first belong to the same group.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.log.close()


@contextmanager
def server(name: str, argv: list[str], load: LoadSettings, env: dict[str, str] | None = None) -> Iterator[Server]:
    srv = Server(name, argv, free_port(), {"WORKERS": str(load.workers), **(env or {})})
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
            timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


@dataclass(frozen=True)
class Template:
    """An HTTP request with "@TOKEN@" placeholders, in the file format load.lua reads."""

    method: str
    path: str
    headers: dict[str, str]
    body: str = ""

    def text(self) -> str:
        lines = [f"{self.method} {self.path}", *(f"{name}: {value}" for name, value in self.headers.items())]
        return "\n".join(lines) + "\n\n" + self.body

    def send(self, port: int, token: str) -> tuple[int, dict[str, str], bytes]:
        body = self.body.replace("@TOKEN@", token).encode() if self.body else None
        headers = {name: value.replace("@TOKEN@", token) for name, value in self.headers.items()}
        return request(port, self.method, self.path, body, headers)


@dataclass(frozen=True)
class Cursor:
    """Where a server's next "cycle" run starts: each wrk thread's index into its share of the token list, and how
    many times each thread has gone through its share so far (requests it generated, in flight ones included,
    over its share's length)."""

    ends: tuple[int, ...] = ()
    laps: tuple[float, ...] = ()

    def advanced(self, figures: dict[str, Any], total_tokens: int) -> "Cursor":
        share = total_tokens / len(figures["sent"])
        laps = self.laps or (0.0,) * len(figures["sent"])
        return Cursor(tuple(figures["ends"]), tuple(lap + sent / share for lap, sent in zip(laps, figures["sent"])))


def run_wrk(name: str, port: int, template: Template, tokens_file: Path, mode: str, load: LoadSettings,
            workdir: Path, *, start: Cursor = Cursor(), total_tokens: int = 0,
            cpu: Callable[[], float] | None = None) -> tuple[Run, Cursor]:
    """A warm-up run (when `load.warmup`) then the measured run, and where the next run should start. In "cycle"
    mode each wrk thread continues where it stopped (`start`), so across warm-up and rounds a token comes back
    only after its share has gone by; `Run.raw["from"]` and `["end"]` are each thread's laps before and after.
    `cpu`: the server's CPU seconds so far (Server.cpu_seconds), read around the measured run."""
    wrk = wrk_path()
    if wrk is None:
        return Run(name, note="wrk is not installed (python3 .ci/dev.py system-deps installs it)"), start
    template_file = workdir / f"{name.replace(' ', '_').replace('/', '_')}.http"
    template_file.write_text(template.text())
    url = f"http://127.0.0.1:{port}"

    def wrk_once(duration: float, position: Cursor) -> dict[str, Any]:
        argv = [wrk, f"-t{load.threads}", f"-c{load.connections}", f"-d{max(1, round(duration))}s", "--latency",
                "--timeout", "5s", "-s", str(LUA), url, "--", str(template_file), str(tokens_file), str(load.threads),
                mode, ",".join(map(str, position.ends))]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
        for line in done.stdout.splitlines():
            if line.startswith("BENCH_JSON "):
                return json.loads(line[len("BENCH_JSON "):])
        raise RuntimeError(f"wrk printed no figures (exit {done.returncode}): {(done.stderr or done.stdout)[-400:]}")

    def advance(position: Cursor, figures: dict[str, Any]) -> Cursor:
        return position.advanced(figures, total_tokens) if mode == "cycle" and total_tokens else position

    position = start
    try:
        if load.warmup > 0:
            position = advance(position, wrk_once(load.warmup, position))
        used = cpu() if cpu is not None else None
        figures = wrk_once(load.duration, position)
        if cpu is not None and used is not None:
            used = cpu() - used
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        return Run(name, note=str(exc)[:300]), position
    end = advance(position, figures)
    figures["from"], figures["end"] = start.laps, end.laps
    seconds = figures["duration_us"] / 1e6
    errors = sum(figures[key] for key in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    run = Run(name, rps=figures["requests"] / seconds, p50_ms=figures["p50_us"] / 1000, p99_ms=figures["p99_us"] / 1000,
              requests=figures["requests"], non2xx=figures["non2xx"], errors=errors, wraps=figures["wraps"],
              tokens=figures["tokens"], raw=figures,
              cpu_us=used / figures["requests"] * 1e6 if used is not None and figures["requests"] else None)
    notes = []
    if run.non2xx:
        notes.append(f"{run.non2xx} non-2xx answers")
    if errors:
        notes.append(f"{errors} socket errors/timeouts")
    run.note = "; ".join(notes)
    return run, end


def python() -> str:
    return sys.executable
