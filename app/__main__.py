"""`python -m app` serves; `python -m app openapi` prints the OpenAPI document; `--help` lists the settings."""

from __future__ import annotations

import signal

if __name__ == "__main__":
    # Until granian installs its handler (then ours), SIGHUP's default would end the process: a reload sent while
    # the service starts is ignored instead (the file poll still sees the change). Before anything else: set after
    # the settings, a SIGHUP in the first 0.1 s ended the service, and after this module's imports, in the first
    # 20-30 ms (found by reviews). What is left is the interpreter's own start.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
import socket
import sys
import tempfile
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.settings import Settings

# The same name as app.observability.MULTIPROC_ENV, not imported: that would import prometheus_client before
# the directory is set, and it reads the variable once, at import.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
WORKER_STOP_SECONDS = 20
PR_SET_PDEATHSIG = 1  # prctl(2), Linux
WORKING_PREFIXES = ("jwt-decision-metrics-", "jwt-decision-config-")  # the working directories a run makes
OWNER_FILE = ".owner"  # in each, locked by the run that made it for as long as it lives
USAGE = """usage: python -m app [serve | openapi | --help]

  serve     start the service (default) on HOST:PORT with WORKERS processes (granian, ASGI, uvloop)
  openapi   print the OpenAPI 3.1 document (openapi/openapi.json is this output, committed)

  Working directories (default: new temporary ones, removed on exit):
  PROMETHEUS_MULTIPROC_DIR     where workers write their metrics (emptied of *.db files at start; one per copy)
  JWT_DECISION_SNAPSHOT_DIR    where a private directory of the accepted configuration documents is made
"""


def main(argv: list[str]) -> int:
    from app.settings import SettingsError, load_settings, settings_help

    command = argv[0] if argv else "serve"
    if command in ("-h", "--help", "help"):
        print(USAGE + "\n" + settings_help())
        return 0
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if command == "openapi":
        from app.openapi import document_json
        from app.server import create_app

        try:
            app = create_app(settings)
        except ValueError as exc:  # ConfigError, SettingsError: one line, as `serve` tells them (found by a review)
            print(f"configuration error: {exc}", file=sys.stderr)
            return 2
        sys.stdout.write(document_json(app).decode())
        return 0
    if command != "serve":
        print(USAGE, file=sys.stderr)
        return 2
    owned: list[str | None] = []  # the working directories this run made (removed on exit)
    try:
        try:
            _remove_stale_directories()
            owned += [_metrics_directory()]
            owned += [_snapshot_directory()]
            for directory in owned:
                _mark_owner(directory)
            settings = _check(settings)
        except ValueError as exc:  # only before serving: granian's own errors are not configuration errors
            print(f"configuration error: {exc}", file=sys.stderr)
            return 2
        return _serve(settings)
    finally:
        for directory in owned:
            if directory:
                shutil.rmtree(directory, ignore_errors=True)


METRICS_LOCK = ".jwt-decision.lock"  # in an operator's metrics directory: locked by the run that uses it
_held: list[int] = []  # the open, locked owner files of this run's working directories (held until exit)


