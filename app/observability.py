"""What an operator sees: one structured log line per request and the Prometheus series (operations.md section 2).

The request edge (`Observe`) gives every request an id (`X-Request-ID` when the client sent a sane one, else a new
one, echoed back), times it, counts it by route and status and writes one log line. Handlers add what they
decided through `annotate` (profile, valid, finding codes, token_id, authorizer, decision, rule): never a token,
a secret, key material or a header value. Metrics are prometheus_client objects; with several workers
`python -m app` points PROMETHEUS_MULTIPROC_DIR at a directory before any worker starts, every worker writes
its own files there (the per-request series tallied and written once a second) and a scrape of any worker sums
them.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import logging
import math
import os
import re
import secrets
import sys
import time
from bisect import bisect_left
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

import msgspec
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector

from app.paths import SLASHES
from app.policy import key_set_label
from app.token import holds_jwt

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4"  # Litestar appends "; charset=utf-8" to a text/* media type
disable_created_metrics()  # the `*_created` series double the output and nobody here asks for them

# ---------------------------------------------------------------------------------------------------- metrics

REQUESTS = Counter("http_requests_total", "HTTP requests by route template, method and status",
                   ["route", "method", "status"])
LATENCY = Histogram("http_request_duration_seconds", "Time from request to the end of the response, by route",
                    ["route"], buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1.0, 2.5, 5.0))
VALIDATIONS = Counter("jwt_validations_total", "Token validations by issuer profile ('inline' for inline "
                      "policies) and outcome", ["profile", "valid"])
FINDINGS = Counter("jwt_findings_total", "Findings reported by validations, by code and severity",
                   ["code", "severity"])
DECISIONS = Counter("authz_decisions_total", "Authorization decisions by authorizer, decision and reason",
                    ["authorizer", "decision", "reason"])
KEY_SET_FETCHES = Counter("jwks_fetches_total", "Key-set fetches and failed discovery reads by host and outcome",
                          ["host", "outcome"])
KEY_SET_FETCHED = Gauge("jwks_last_success_timestamp_seconds", "When a key set was last fetched successfully "
                        "(Unix time; the latest of all workers)", ["jwks_uri"], multiprocess_mode="max")
CACHE_HITS = Counter("jwt_verified_token_cache_hits_total", "Verified-token cache lookups that found the token")
CACHE_MISSES = Counter("jwt_verified_token_cache_misses_total", "Verified-token cache lookups that did not")
STORAGE_ERRORS = Counter("rate_limit_storage_errors_total", "Rate-limit storage failures, by authorizer",
                         ["authorizer"])
KEY_SET_AGE = "jwks_key_set_age_seconds"
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})

_children: dict[tuple[Any, ...], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    """`metric.labels(...)`, memoised: label lookups cost more than the increment on the hot path."""
    key = (metric, *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


# Writing a series costs a lock, a getpid() and an mmap write in multiprocess mode: the 5-7 series a request
# touches cost 15-35 µs of a 105-140 µs /v1/authorize, measured in process. So the per-request series are
# tallied in plain dicts and written in one go (one write per series, not per request) by `flush_metrics`: every
# FLUSH_SECONDS from the app's lifespan, before this process answers a scrape, and at shutdown. Another worker's
# counts reach /metrics at most FLUSH_SECONDS late.
FLUSH_SECONDS = 1.0


class _Tally:
    __slots__ = ("counts", "histograms")

    def __init__(self) -> None:
        self.counts: dict[Any, float] = {}
        self.histograms: dict[Any, list[float]] = {}  # histogram child -> [sum, observations in each bucket]

    def inc(self, child: Any) -> None:
        counts = self.counts
        counts[child] = counts.get(child, 0.0) + 1.0

    def observe(self, child: Any, value: float) -> None:
        """What `Histogram.observe` records: the sum, and one in the first bucket whose bound is >= value."""
        totals = self.histograms.get(child)
        if totals is None:
            totals = self.histograms[child] = [0.0] * (len(child._upper_bounds) + 1)
        totals[0] += value
        totals[1 + bisect_left(child._upper_bounds, value)] += 1.0

    def flush(self) -> None:
        counts, self.counts = self.counts, {}
        histograms, self.histograms = self.histograms, {}
        for child, amount in counts.items():
            child.inc(amount)
        for child, totals in histograms.items():
            child._sum.inc(totals[0])
            for bucket, count in zip(child._buckets, totals[1:]):
                if count:
                    bucket.inc(count)


_tally = _Tally()


def flush_metrics() -> None:
    """Write this process's tallies; on the event loop that fills them (the dicts are swapped, not locked)."""
    _tally.flush()


