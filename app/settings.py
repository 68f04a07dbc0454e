"""Settings: the environment, read once into one frozen object. A bad value stops startup naming the variable."""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from collections.abc import Mapping
from typing import Any, Callable, Literal
from urllib.parse import urlsplit

import msgspec


class SettingsError(ValueError):
    pass


class Settings(msgspec.Struct, frozen=True):
    issuer_profiles_json: str | None = None
    authorizers_json: str | None = None
    jwks_uri_allowlist: tuple[str, ...] = ()
    rate_limit_storage: str = "memory://"
    max_token_bytes: int = 16 * 1024
    max_body_bytes: int = 64 * 1024
    read_timeout_seconds: float = 10.0
    ready_requires_keys: bool = False
    verified_token_cache_size: int = 10_000
    api_keys: tuple[str, ...] = ()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    # Key-set cache (trust.md section 2); tests shorten them.
    jwks_connect_timeout: float = 2.0
    jwks_total_timeout: float = 5.0
    jwks_max_bytes: int = 512 * 1024
    jwks_min_age: float = 300.0
    jwks_max_age: float = 86_400.0
    jwks_default_age: float = 600.0
    jwks_cooldown: float = 30.0
    jwks_max_stale: float = 86_400.0
    jwks_ca_file: str | None = None
    jwks_proxy: str | None = None
    config_poll_seconds: float = 2.0


# ASCII only: Python's int() and float() also read other scripts' digits ("８０００") and "1_000", "inf", "nan".
_INT = re.compile(r"\s*[+-]?[0-9]+\s*")
_FLOAT = re.compile(r"\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*")
API_KEY_MIN_LENGTH = 16


def _int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not _INT.fullmatch(text):
            raise ValueError(f"must be a whole number between {low} and {high}")
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return parse


