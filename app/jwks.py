"""The key-set cache: the only network I/O of validation (trust.md section 2).

One entry per `jwks_uri`, shared by every policy naming it. A set is fresh for its Cache-Control max-age
(clamped between a floor and a ceiling); after that the next request refreshes it in the background while the
current set keeps serving. An unknown `kid` refetches at once, single-flight (every concurrent waiter shares the
one fetch) and at most once per cooldown, so a flood of random `kid`s costs the IdP one request per cooldown.
A failed refresh keeps the last good set (stale-if-error, with a JWKS_STALE warning) up to a maximum staleness;
failures back off exponentially. Without any usable set the answer is JWKS_UNAVAILABLE, never a bad signature.
OIDC discovery (`{issuer}/.well-known/openid-configuration`) resolves a `jwks_uri` through the same fetcher.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
import ssl
import time
from collections import OrderedDict
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable
from urllib.parse import SplitResult, urljoin, urlsplit

import certifi
import httpx
import msgspec
import structlog
from authlib.oidc.discovery import OpenIDProviderMetadata

from app.freshness import freshness
from app.keys import MIN_RSA_BITS, KeyError_, KeySet, KeyView, jwk_set, key_set, verifies_any
from app.policy import check_key_set_url, is_loopback_host, key_set_label
from app.problems import frames
from app.settings import Settings
from app.token import holds_jwt

log = structlog.get_logger("app.jwks")
_MAX_REDIRECTS = 3
BACKOFF_BASE = 1.0
BACKOFF_CAP = 300.0
# Key sets named only by requests (inline policies and authorizers under JWKS_URI_ALLOWLIST) kept at once; a
# caller choosing paths on an allowed host cannot grow the cache beyond it (the least recently used goes).
# Key sets of the configuration (prefetched) are never evicted.
MAX_REQUESTED_KEY_SETS = 256
# Fetches of key sets only requests name, within one cooldown (JWKS_COOLDOWN), per host and in all: new to the
# cache, an unknown kid's refetch or a refresh once stale. A caller varying the path, the query or the subdomain
# under an allowed glob cannot make every request a fetch at the IdP, neither with new URLs nor by cycling random
# kids through the 256 it has had cached (the cooldown's bound for random kids, applied to random URLs).
# Configured sets never count.
MAX_REQUESTED_FETCHES_PER_HOST = 4
MAX_REQUESTED_FETCHES = 32
# Key sets only requests name that have validated a token (KeySetCache.vouch): exempt from that budget, so a caller
# spending it cannot hold back the rotation of a set in real use. Bounded per host and in all (the ones that
# validated nothing for longest go), one per key-set content on a host (URL variants serving the same keys count
# once), remembered past eviction.
MAX_VOUCHED_PER_HOST = 4
MAX_VOUCHED = 64
# How often configured key sets are looked after without waiting for traffic (`KeySetCache.maintain`).
MAINTAIN_SECONDS = 5.0


_IDENTITY = {"Accept-Encoding": "identity"}


def _inflater(encoding: str) -> Callable[[bytes, int], bytes] | None:
    """For a Content-Encoding: None for none, else a function inflating the next chunk to at most `limit` bytes
    (so a small compressed body cannot expand in memory beyond the cap). Raises FetchError for other codings."""
    coding = encoding.strip().lower()
    if coding in ("", "identity"):
        return None
    if coding not in ("gzip", "x-gzip", "deflate"):
        raise FetchError(f"the body is sent with an unsupported content coding ({coding[:32]})")
    # gzip: a gzip header; deflate: the zlib format (RFC 9110 8.4.1.2), 32 also accepting a gzip header.
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 16 if coding != "deflate" else zlib.MAX_WBITS | 32)

    def inflate(chunk: bytes, limit: int) -> bytes:
        try:
            return inflater.decompress(chunk, max(1, limit))
        except zlib.error:
            raise FetchError(f"the {coding} body is corrupt") from None
    return inflate


class FetchError(Exception):
    """A fetch that produced no usable document; the message is safe to show (no body content)."""


def _host(parts: SplitResult) -> str:
    """The host a URL names: `IDP.example.com.` is `idp.example.com` (the fetch budgets count it as one host)."""
    return (parts.hostname or "").rstrip(".")


def _same_port(parts: SplitResult, origin: SplitResult) -> bool:
    """Whether a redirect stays on the origin's port, its scheme's default written out or not (`https://idp:443/`
    was refused; found by a review). An upgrade to https on loopback keeps the port as written."""
    if parts.scheme != origin.scheme:
        return parts.port == origin.port
    default = {"https": 443, "http": 80}.get(parts.scheme)
    return (parts.port or default) == (origin.port or default)


def _shown(value: Any, limit: int = 200) -> str:
    """A value the IdP (or whoever answers) chose, for a reason that goes into every validation's evidence,
    /readyz and the logs: cut short (a 100,000-character issuer went into each; found by a review), and not
    shown when it holds a token (found by a review: a discovery document's issuer quoted one into the logs)."""
    text = repr(value)
    if holds_jwt(text, glued=True):
        return "(not shown: it holds a token)"
    return text if len(text) <= limit else text[:limit] + "... (cut)"


@dataclass
class Entry:
    uri: str
    keyset: KeySet | None = None
    fetched_at: float | None = None
    expires_at: float = 0.0
    last_error: str | None = None
    failed_at: float = float("-inf")  # when the fetch that failed last started
    failures: int = 0
    next_attempt_at: float = 0.0
    last_kid_refetch: float = float("-inf")
    fetches: int = 0
    deferred_at: float = float("-inf")  # last logged refusal of a fetch by the budget
    inflight: asyncio.Task[None] | None = field(default=None, repr=False)


@dataclass
class Discovered:
    jwks_uri: str | None = None
    error: str | None = None
    next_attempt_at: float = 0.0
    failures: int = 0
    expires_at: float = 0.0  # when the discovery document is read again (its own Cache-Control, clamped)
    inflight: asyncio.Task[None] | None = field(default=None, repr=False)


def discovery_url(issuer: str) -> str:
    """OIDC Discovery 1.0 section 4: the issuer, without a trailing slash, and /.well-known/openid-configuration."""
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """The public CAs httpx trusts by default (certifi's), and the operator's (JWKS_CA_FILE) when set; never the
    system's store or SSL_CERT_FILE."""
    context = ssl.create_default_context(cafile=certifi.where())
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


def _client(settings: Settings, *, proxied: bool) -> httpx.AsyncClient:
    """The key-set fetcher's HTTP client: timeouts, no redirect followed by httpx (each hop is checked here), no
    environment read (proxies, netrc, SSL_CERT_FILE), JWKS_CA_FILE trusted besides the public CAs, and with
    `proxied` the JWKS_PROXY, whose own certificate, for an https proxy, is checked against the same CAs. (Given
    no context, httpcore checked it against the system's store and SSL_CERT_FILE: found by a review.)"""
    verify = tls_context(settings.jwks_ca_file)
    proxy = None
    if proxied and settings.jwks_proxy:
        secure = settings.jwks_proxy.lower().startswith("https:")
        proxy = httpx.Proxy(settings.jwks_proxy, ssl_context=verify if secure else None)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.jwks_total_timeout, connect=settings.jwks_connect_timeout),
        follow_redirects=False, headers={"Accept": "application/json", "User-Agent": "jwt-decision/1"},
        limits=httpx.Limits(max_connections=50, max_keepalive_connections=10), trust_env=False, verify=verify,
        proxy=proxy)