async def flush_metrics_periodically(seconds: float = FLUSH_SECONDS) -> None:
    """The lifespan's task: write the tallies every `seconds` (cancelled at shutdown, which flushes once more)."""
    while True:
        await asyncio.sleep(seconds)
        flush_metrics()


_request_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def record_request(route: str, method: str, status: int, seconds: float) -> None:
    series = _request_series.get((route, method, status))
    if series is None:
        series = _request_series[(route, method, status)] = (REQUESTS.labels(route, method, str(status)),
                                                             LATENCY.labels(route))
    _tally.inc(series[0])
    _tally.observe(series[1], seconds)


def record_validation(profile: str | None, valid: bool, findings: Iterable[tuple[str, str]]) -> None:
    _tally.inc(_child(VALIDATIONS, profile or "inline", "true" if valid else "false"))
    for code, severity in findings:
        _tally.inc(_child(FINDINGS, code, severity))


def record_decision(authorizer: str, decision: str, reason: str, storage_error: bool) -> None:
    _tally.inc(_child(DECISIONS, authorizer, decision, reason))
    if storage_error:
        _tally.inc(_child(STORAGE_ERRORS, authorizer))


def declare_rate_limited(authorizer_ids: Iterable[str]) -> None:
    """Give `rate_limit_storage_errors_total` a series at 0 for every configured authorizer with a rate limit, so
    that an alert on its rate has something to watch before the first failure (a counter that appears only when
    it first counts is missed by `rate()`)."""
    for authorizer_id in authorizer_ids:
        _child(STORAGE_ERRORS, authorizer_id)


# Distinct `jwks_uri` (and `host`) label values one process creates: inline policies may name any path on an
# allowed host, and any host under an allowed glob.
MAX_KEY_SET_SERIES = 256
_key_set_labels: set[str] = set()


_key_set_hosts: set[str] = set()


def record_key_set_fetch(uri: str, outcome: str, configured: bool = False) -> None:
    """A fetch's outcome, and a success's time. A set the configuration names is always recorded: past the cap of
    labels (which sets only requests name can fill), one added by a reload read as never fetched (found by a
    review: its age was +Inf)."""
    host = urlsplit(uri).hostname or "?"
    if host not in _key_set_hosts and len(_key_set_hosts) >= MAX_KEY_SET_SERIES:
        host = "other"  # subdomains under an allowed glob are as many hosts as a caller likes
    else:
        _key_set_hosts.add(host)
    _child(KEY_SET_FETCHES, host, outcome).inc()
    if outcome == "ok":
        label = key_set_label(uri)
        if configured or label in _key_set_labels or len(_key_set_labels) < MAX_KEY_SET_SERIES:
            _key_set_labels.add(label)
            _child(KEY_SET_FETCHED, label).set(time.time())


def record_cache_lookup(hit: bool) -> None:
    _tally.inc(CACHE_HITS if hit else CACHE_MISSES)