def _float(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        if not _FLOAT.fullmatch(text):
            raise ValueError(f"must be a number between {low} and {high}")
        value = float(text)
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return parse


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def _list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _shown(entry: str) -> str:
    """An allowlist entry as an error quotes it: without what follows `@` or `?` (a password, a key in a query)."""
    if "@" in entry or "?" in entry:
        return "an entry with credentials or a query"
    return repr(entry)


def _host_globs(text: str) -> tuple[str, ...]:
    """Host name globs (`*.example.com`, `[kl]eys.example.com`), matched against a jwks_uri's host alone: an entry
    with a scheme, a port, a path or credentials would never match anything, and the operator would not learn
    why. An IPv6 address (a glob with two colons or more, `fd00::*`) may be written in brackets."""
    globs = []
    for glob in _list(text):
        if glob.count(":") >= 2 and "://" not in glob:  # IPv6 (a URL such as https://h:443 is told below)
            if glob.startswith("[") and glob.endswith("]"):
                glob = glob[1:-1]
            if any(character in glob for character in "/@?#[]"):
                raise ValueError(f"{_shown(glob)} is not a host glob: write an IPv6 address alone, such as fd00::1")
        elif any(character in glob for character in ":/@?#") or not glob.isascii() or not glob.isprintable():
            raise ValueError(f"{_shown(glob)} is not a host glob: write the host alone, such as *.example.com (no "
                             "scheme, port or path)")
        globs.append(glob.lower())
    return tuple(globs)


def _api_keys(text: str) -> tuple[str, ...]:
    keys = _list(text)
    if not keys:  # `-e API_KEYS=$UNSET` must not open the service
        raise ValueError("is set but names no key (unset it to run without API keys)")
    if not all(key.isascii() and key.isprintable() and " " not in key for key in keys):
        raise ValueError("keys must be printable ASCII without spaces (they are sent as an HTTP header value)")
    short = sum(len(key) < API_KEY_MIN_LENGTH for key in keys)
    if short:  # the count only: a setting's error never shows a key
        raise ValueError(f"keys must be at least {API_KEY_MIN_LENGTH} characters ({short} of {len(keys)} are "
                         "shorter): a key that can be guessed is no key (make one with `openssl rand -hex 24`)")
    return keys


def _host(text: str) -> str:
    try:
        ipaddress.ip_address(text.strip())
    except ValueError:
        raise ValueError("must be an IP address such as 127.0.0.1, 0.0.0.0 or :: (a host name is not resolved)"
                         ) from None
    return text.strip()


def _choice(*choices: str, upper: bool = False) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().upper() if upper else text.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return parse


def _storage(text: str) -> str:
    """Checked here, as the rate limiter's storage would only refuse it while the app is built (with the URL,
    password included, in a traceback). Errors never repeat the URL."""
    text = text.strip()
    if not text.isprintable() or " " in text:  # urlsplit would drop some of them, and read another scheme
        raise ValueError("must be memory:// or a redis://host:port/db URL, without spaces or control characters")
    scheme, colon, rest = text.partition(":")
    text = scheme.lower() + colon + rest  # the storage reads the scheme in lower case only
    parts = urlsplit(text)
    if text.startswith("memory://"):
        return text
    if parts.scheme in ("redis", "rediss"):
        try:
            port = parts.port
        except ValueError:
            raise ValueError("the port must be a number between 0 and 65535") from None
        if not parts.hostname or port is None:
            raise ValueError("must name a host and a port, such as redis://127.0.0.1:6379/0")
        if not re.fullmatch(r"/?|/[0-9]+", parts.path):
            raise ValueError("the database, after the port, is a number, such as redis://127.0.0.1:6379/0")
        return text
    if parts.scheme == "redis+unix" and parts.path:
        return text
    raise ValueError("must be memory:// or a redis://host:port/db URL")


def _text(text: str) -> str:
    return text


def _proxy(text: str) -> str:
    """An HTTP proxy's URL (`http://proxy.internal:3128`, userinfo allowed): errors never repeat it."""
    text = text.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError("must be an http:// or https:// URL with a host and a port number between 1 and 65535"
                         ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or not text.isprintable() or " " in text:
        raise ValueError("must be an http:// or https:// proxy URL such as http://proxy.internal:3128")
    if (parts.path not in ("", "/")) or parts.query or parts.fragment or port == 0:
        raise ValueError("must be the proxy's scheme, host and port only, such as http://proxy.internal:3128")
    return text


def _ca_file(text: str) -> str:
    """A PEM file of CA certificates, loaded here once so that a file that cannot serve stops startup rather than
    failing every key-set fetch."""
    path = text.strip()
    try:
        ssl.create_default_context(cafile=path)
    except OSError as exc:  # ssl.SSLError is an OSError too
        if isinstance(exc, ssl.SSLError):
            raise ValueError(f"{path!r} holds no PEM CA certificate that loads ({exc.reason or exc})") from None
        raise ValueError(f"cannot read {path!r}: {exc.strerror or exc}") from None
    return path


# Variable name -> (field, parser, description for --help).
VARIABLES: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "ISSUER_PROFILES_JSON": ("issuer_profiles_json", _text, "issuer profiles: JSON text or a file path"),
    "AUTHORIZERS_JSON": ("authorizers_json", _text, "authorizers: JSON text or a file path"),
    "JWKS_URI_ALLOWLIST": ("jwks_uri_allowlist", _host_globs,
                           "host globs (*.example.com: no scheme or port) allowed as jwks_uri in inline policies"),
    "RATE_LIMIT_STORAGE": ("rate_limit_storage", _storage, "memory:// (default) or redis://host:port/db"),
    "MAX_TOKEN_BYTES": ("max_token_bytes", _int(256, 1 << 20), "largest token decoded (default 16384)"),
    "MAX_BODY_BYTES": ("max_body_bytes", _int(1024, 16 << 20), "largest request body (default 65536)"),
    "READ_TIMEOUT_SECONDS": ("read_timeout_seconds", _float(0.1, 600),
                             "longest a request's headers (or a kept-alive connection's next request), then its "
                             "body, may take to arrive, s (default 10; late headers close the connection, a late "
                             "body is a 408 BODY_TIMEOUT)"),
    "READY_REQUIRES_KEYS": ("ready_requires_keys", _bool,
                            "/readyz waits for every profile's (and authorizer's own) key set"),
    "VERIFIED_TOKEN_CACHE_SIZE": ("verified_token_cache_size", _int(0, 10_000_000),
                                  "verified-token cache entries per worker (default 10000, 0 disables); the entries "
                                  "also share a budget of 6 KiB each of estimated memory (an overestimate: 60 MiB at "
                                  "the default, whatever the tokens); answers anybody can make (a signature that did "
                                  "not verify, an inline policy) push out a profile's up to a quarter of it"),
    "API_KEYS": ("api_keys", _api_keys,
                 "comma-separated keys (16+ characters each) required in X-API-Key for /v1/* (except presets)"),
    "LOG_LEVEL": ("log_level", _choice("DEBUG", "INFO", "WARNING", "ERROR", upper=True), "DEBUG/INFO/WARNING/ERROR"),
    "LOG_FORMAT": ("log_format", _choice("json", "console"), "json (default) or console"),
    "HOST": ("host", _host, "listen address (default 127.0.0.1)"),
    "PORT": ("port", _int(0, 65535), "listen port (default 8000; 0 picks a free one, logged in granian's "
             "`Listening at` line and shared by every worker)"),
    "WORKERS": ("workers", _int(1, 64), "worker processes (default 1)"),
    "JWKS_CONNECT_TIMEOUT": ("jwks_connect_timeout", _float(0.05, 60), "key-set connect timeout, s (default 2)"),
    "JWKS_TOTAL_TIMEOUT": ("jwks_total_timeout", _float(0.05, 120), "key-set fetch timeout, s (default 5)"),
    "JWKS_MAX_BYTES": ("jwks_max_bytes", _int(1024, 16 << 20), "largest key-set body (default 524288)"),
    "JWKS_MIN_AGE": ("jwks_min_age", _float(0, 86_400), "floor of a key set's max-age, s (default 300)"),
    "JWKS_MAX_AGE": ("jwks_max_age", _float(1, 7 * 86_400), "ceiling of a key set's max-age, s (default 86400)"),
    "JWKS_DEFAULT_AGE": ("jwks_default_age", _float(1, 86_400),
                         "max-age without Cache-Control, s (default 600; clamped to the two above)"),
    "JWKS_COOLDOWN": ("jwks_cooldown", _float(0, 3600), "least time between unknown-kid refetches, s (default 30)"),
    "JWKS_MAX_STALE": ("jwks_max_stale", _float(0, 30 * 86_400), "longest use of a stale key set, s (default 86400)"),
    "JWKS_CA_FILE": ("jwks_ca_file", _ca_file, "PEM file of CA certificates trusted for key-set and discovery "
                     "fetches besides the public ones (an IdP behind a private CA)"),
    "JWKS_PROXY": ("jwks_proxy", _proxy, "HTTP proxy for key-set and discovery fetches, such as "
                   "http://proxy.internal:3128 (HTTPS_PROXY and NO_PROXY are not read)"),
    "CONFIG_POLL_SECONDS": ("config_poll_seconds", _float(0.1, 3600),
                            "config file change check interval, s (default 2)"),
}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems = []
    for variable, (name, parse, _) in VARIABLES.items():
        if variable in environ:
            try:
                values[name] = parse(environ[variable])
            except ValueError as exc:
                problems.append(f"{variable}: {exc}")
    if problems:
        raise SettingsError("; ".join(problems))
    settings = Settings(**values)
    # Two settings the operator set that contradict each other (one set alone against the other's default is
    # taken as meant: the ceiling and the total timeout win, as they always did).
    problems = [f"{low}: must not exceed {high}" for low, high, broken in (
        ("JWKS_MIN_AGE", "JWKS_MAX_AGE", settings.jwks_min_age > settings.jwks_max_age),
        ("JWKS_CONNECT_TIMEOUT", "JWKS_TOTAL_TIMEOUT", settings.jwks_connect_timeout > settings.jwks_total_timeout),
    ) if broken and low in environ and high in environ]
    if problems:
        raise SettingsError("; ".join(problems))
    return settings


def settings_help() -> str:
    lines = ["Settings (environment variables):"]
    lines += [f"  {variable:<28} {description}" for variable, (_, _, description) in VARIABLES.items()]
    return "\n".join(lines)


def settings_table_markdown() -> str:
    """The README's settings table, generated from VARIABLES (a test keeps the README in sync)."""
    rows = ["| variable | meaning |", "|---|---|"]
    rows += [f"| `{variable}` | {description} |" for variable, (_, _, description) in VARIABLES.items()]
    return "\n".join(rows)