# What a proxy that refused a request says (httpcore's "407 Proxy Authentication Required"): a status and its
# reason, shown as they are; anything else it says is not.
_PROXY_STATUS = re.compile(r"[0-9]{3} [A-Za-z -]{1,60}")
# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH: the chain is trusted, the name not in it.
_NAME_MISMATCH = (62, 64)


def _failure(exc: BaseException) -> str:
    """Why a fetch failed, told from the causes whose text names no URL (a query may hold a credential): the TLS
    certificate not trusted, the handshake, a connection refused or a name not resolved. It was "the request
    failed" for all of them, so a private CA's certificate looked like an IdP that was down (found by a review)."""
    link: BaseException | None = exc
    for _ in range(8):
        if link is None:
            break
        if isinstance(link, httpx.ProxyError):
            said = str(link)
            if not _PROXY_STATUS.fullmatch(said):  # its status alone when its reason says more (`403 acl 12`)
                said = said[:3] if said[:3].isdigit() else ""
            return f"the proxy refused it ({said})" if said else "the proxy refused it"
        if isinstance(link, ssl.SSLCertVerificationError) and link.verify_code in _NAME_MISMATCH:
            return f"the TLS certificate is for another host ({link.verify_message})"
        if isinstance(link, ssl.SSLCertVerificationError):
            return (f"the TLS certificate was not trusted ({link.verify_message}); a private CA that signed it (the "
                    "IdP's, or an https JWKS_PROXY's) goes in JWKS_CA_FILE")
        if isinstance(link, ssl.SSLError):
            return f"the TLS handshake failed ({link.reason or 'no reason given'})"
        if isinstance(link, OSError) and link.strerror:
            return link.strerror
        link = link.__cause__ or link.__context__
    return "the request failed"