class _KeySetAge(Collector):
    """`jwks_key_set_age_seconds`, computed at scrape time from the last-success timestamps (so it keeps growing
    while a key set cannot be refreshed, whichever worker fetched it last)."""

    def __init__(self, source: Collector, clock: Callable[[], float], held: frozenset[str] | None) -> None:
        self.source, self.clock, self.held = source, clock, held

    def collect(self) -> Iterable[Metric]:
        age = GaugeMetricFamily(KEY_SET_AGE, "Seconds since a key set was last fetched successfully",
                                labels=["jwks_uri"])
        now = self.clock()
        fetched: set[str] = set()
        for family in self.source.collect():
            yield family
            if family.name == KEY_SET_FETCHED._name:
                for sample in family.samples:
                    label = sample.labels["jwks_uri"]
                    if self.held is None or label in self.held:
                        age.add_metric([label], max(0.0, now - sample.value))
                        fetched.add(label)
        # A configured set never fetched is infinitely old: without a series, an alert on the age stayed silent
        # through an IdP outage that began before the service started (found by a review).
        for label in sorted((self.held or frozenset()) - fetched):
            age.add_metric([label], math.inf)
        yield age


class _Global(Collector):
    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def metrics_text(clock: Callable[[], float] = time.time, held: Iterable[str] | None = None,
                 flush: bool = True) -> bytes:
    """The Prometheus exposition of every worker (multiprocess files) or of this process. With `held` (the key
    sets the configuration names, the same in every worker), key-set ages are reported for those only: a set a
    reload dropped would otherwise keep ageing and page someone, and a set one worker fetched for an inline
    policy would come and go with the worker answering. `flush`: write this process's tallies first (its own
    counts are then exact; other workers' are at most FLUSH_SECONDS late); call it on the event loop."""
    if flush:
        flush_metrics()
    directory = os.environ.get(MULTIPROC_ENV)
    source: Collector
    if directory:
        source = MultiProcessCollector(CollectorRegistry(auto_describe=False), path=directory)
    else:
        source = _Global()
    registry = CollectorRegistry(auto_describe=False)
    labels = None if held is None else frozenset(key_set_label(uri) for uri in held)
    registry.register(_KeySetAge(source, clock, labels))
    return generate_latest(registry)


# ---------------------------------------------------------------------------------------------------- logs

_fields: ContextVar[dict[str, Any] | None] = ContextVar("request_log_fields", default=None)


def annotate(**fields: Any) -> None:
    """Add fields to the current request's log line (no-op outside a request)."""
    current = _fields.get()
    if current is not None:
        current.update(fields)


def _in_request(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """A line logged while a request is answered carries its request id (a rate-limit storage failure had none,
    so it could not be matched to its request; found by a review)."""
    current = _fields.get()
    if current is not None and "request_id" not in event:
        event["request_id"] = current["request_id"]
    return event


def _json(_: Any, __: str, event: dict[str, Any]) -> bytes:
    return msgspec.json.encode(event, enc_hook=str)


_second: list[Any] = [0, ""]
_access_sink: list[Any] = [None]


_pid = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))