def _mark_owner(directory: str | None) -> None:
    """Hold a lock on an owner file in a working directory this run made, for as long as the run lives: a later
    run removes the directory only if it can take that lock. A lock, not a pid, because a pid names a process
    only in its own PID namespace (a copy in a container is PID 1 there, and unknown here) and on its own host
    (a shared volume). The file is locked before it gets its name, so no run ever sees it unlocked."""
    if directory is None:
        return
    path = os.path.join(directory, OWNER_FILE)
    handle = None
    try:
        handle = os.open(path + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # shared with the forked workers: the lock lasts
        os.write(handle, f"{os.getpid()}\n".encode())  # for people: which process made it
        os.rename(path + ".new", path)
        _held.append(handle)
    except OSError as exc:
        if handle is not None:
            os.close(handle)
            with contextlib.suppress(OSError):
                os.remove(path + ".new")
        print(f"warning: cannot lock an owner file in {directory} ({exc.strerror}): should this run be killed "
              "outright, the next one will not remove the directory", file=sys.stderr)


def _remove_stale_directories() -> None:
    """A run killed outright (kill -9, the OOM killer) cannot remove its working directories; the snapshots hold
    the profiles' secrets. Remove those of this user whose owner file is no longer locked, in the temporary
    directory and the operator's JWT_DECISION_SNAPSHOT_DIR. A directory without an owner file (being made, or not
    one of ours) stays, and so does one whose run still lives, in any PID namespace."""
    from app.config import SNAPSHOT_ENV

    parents = {tempfile.gettempdir(), os.environ.get(SNAPSHOT_ENV) or tempfile.gettempdir()}
    for parent in parents:
        try:
            entries = [entry for entry in os.scandir(parent) if entry.name.startswith(WORKING_PREFIXES)
                       and entry.is_dir(follow_symlinks=False) and entry.stat().st_uid == os.getuid()]
        except OSError:
            continue
        for entry in entries:
            try:
                handle = os.open(os.path.join(entry.path, OWNER_FILE), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(entry.path, ignore_errors=True)  # its run is gone: nobody else holds the lock
            except OSError:  # locked: its run lives
                pass
            finally:
                os.close(handle)


def _metrics_directory() -> str | None:
    """Point PROMETHEUS_MULTIPROC_DIR at a directory before prometheus_client is first imported: every worker
    (forked by granian) writes its counts there and a scrape of any worker sums them. An operator's own
    directory is used (emptied of a previous run's files by `_serve`, once nothing can refuse the start: a copy
    refused for a port in use must not wipe the running one's counts); else a temporary one, returned."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        try:
            directory = os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix=WORKING_PREFIXES[0])
        except OSError as exc:
            raise ValueError(f"cannot create a temporary metrics directory ({exc.strerror}): set {MULTIPROC_ENV} "
                             "to a writable directory") from None
        return directory
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory)  # not its parents: a typo in them is refused, not made
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".probe-"):  # each worker writes its counts here
            pass
        # Read-only, and readable by all: a copy run as another user (a volume kept across an image's USER change)
        # can still lock a file an earlier run made (found by a review). It holds nothing.
        handle = os.open(os.path.join(directory, METRICS_LOCK), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ValueError(f"{MULTIPROC_ENV}: cannot use {directory!r} as the metrics directory (workers write their "
                         f"counts there): {exc.strerror}") from None
    try:  # held by this run and its forked workers until exit
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(handle)
        # A second copy would empty the first one's counts at its start, and then both would scrape the sum of
        # the two (found by a review): refused, whatever its port.
        raise ValueError(f"{MULTIPROC_ENV}: {directory!r} is the metrics directory of another running copy of the "
                         "service; give each copy (each replica) its own directory") from None
    _held.append(handle)
    return None


def _clear_metrics(only_this_process: bool) -> None:
    """Remove a previous run's counts from the metrics directory, or (a start refused) this process's own."""
    directory = os.environ[MULTIPROC_ENV]
    suffix = f"_{os.getpid()}.db" if only_this_process else ".db"
    for name in os.listdir(directory):
        if name.endswith(suffix):
            os.remove(os.path.join(directory, name))


def _snapshot_directory() -> str | None:
    """Where workers keep the configuration documents last accepted, for workers respawned later (app.config): a
    private directory of this run, made inside the operator's JWT_DECISION_SNAPSHOT_DIR or the temporary
    directory, removed on exit (returned). A fresh one each run: a previous run's documents would start the
    service on them, and nothing the operator keeps there is touched. Without a writable place the service runs
    without snapshots: a respawned worker then reads the files."""
    from app.config import SNAPSHOT_ENV

    parent = os.environ.get(SNAPSHOT_ENV) or None
    try:
        directory = os.environ[SNAPSHOT_ENV] = tempfile.mkdtemp(prefix=WORKING_PREFIXES[1], dir=parent)
        return directory
    except OSError as exc:
        if parent is not None:  # the operator asked for it: a typo must not go unnoticed
            raise ValueError(f"{SNAPSHOT_ENV}: cannot make a directory in {parent!r}: {exc.strerror}") from None
        os.environ.pop(SNAPSHOT_ENV, None)
        print(f"warning: no directory for configuration snapshots ({exc.strerror}): a worker respawned while a "
              "configuration file is broken will fail, and granian then stops the service (set "
              f"{SNAPSHOT_ENV} to a writable directory)", file=sys.stderr)
        return None


def _check(settings: "Settings") -> "Settings":
    """Everything that can refuse the start, before anything of a running copy is touched: the configuration
    documents, then the address. Raises ValueError; then the metrics directory holds nothing of this process.
    Returns the settings to serve with: `PORT=0` is replaced by the free port found, which granian then logs, and
    which every worker binds (each would otherwise bind a port of its own, with SO_REUSEPORT)."""
    import msgspec

    from app.server import check_config

    try:
        check_config(settings)
        port = _free_to_listen(settings.host, settings.port)
    except ValueError:
        _clear_metrics(only_this_process=True)
        raise
    _clear_metrics(only_this_process=False)
    return msgspec.structs.replace(settings, port=port)


def _serve(settings: "Settings") -> int:
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    from app.observability import stdlib_logging

    # A worker that dies (killed, out of memory) is replaced; one dying again within seconds of its replacement
    # stops the service (granian's crash-loop rule) rather than restarting forever. A worker that does not stop
    # within WORKER_STOP_SECONDS of SIGTERM is killed.
    main_pid = os.getpid()
    os.register_at_fork(after_in_child=lambda: _in_worker(main_pid))
    _server_class()("app.server:app_factory", factory=True, address=settings.host, port=settings.port,
            interface=Interfaces.ASGI, workers=settings.workers, loop=Loops.uvloop, log_access=False,
            log_level=LogLevels(settings.log_level.lower()), log_dictconfig=stdlib_logging(settings.log_level),
            websockets=False, backlog=2048, respawn_failed_workers=True,
            # Headers that stop arriving hold one of granian's places for its 30 s otherwise (found by a review);
            # the body's own deadline is app.api.fastpath.BodyDeadlines. HTTP/1 only: granian's HTTP/2 has no such
            # timeout (a stalled HEADERS frame or an idle connection stayed open; found by a review), and the
            # proxies of the README's recipes call the service over HTTP/1.1.
            http=HTTPModes.http1,
            http1_settings=HTTP1Settings(header_read_timeout=max(100, int(settings.read_timeout_seconds * 1000))),
            workers_kill_timeout=WORKER_STOP_SECONDS).serve()
    return 0


def _in_worker(main_pid: int) -> None:
    """In a forked worker. Until granian installs its own handlers, the main process's SIGTERM/SIGINT handler,
    inherited, would swallow a stop sent then (a worker respawned just before the service is stopped would
    keep the main process waiting for ever): the default ends the worker, which serves nothing yet. And a
    worker is killed when the main process dies (kill -9): unsupervised, it would go on serving, with no
    respawn, no SIGHUP, and the port held against a restart. SIGKILL, not SIGTERM: granian's SIGTERM handler
    hangs for good when the signal arrives while the worker is still in its lifespan startup (its
    WorkerSignal.set() waits on a lock in a single-threaded process; found with gdb on the worker a flaky test
    left behind), and a main process killed outright leaves nothing for a graceful stop to report to anyway."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the worker outlives a killed main process
        pass
    if os.getppid() != main_pid:  # the main process died before the line above
        os.kill(os.getpid(), signal.SIGKILL)


def _free_to_listen(host: str, port: int) -> int:
    """The port the service can listen on at host (a free one for 0), else ValueError saying why. granian's
    workers bind with SO_REUSEPORT, which would let a second copy of the service start on a port the first holds
    and take half its connections (and an address this machine does not have ends in a traceback): a plain
    bind finds both first."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:  # raises too where IPv6 is disabled
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a previous run's TIME_WAIT is no obstacle
            probe.bind((host, port))
            return int(probe.getsockname()[1])
    except OSError as exc:
        why = ("the port is in use by another process (is the service already running?)"
               if exc.errno == errno.EADDRINUSE else f"cannot listen there: {exc.strerror}")
        raise ValueError(f"HOST {host}, PORT {port}: {why}") from None


def _server_class() -> Any:
    """granian, except for SIGHUP. granian's own SIGHUP respawns the workers, and each new worker would build the
    app from nothing: a bad file would stop it (and with every worker gone, the service), and the key caches
    would be lost. Here the main process passes SIGHUP on to its workers, which reload their documents in place
    (`app.config.install_sighup`: validated first, swapped atomically, a bad file keeps the old one and logs why,
    key caches kept), as trust.md asks."""
    from granian import Granian

    main_pid = os.getpid()

    class Service(Granian):  # type: ignore[misc,valid-type]
        def signal_handler_reload(self, *args: Any, **kwargs: Any) -> None:
            if os.getpid() != main_pid:  # a worker forked before it installed its own handler
                return
            for worker in list(self.wrks):
                pid = worker._id()
                if pid:
                    try:
                        os.kill(pid, signal.SIGHUP)
                    except ProcessLookupError:
                        pass

    return Service


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