class KeySetCache:
    """Key sets by URI. `view()` is what validation awaits; `state()` is what /readyz and /v1/profiles show."""

    def __init__(self, settings: Settings, client: httpx.AsyncClient | None = None,
                 clock: Callable[[], float] = time.time,
                 on_change: Callable[[str, KeySet | None, KeySet], None] | None = None,
                 on_fetch: Callable[[str, str], None] | None = None) -> None:
        # on_change(uri, old, new) when a set's content changed; on_fetch(url, outcome) after every fetch.
        self.settings = settings
        self.clock = clock
        self.on_change = on_change
        self.on_fetch = on_fetch
        self._client = client or _client(settings, proxied=True)
        # Key sets on this host are fetched directly: through a proxy they would travel in the clear to another
        # machine, whose own 127.0.0.1 would answer (found by a review: the proxy could serve its own keys).
        self._direct = _client(settings, proxied=False) if client is None and settings.jwks_proxy else None
        self._entries: dict[str, Entry] = {}
        self._configured: set[str] = set()  # URIs of the configuration, named or discovered: never evicted
        self._named: set[str] = set()  # those profiles and authorizers name (prefetched)
        self._requested: OrderedDict[str, None] = OrderedDict()  # the others, least recently used first
        self._discovered: dict[str, Discovered] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._admitted: list[tuple[float, str]] = []  # (when, host) of fetches of key sets only requests name
        self._vouched: OrderedDict[str, tuple[str, str]] = OrderedDict()  # uri -> (host, key-set version)
        self._refusals_logged: dict[str, float] = {}  # host -> when a refused new URL was last logged

    # --- what validation awaits -------------------------------------------------------------------------------

    async def view(self, uri: str, kid: str | None) -> KeyView:
        now = self.clock()
        entry = self._entries.get(uri)
        admitted = entry is None  # a fetch of a new key set only requests name is counted by _admit
        if entry is None:
            refused = None if uri in self._configured or uri in self._vouched else self._admit(uri, now)
            if refused is not None:
                self._log_refusal(uri, _host(urlsplit(uri)), refused, now)
                return KeyView(None, "jwks_uri", error=f"{refused}; retry later, or configure the key set in a "
                                                       "profile")
            entry = self._entry(uri)
        if uri in self._requested:
            self._requested.move_to_end(uri)
        if not self._usable(entry, now):  # never fetched, or stale beyond the maximum: this request waits
            if entry.inflight is None and now >= entry.next_attempt_at and not admitted:
                refused = self._deferred(entry, now)
                if refused is not None:
                    view = self._view(entry, now)
                    return KeyView(None, "jwks_uri", error=f"{view.error}; the retry is deferred: {refused}",
                                   fetched_at=view.fetched_at)
            if entry.inflight is not None or now >= entry.next_attempt_at:
                await self._refresh(entry)
        elif kid is not None and not any(key.kid == kid for key in entry.keyset.keys):
            if entry.inflight is not None:
                await asyncio.shield(entry.inflight)
            elif now - entry.last_kid_refetch >= self.settings.jwks_cooldown and now >= entry.next_attempt_at \
                    and self._deferred(entry, now) is None:
                entry.last_kid_refetch = now
                await self._refresh(entry)
        elif now >= entry.expires_at and entry.inflight is None and now >= entry.next_attempt_at \
                and self._deferred(entry, now) is None:
            self._start(entry)  # in flight at once: the requests of this same moment are not charged for it too
        return self._view(entry, self.clock())

    def vouch(self, uri: str) -> None:
        """A token was validated with the key set of `uri` (Verifier.validate): when only requests name it, its
        fetches are no longer held to their budget (MAX_VOUCHED_PER_HOST and MAX_VOUCHED bound how many)."""
        if uri in self._vouched:
            self._vouched.move_to_end(uri)
            return
        entry = self._entries.get(uri)
        if entry is None or entry.keyset is None or uri in self._configured:
            return
        host = _host(urlsplit(uri))
        same_host = [other for other, item in self._vouched.items() if item[0] == host]
        if any(self._vouched[other][1] == entry.keyset.version for other in same_host):
            return  # a variant of a set already vouched for
        if len(same_host) >= MAX_VOUCHED_PER_HOST:  # the one of this host that validated nothing for longest goes
            del self._vouched[same_host[0]]
        self._vouched[uri] = (host, entry.keyset.version)
        if len(self._vouched) > MAX_VOUCHED:
            self._vouched.popitem(last=False)

    def _admit(self, uri: str, now: float) -> str | None:
        """None when a key set only requests name may be fetched now (counted); else why not."""
        self._admitted = [(at, host) for at, host in self._admitted if now - at < self.settings.jwks_cooldown]
        host = _host(urlsplit(uri))
        within = f"within {self.settings.jwks_cooldown:g} s"
        if sum(1 for _, other in self._admitted if other == host) >= MAX_REQUESTED_FETCHES_PER_HOST:
            return (f"more than {MAX_REQUESTED_FETCHES_PER_HOST} fetches of key sets named by requests on this host "
                    f"{within}")
        if len(self._admitted) >= MAX_REQUESTED_FETCHES:
            return f"more than {MAX_REQUESTED_FETCHES} fetches of key sets named by requests {within}"
        self._admitted.append((now, host))
        return None

    def _deferred(self, entry: Entry, now: float) -> str | None:
        """Why a key set already held may not be fetched again now (an unknown kid, a refresh, a retry), or None:
        configured sets and sets that have verified a token always may (each within its own cooldown and
        backoff); the others spend the budget of sets only requests name. A refusal keeps what is held, and is
        logged and counted once per cooldown."""
        if entry.uri in self._vouched or entry.uri in self._configured:
            return None
        refused = self._admit(entry.uri, now)
        if refused is None:
            return None
        if now - entry.deferred_at >= self.settings.jwks_cooldown:
            entry.deferred_at = now
            self._log_refusal(entry.uri, None, refused, now)
        return refused

    def _log_refusal(self, uri: str, host: str | None, reason: str, now: float) -> None:
        """Log and count a fetch the budget refused: per entry (host None), or per host for new URLs, each at
        most once per cooldown (a caller sending new URLs cannot flood the log)."""
        if host is not None:
            self._refusals_logged = {name: at for name, at in self._refusals_logged.items()
                                     if now - at < self.settings.jwks_cooldown}
            if host in self._refusals_logged:
                return
            self._refusals_logged[host] = now
        log.warning("jwks_fetch_deferred", uri=key_set_label(uri), reason=reason)
        if self.on_fetch:
            self.on_fetch(uri, "deferred")

    def _entry(self, uri: str) -> Entry:
        """A new entry for a URI only requests name, evicting the least recently used such entry at the bound."""
        if uri not in self._configured:
            if len(self._requested) >= MAX_REQUESTED_KEY_SETS:  # the least recently used goes, vouched ones last
                oldest = next((other for other in self._requested if other not in self._vouched),
                              next(iter(self._requested)))
                del self._requested[oldest]
                self._entries.pop(oldest, None)  # an in-flight fetch finishes on its own Entry, then is dropped
            self._requested[uri] = None
        return self._entries.setdefault(uri, Entry(uri))

    async def view_discovered(self, issuer: str, kid: str | None) -> KeyView:
        state = self._discovered.setdefault(issuer, Discovered())
        while state.jwks_uri is None:
            now = self.clock()
            if state.inflight is None and now >= state.next_attempt_at:
                state.inflight = self._spawn(self._discover(issuer, state))
            if state.inflight is not None:
                await asyncio.shield(state.inflight)
            current = self._discovered.get(issuer)
            if current is None:
                return KeyView(None, "discovery", error="the profile's discovery was removed by a reload")
            if current is state:
                if state.jwks_uri is None:
                    return KeyView(None, "discovery", error=state.error or "discovery pending")
                break
            state = current  # removed and added again by reloads while this request waited: wait for that one
        if state.jwks_uri not in self._configured:  # discovery is configured (profiles, AUTHORIZERS_JSON): its set too
            self._configure(state.jwks_uri)
        view = await self.view(state.jwks_uri, kid)
        return KeyView(view.keyset, "discovery", view.stale_seconds, view.error, view.fetched_at)

    def _usable(self, entry: Entry, now: float) -> bool:
        """A set serves while fresh, then stale for at most JWKS_MAX_STALE past the end of its freshness."""
        return entry.keyset is not None and now < entry.expires_at + self.settings.jwks_max_stale

    def _view(self, entry: Entry, now: float) -> KeyView:
        source = "jwks_uri"
        if entry.keyset is None:
            return KeyView(None, source, error=entry.last_error or "the key set has not been fetched yet")
        age = now - (entry.fetched_at or now)
        if not self._usable(entry, now):
            return KeyView(None, source, error=f"the last good key set is {int(age)} s old and stale for "
                                               f"{int(now - entry.expires_at)} s, beyond the maximum staleness "
                                               f"({self.settings.jwks_max_stale:g} s); last error: {entry.last_error}")
        # Stale-if-error: past its freshness, and a refresh since then failed, or none may be tried yet (backing off
        # from failures). An unknown kid's refetch that failed while the set was fresh, its backoff over, made every
        # request warn before any refresh of the aged set was tried (found by reviews).
        stale = age if now >= entry.expires_at and entry.last_error is not None \
            and (entry.failed_at >= entry.expires_at or now < entry.next_attempt_at) else None
        return KeyView(entry.keyset, source, stale, entry.last_error, entry.fetched_at)

    # --- fetching ---------------------------------------------------------------------------------------------

    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        """A background task, cancelled by `aclose`. In a context of its own: it is no request's, and its lines
        carried the id of the request that happened to start it (found by a review)."""
        task = asyncio.get_running_loop().create_task(coroutine, context=contextvars.Context())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _refresh(self, entry: Entry) -> None:
        """Single-flight: concurrent callers await the same task (shielded, so a cancelled caller cannot cancel
        everybody's fetch)."""
        await asyncio.shield(self._start(entry))

    def _start(self, entry: Entry) -> asyncio.Task[None]:
        """The entry's fetch in flight, started now if none is. Started in the background, it was in flight only
        once its task ran: every request of the same moment on a stale set was charged to the host's budget for
        the one fetch (found by a review)."""
        if entry.inflight is None:
            entry.inflight = self._spawn(self._fetch_into(entry))
            entry.inflight.add_done_callback(lambda _: setattr(entry, "inflight", None))
        return entry.inflight

    async def _fetch_into(self, entry: Entry) -> None:
        entry.fetches += 1
        started = self.clock()
        try:
            document, headers = await self._get_json(entry.uri)
            if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
                raise FetchError("the response is not a JSON object with a 'keys' array")
            entries, problems = jwk_set(document, allow_oct=False)
        except Exception as exc:  # noqa: BLE001 - whatever a set does, it is a failed fetch (with backoff, counted
            # and shown in /readyz); anything but the two expected errors is a bug, logged
            if not isinstance(exc, (FetchError, KeyError_)):
                log.error("jwks_read_failed", uri=key_set_label(entry.uri), error_type=type(exc).__name__,
                          where=frames(exc))  # where only: its message may quote the body
                exc = FetchError(f"{type(exc).__name__}: the key set could not be read")
            self._failed(entry, str(exc), started)
            if self.on_fetch:
                self.on_fetch(entry.uri, "error")
            return
        for index, problem in problems:
            log.warning("jwks_key_skipped", uri=key_set_label(entry.uri), index=index, problem=problem)
        if not entries:
            # A well-formed set without a usable key is the IdP's word, not a failed fetch: the keys it stopped
            # publishing stop validating now. Kept as stale-if-error, they validated for up to JWKS_MAX_STALE after
            # an IdP emptied its set (found by a review).
            old, entry.keyset = entry.keyset, None
            self._failed(entry, f"the key set has no usable key ({len(problems)} skipped)", started)
            if self.on_fetch:
                self.on_fetch(entry.uri, "empty")
            if old is not None and self.on_change is not None:
                self.on_change(entry.uri, old, key_set([], fetched_at=self.clock()))
            return
        now = self.clock()
        old = entry.keyset
        new = key_set(entries, fetched_at=now, skipped=tuple(problem for _, problem in problems))
        entry.keyset, entry.fetched_at = new, now
        entry.expires_at = now + freshness(headers, now, self.settings)
        entry.last_error, entry.failures, entry.next_attempt_at = None, 0, 0.0
        log.info("jwks_fetched", uri=key_set_label(entry.uri), keys=len(entries), skipped=len(problems),
                 fresh_for=int(entry.expires_at - now))
        if self.on_fetch:
            self.on_fetch(entry.uri, "ok")
        if self.on_change is not None and (old is None or old.version != new.version):
            self.on_change(entry.uri, old, new)

    def _failed(self, entry: Entry, reason: str, started: float) -> None:
        entry.failures += 1
        delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (entry.failures - 1))
        entry.next_attempt_at = started + delay
        entry.last_error, entry.failed_at = reason, started
        log.warning("jwks_fetch_failed", uri=key_set_label(entry.uri), reason=reason, failures=entry.failures,
                    retry_in=round(delay, 1), serving_stale=entry.keyset is not None)

    async def _get_json(self, uri: str) -> tuple[Any, httpx.Headers]:
        """GET with the total timeout, no cross-host redirects, a capped body, HTTP 200 and JSON required."""
        try:
            return await asyncio.wait_for(self._get_json_unbounded(uri), self.settings.jwks_total_timeout)
        except asyncio.TimeoutError:
            raise FetchError(f"timed out after {self.settings.jwks_total_timeout:g} s") from None

    async def _get_json_unbounded(self, uri: str) -> tuple[Any, httpx.Headers]:
        url = uri
        origin = urlsplit(uri)
        for _ in range(_MAX_REDIRECTS + 1):
            problem = check_key_set_url(url)
            if problem:
                raise FetchError(f"the URL {problem}")
            try:
                direct = self._direct is not None and is_loopback_host(urlsplit(url).hostname or "")
                async with (self._direct if direct else self._client).stream(  # type: ignore[union-attr]
                        "GET", url, headers=_IDENTITY) as response:
                    if response.has_redirect_location:  # (`is_redirect` is any 3xx: a 304 was followed
                        # to the same URL until the redirects ran out, 4 requests a fetch; found by a review)
                        target = urljoin(url, response.headers.get("location", ""))
                        problem = check_key_set_url(target)
                        if problem:
                            raise FetchError(f"redirect to a URL that {problem}")
                        parts = urlsplit(target)
                        if origin.scheme == "https" and parts.scheme != "https":
                            raise FetchError("redirect from https to http refused")
                        if _host(parts) != _host(origin):
                            raise FetchError(f"redirect to another host ({_shown(parts.hostname)}) refused")
                        if not _same_port(parts, origin):
                            raise FetchError(f"redirect to another port ({parts.port or 'its default'}) refused")
                        url = target
                        continue
                    if response.status_code != 200:
                        raise FetchError(f"HTTP {response.status_code}")
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > self.settings.jwks_max_bytes:
                        raise FetchError(f"the body is larger than {self.settings.jwks_max_bytes} bytes")
                    # The raw bytes, capped as they arrive; a compressed body (sent although identity was asked
                    # for) is inflated here under the same cap: httpx would inflate a whole chunk first.
                    inflate = _inflater(response.headers.get("content-encoding", ""))
                    body = bytearray()
                    async for chunk in response.aiter_raw():
                        body += inflate(chunk, self.settings.jwks_max_bytes + 1 - len(body)) if inflate else chunk
                        if len(body) > self.settings.jwks_max_bytes:
                            raise FetchError(f"the body is larger than {self.settings.jwks_max_bytes} bytes")
                    headers = response.headers
            except FetchError:
                raise
            except Exception as exc:  # noqa: BLE001 - httpx.HTTPError, and what its transport lets out (an
                # ExceptionGroup from anyio, InvalidURL): a fetch fails, it never fails the request
                raise FetchError(f"{type(exc).__name__}: {_failure(exc)}") from None
            try:
                return msgspec.json.decode(bytes(body)), headers
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):  # a string of bad UTF-8 raised
                raise FetchError("the body is not JSON") from None  # UnicodeDecodeError (found by a review)
        raise FetchError("too many redirects")

    async def _discover(self, issuer: str, state: Discovered) -> None:
        """Read the issuer's discovery document (again, once it expires). A jwks_uri that moved is switched to
        only once its set has loaded; until then, and when the document cannot be read, the one found before keeps
        serving. A reload that removed the issuer meanwhile leaves nothing of this behind."""
        url = discovery_url(issuer)
        try:
            jwks_uri, headers = await self._read_discovery(issuer, url)
            if state.jwks_uri not in (None, jwks_uri) and self._discovered.get(issuer) is state:
                await self._load_moved(state.jwks_uri, jwks_uri)
        except (FetchError, ValueError) as exc:
            state.failures += 1
            state.error = str(exc)
            state.next_attempt_at = self.clock() + min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (state.failures - 1))
            log.warning("discovery_failed", issuer=issuer, reason=state.error, keeping=state.jwks_uri is not None)
            if self.on_fetch:
                self.on_fetch(url, "discovery_error")
            return
        finally:
            state.inflight = None
        if self._discovered.get(issuer) is not state:  # removed by a reload while the document was read
            self._drop_unnamed({jwks_uri})
            return
        now = self.clock()
        previous = state.jwks_uri
        state.jwks_uri, state.error, state.failures = jwks_uri, None, 0
        state.expires_at = now + freshness(headers, now, self.settings)
        if previous is None:
            log.info("discovery_resolved", issuer=issuer, jwks_uri=key_set_label(jwks_uri))
        elif previous != jwks_uri:
            log.warning("discovery_jwks_uri_changed", issuer=issuer, previous=key_set_label(previous),
                        jwks_uri=key_set_label(jwks_uri))
            self._drop_unnamed({previous})

    async def _read_discovery(self, issuer: str, url: str) -> tuple[str, httpx.Headers]:
        """The jwks_uri of the issuer's discovery document, and the document's headers (its freshness). OIDC
        Discovery 1.0 section 4.3: "The issuer value returned MUST be identical to the Issuer URL that was used as
        the prefix to /.well-known/openid-configuration to retrieve the configuration information."""
        host = urlsplit(url).hostname or "?"  # raises ValueError for an issuer such as "http://[::1"
        try:
            document, headers = await self._get_json(url)
        except FetchError as exc:
            raise FetchError(f"discovery document {url}: {exc}") from None
        if not isinstance(document, dict):
            raise FetchError(f"discovery document {url}: not a JSON object")
        metadata = OpenIDProviderMetadata(document)
        if metadata.get("issuer") != issuer:
            raise FetchError(f"discovery document issuer {_shown(metadata.get('issuer'))} differs from the "
                             f"configured issuer {issuer!r}; refusing its jwks_uri")
        if not is_loopback_host(host):
            metadata.validate_issuer()
        jwks_uri = metadata.get("jwks_uri")
        problem = check_key_set_url(jwks_uri) if isinstance(jwks_uri, str) else "is missing or not a string"
        if problem:
            raise FetchError(f"discovery document {url}: its jwks_uri {problem}")
        if not is_loopback_host(host) and is_loopback_host(urlsplit(jwks_uri).hostname or ""):
            # The loopback exemption (http, any port) serves local issuers; a remote one may not use it to send
            # this service to its own host's ports.
            raise FetchError(f"discovery document {url}: a remote issuer's jwks_uri may not be on loopback")
        return jwks_uri, headers

    async def _load_moved(self, previous: str, jwks_uri: str) -> None:
        """Load the key set a re-read discovery document names instead of `previous`; FetchError (the new URI
        dropped again unless named elsewhere) when it cannot be, so the switch waits for a set that works."""
        entry = self._configure(jwks_uri)
        if entry.keyset is None:
            await self._refresh(entry)
        if entry.keyset is None:
            self._drop_unnamed({jwks_uri})
            raise FetchError(f"the discovery document now names {key_set_label(jwks_uri)}, whose key set could "
                             f"not be loaded ({entry.last_error}); still serving {key_set_label(previous)}")

    # --- lifecycle and state ----------------------------------------------------------------------------------

    def prefetch(self, uris: list[str], issuers: list[str]) -> None:
        """Background fetches at startup (and after a reload) so the first validations find their keys."""
        for uri in uris:
            self._named.add(uri)
            entry = self._configure(uri)
            if entry.keyset is None and entry.inflight is None:
                self._start(entry)
        for issuer in issuers:
            self._spawn(self.view_discovered(issuer, None))

    def _configure(self, uri: str) -> Entry:
        """The entry of a key set the configuration names or a profile's discovery found: never evicted, never
        held to the budget of sets only requests name."""
        self._configured.add(uri)
        self._requested.pop(uri, None)
        return self._entries.setdefault(uri, Entry(uri))

    def state(self, uri: str | None = None, issuer: str | None = None,
              algorithms: Iterable[str] = ()) -> dict[str, Any]:
        """`{key_state, fetched_at, age_seconds, kids, error}`; key_state is fresh, stale, unavailable or pending.
        With `algorithms` (a policy's allowed_algs), a set none of whose keys can verify one of them is unavailable:
        every token would fail (found by a review: an RS256 profile served one EC key was ready)."""
        if issuer is not None:
            discovered = self._discovered.get(issuer)
            if discovered is None or discovered.jwks_uri is None:
                error = discovered.error if discovered else None
                return {"key_state": "unavailable" if error else "pending", "fetched_at": None,
                        "age_seconds": None, "kids": [], "error": error}
            uri = discovered.jwks_uri
        entry = self._entries.get(uri or "")
        now = self.clock()
        if entry is None or entry.keyset is None:
            error = entry.last_error if entry else None
            return {"key_state": "unavailable" if error else "pending", "fetched_at": None, "age_seconds": None,
                    "kids": [], "error": error}
        view = self._view(entry, now)
        state = "unavailable" if view.keyset is None else "fresh" if now < entry.expires_at else "stale"
        error = entry.last_error
        algorithms = tuple(algorithms)
        if view.keyset is not None and algorithms and not verifies_any(view.keyset, algorithms):
            state = "unavailable"
            error = (f"no key of the set can verify {', '.join(sorted(algorithms))} (its keys' kty/crv, 'use', "
                     f"'key_ops' and 'alg', and RSA keys of at least {MIN_RSA_BITS} bits)")
        return {"key_state": state, "fetched_at": entry.fetched_at, "age_seconds": int(now - (entry.fetched_at or now)),
                "kids": entry.keyset.shown_kids, "error": error}

    async def maintain(self) -> None:
        """Keep the configured key sets usable without waiting for traffic (run for the app's lifetime): a set
        whose startup fetch failed, or past its freshness, is refetched (backoff respected), a failed discovery
        retried. Else a service gated on /readyz (READY_REQUIRES_KEYS) that started during an IdP outage would
        get no request, so fetch nothing, so never become ready; and a quiet profile would wait for its first
        request to refresh."""
        while True:
            await asyncio.sleep(MAINTAIN_SECONDS)
            now = self.clock()
            for uri in list(self._configured):
                entry = self._entries.get(uri)
                if entry is not None and entry.inflight is None and now >= entry.next_attempt_at and (
                        entry.keyset is None or now >= entry.expires_at):
                    self._start(entry)
            for issuer, state in list(self._discovered.items()):
                if state.inflight is not None or now < state.next_attempt_at:
                    continue
                if state.jwks_uri is None:
                    self._spawn(self.view_discovered(issuer, None))
                elif now >= state.expires_at:  # read the document again: the IdP may have moved its key set
                    state.inflight = self._spawn(self._discover(issuer, state))

    def configured(self) -> frozenset[str]:
        """The URIs of the key sets the configuration names (profiles, authorizers, discovered for profiles)."""
        return frozenset(self._configured)

    def aged(self) -> frozenset[str]:
        """The key sets whose age /metrics reports: those configured, and for a profile whose discovery has not
        found its key set, the discovery document's URL (infinitely old until it does: a discovery profile whose
        IdP was down since startup had no series, and an alert on the age stayed silent; found by a review)."""
        unfound = (discovery_url(issuer) for issuer, state in self._discovered.items() if state.jwks_uri is None)
        return frozenset(self._configured).union(unfound)

    def held(self) -> frozenset[str]:
        """The URIs of the key sets held now (configured, or named by recent requests)."""
        return frozenset(self._entries)

    def fetch_count(self, uri: str) -> int:
        entry = self._entries.get(uri)
        return entry.fetches if entry else 0

    def forget(self, uris: set[str], issuers: set[str] = frozenset(), keep: set[str] = frozenset()) -> None:
        """After a reload: drop the key sets nothing configured names any more (the others survive untouched),
        and the discovery of `issuers` no profile uses any more with the key set it found, unless in `keep`
        (URIs the configuration still names). Nothing dropped is fetched again, in the background or otherwise."""
        found = {state.jwks_uri for issuer in issuers if (state := self._discovered.pop(issuer, None)) is not None
                 and state.jwks_uri is not None}
        self._named -= set(uris)
        self._drop_unnamed(set(uris) | (found - set(keep)))

    def _drop_unnamed(self, uris: set[str]) -> None:
        """Drop the key sets of `uris` that neither the configuration names nor a discovery still leads to."""
        still_discovered = {state.jwks_uri for state in self._discovered.values()}
        for uri in uris - self._named - still_discovered:
            self._entries.pop(uri, None)
            self._configured.discard(uri)
            self._requested.pop(uri, None)

    async def aclose(self) -> None:
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # a fetch in flight ends before its client closes
        await self._client.aclose()
        if self._direct is not None:
            await self._direct.aclose()
