#!/usr/bin/env python3
"""One entry point for people and CI that needs only python3: `python3 .ci/dev.py run|test|bench|openapi|
system-deps|clean` (the Makefile's targets call it too).

The first run creates `.venv` from the pinned lock file (`requirements/dev.lock`). Debian ships `ensurepip` apart
from python3 (package python3.X-venv): as root with apt-get it is installed, else the venv is made without pip
and pip bootstrapped from get-pip.py. `test` and `bench` install Debian's nginx-light, caddy, redis-server, wrk
and curl when run as root and missing (the forward-auth, shared rate-limit and HTTP benchmark runs use the real
servers); without them those tests are skipped locally, and fail under CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
LOCK = ROOT / "requirements" / "dev.lock"
STAMP = VENV / ".installed-dev"
GET_PIP = "https://bootstrap.pypa.io/get-pip.py"
# command -> Debian package
SYSTEM_TOOLS = {"nginx": "nginx-light", "caddy": "caddy", "redis-server": "redis-server", "wrk": "wrk", "curl": "curl"}


def _can_apt() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def _apt_install(packages: list[str]) -> bool:
    print(f"installing Debian packages: {' '.join(packages)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(["apt-get", "update", "-qq"], env=env).returncode == 0 and subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], env=env,
        stdout=subprocess.DEVNULL).returncode == 0
    if not done:
        print(f"apt-get could not install {' '.join(packages)}", file=sys.stderr, flush=True)
    return done


def _has_pip(python: Path) -> bool:
    return python.exists() and subprocess.run([python, "-m", "pip", "--version"], capture_output=True).returncode == 0


def _create_venv() -> None:
    if subprocess.run([sys.executable, "-m", "venv", VENV], capture_output=True).returncode == 0 and _has_pip(PYTHON):
        return
    if _can_apt() and _apt_install([f"python3.{sys.version_info.minor}-venv"]):  # Debian: ensurepip's package
        shutil.rmtree(VENV, ignore_errors=True)
        if subprocess.run([sys.executable, "-m", "venv", VENV]).returncode == 0 and _has_pip(PYTHON):
            return
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", VENV], check=True)
    with tempfile.TemporaryDirectory() as directory:
        script = Path(directory) / "get-pip.py"
        with urllib.request.urlopen(GET_PIP, timeout=60) as response:
            script.write_bytes(response.read())
        subprocess.run([PYTHON, script, "--quiet"], check=True)


def venv() -> None:
    """`.venv` with the lock file installed, redone when the lock file changed."""
    if STAMP.exists() and STAMP.stat().st_mtime >= LOCK.stat().st_mtime and _has_pip(PYTHON):
        return
    if not _has_pip(PYTHON):
        _create_venv()
    subprocess.run([PYTHON, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", LOCK],
                   check=True)
    STAMP.touch()


def system_deps() -> None:
    missing = [package for tool, package in SYSTEM_TOOLS.items()
               if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists()]
    if not missing:
        return
    if not _can_apt() or not _apt_install(missing):
        print(f"missing Debian packages: {' '.join(missing)} (their tests are skipped; install them to run "
              "everything)", flush=True)


def _exec(*argv: str | Path) -> None:
    os.chdir(ROOT)
    os.execv(PYTHON, [str(PYTHON), *map(str, argv)])


def main(argv: list[str]) -> int:
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    if command == "run":
        venv()
        _exec("-m", "app", *rest)
    elif command == "test":
        venv()
        system_deps()
        _exec("-m", "pytest", *rest)
    elif command == "bench":
        venv()
        system_deps()
        _exec("-m", "bench", *rest)
    elif command == "openapi":
        venv()
        document = subprocess.run([PYTHON, "-m", "app", "openapi"], cwd=ROOT, check=True, capture_output=True)
        (ROOT / "openapi" / "openapi.json").write_bytes(document.stdout)
    elif command == "system-deps":
        system_deps()
    elif command == "clean":
        for path in (VENV, ROOT / ".pytest_cache", ROOT / ".hypothesis"):
            shutil.rmtree(path, ignore_errors=True)
    else:
        print("usage: python3 .ci/dev.py run|test|bench|openapi|system-deps|clean [arguments for run, test, bench]",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