def _timestamp(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """ISO 8601 UTC with milliseconds; the formatted second is reused (structlog's TimeStamper costs 2-3x). And
    the process id, which tells the workers apart (and matches granian's "worker-1 with PID ..." lines)."""
    now = time.time()
    second = int(now)
    if second != _second[0]:
        _second[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    event["timestamp"] = f"{_second[1]}.{int((now - second) * 1000):03d}Z"
    event["pid"] = _pid[0]
    return event


def configure_logging(level: str = "INFO", fmt: str = "json", stream: Any = None) -> None:
    """structlog writing one line per event: JSON (default) or a console rendering for people. The chain is
    short on purpose: it runs once per request (measured 14 -> 7 µs against structlog's stock processors)."""
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
        factory: Any = structlog.PrintLoggerFactory(stream or sys.stdout)
    else:
        renderer = _json
        factory = structlog.BytesLoggerFactory(stream or sys.stdout.buffer)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per key-set fetch is ours (jwks_fetched)
    # The per-request line in JSON goes straight to structlog's BytesLogger with the same renderer and fields:
    # the bound logger's processing cost 18 µs per request in the app, against ~8 this way.
    json_info = fmt == "json" and logging.getLevelName(level) <= logging.INFO
    _access_sink[0] = structlog.BytesLogger(stream or sys.stdout.buffer) if json_info else None
    structlog.configure(
        processors=[structlog.processors.add_log_level, _timestamp, _in_request, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        # Module loggers follow a later configure() (tests make several apps); the per-request logger is bound
        # once per app by `Observe`, so the hot path does not pay for that.
        logger_factory=factory, cache_logger_on_first_use=False)


class StdlibToStructlog(logging.Handler):
    """Standard-library log records (granian's own lines, a library's warning, asyncio's "exception never
    retrieved") written by structlog, so stdout holds one format (`python -m app` installs it, `stdlib_logging`)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, Any] = {"logger": record.name.lstrip("_")}
            if record.exc_info:
                fields["exception"] = logging.Formatter().formatException(record.exc_info)
            structlog.get_logger().log(record.levelno, record.getMessage(), **fields)
        except Exception:  # noqa: BLE001 - logging's own contract: report on stderr, never raise
            self.handleError(record)


def stdlib_logging(level: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` sending granian's loggers and the root logger through `StdlibToStructlog`."""
    handler = {"structlog": {"()": f"{__name__}.StdlibToStructlog"}}
    quiet = {"handlers": ["structlog"], "level": level, "propagate": False}
    return {"version": 1, "disable_existing_loggers": False, "handlers": handler,
            "loggers": {"_granian": quiet, "granian.access": quiet},
            "root": {"handlers": ["structlog"], "level": max(logging.getLevelName(level), logging.WARNING)}}


# ---------------------------------------------------------------------------------------------------- edge

_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


_sequence = itertools.count(1)
_process_prefix: list[bytes] = []


def _draw_prefix() -> None:
    _process_prefix[:] = [secrets.token_hex(4).encode()]


_draw_prefix()
os.register_at_fork(after_in_child=_draw_prefix)  # granian forks its workers: each draws its own


def new_request_id() -> bytes:
    """16 hex digits: 8 random per process (re-drawn in a forked child) and a counter; unique without a syscall
    (glibc's getpid() is one)."""
    return _process_prefix[0] + b"%08x" % (next(_sequence) & 0xFFFFFFFF)


def request_id(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The client's X-Request-Id when it is a plain token of up to 128 characters and holds nothing shaped like a
    JWT (app.token.holds_jwt: a token sent there was logged whole beside its own token_id; found by a review), else
    a new one."""
    for name, value in headers:
        if name == b"x-request-id":
            usable = _REQUEST_ID.fullmatch(value) and not holds_jwt(value.decode("ascii"), glued=True)
            return value if usable else new_request_id()
    return new_request_id()


def routed_path(scope: Any) -> str:
    """The path Litestar's router matches (`litestar._asgi.asgi_router`): after the root path, without slashes at
    either end, repeated slashes merged."""
    path, root = scope["path"], scope.get("root_path") or ""
    if root:
        path = path.split(root, 1)[-1]
    return SLASHES.sub("/", "/" + path.strip("/"))


def route_templates(routes: Iterable[Any]) -> list[tuple[re.Pattern[str], str]]:
    """Each Litestar route's template with a regular expression of the paths it serves, plain routes first (as
    Litestar prefers them), for answers Litestar gives before naming the route: a 405 (the path matched, not the
    method) was counted as "unmatched", among 404 scans (found by a review)."""
    matchers = []
    for route in routes:
        pieces = ["/" + (re.escape(part) if isinstance(part, str) else ".*" if part.type is Path else "[^/]+")
                  for part in route.path_components]
        matchers.append((re.compile("".join(pieces) or "/"), route.path_format))
    return sorted(matchers, key=lambda matcher: "{" in matcher[1])


REQUEST_ID = "jwt_decision.request_id"  # the request's id (bytes) in its ASGI scope, for lines logged inside it


class Observe:
    """ASGI wrapper around Litestar's handler: request id, timing, the metrics and the log line of a request.

    Wraps `app.asgi_handler` (routing and exception handling inside), so every answer, 404 and 413 included,
    is counted and logged; the route label is the matched route's template ("unmatched" when none).
    """

    def __init__(self, app: Any, routes: Iterable[Any] = ()) -> None:
        self.app = app
        self.log = structlog.get_logger("app.access").bind()
        self.sink = _access_sink[0]
        self.templates = route_templates(routes)

    def template(self, scope: Any) -> str:
        """The route of a 405's path, read as Litestar routes it."""
        path = routed_path(scope)
        return next((template for pattern, template in self.templates if pattern.fullmatch(path)), "unmatched")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = scope[REQUEST_ID] = request_id(scope["headers"])
        status = 500

        async def send_with_id(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid)]
            await send(message)

        fields: dict[str, Any] = {"request_id": rid.decode()}  # also on every other line logged inside it
        reset = _fields.set(fields)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _fields.reset(reset)
            seconds = time.perf_counter() - started
            # A 405, and a 401 for the API key (answered before routing), name the route the path matches.
            route = scope.get("path_template") or (self.template(scope) if status in (401, 405) else "unmatched")
            method = scope["method"] if scope["method"] in HTTP_METHODS else "OTHER"  # labels stay bounded
            record_request(route, method, status, seconds)
            # The route, not the path: under forward-auth the path is the protected application's own URL.
            line = {"method": method, "route": route, "status": status,
                    "duration_ms": round(seconds * 1000, 3), **fields}
            if self.sink is not None:
                line["event"], line["level"] = "request", "info"
                self.sink.msg(_json(None, "info", _timestamp(None, "info", line)))
            else:
                self.log.info("request", **line)


# ---------------------------------------------------------------------------------------------------- API keys

class ApiKeys:
    """`API_KEYS`: compared as SHA-256 digests with `hmac.compare_digest` against every configured key, so
    neither the position of a mismatch nor which key matched shows in the timing."""

    def __init__(self, keys: Iterable[str]) -> None:
        self.digests = tuple(hashlib.sha256(key.encode()).digest() for key in keys)

    def __bool__(self) -> bool:
        return bool(self.digests)

    def accepts(self, presented: str | None) -> bool:
        if presented is None:
            return False
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        matched = False
        for expected in self.digests:
            matched |= hmac.compare_digest(digest, expected)
        return matched


def needs_api_key(path: str) -> bool:
    """Every `/v1/*` route except the presets (public templates); health, readiness, metrics and the
    OpenAPI document stay open."""
    return path.startswith("/v1/") and not (path == "/v1/presets" or path.startswith("/v1/presets/"))


# ---------------------------------------------------------------------------------------------------- outcomes

def observe_validation(result: Any) -> None:
    """A validation's metrics and log fields (the Verifier calls this for /v1/validate/jwt and decisions)."""
    findings = result.findings
    record_validation(result.profile, result.valid, [(item.code, item.severity) for item in findings])
    annotate(profile=result.profile, valid=result.valid, findings=[item.code for item in findings],
             token_id=result.token_id)


def observe_decision(decision: Any) -> None:
    rate_limit = decision.rate_limit
    record_decision(decision.authorizer, decision.decision, decision.reason,
                    bool(rate_limit is not None and rate_limit.storage_error))
    rule = decision.rule.id if decision.rule is not None else None
    # An inline authorizer's rule id is the caller's text: one shaped like a token was logged whole (found by a
    # review). The answer names it; the log says which rule by its index.
    if rule is not None and holds_jwt(rule, glued=True):
        rule = f"[redacted: rule {decision.rule.index}]"
    annotate(authorizer=decision.authorizer, decision=decision.decision, reason=decision.reason, rule=rule)
