"""Settings come from the environment, are checked once at startup, and a bad one stops the process naming it."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from app.server import ROOT
from app.settings import SettingsError, load_settings
from tests.service import Service


@pytest.mark.parametrize("environ, message", [
    ({"PORT": "abc"}, "PORT:"),
    ({"API_KEYS": ""}, "API_KEYS: is set but names no key"),
    ({"API_KEYS": " , "}, "API_KEYS: is set but names no key"),
    ({"API_KEYS": "clé"}, "API_KEYS: keys must be printable ASCII"),
    ({"HOST": "localhost"}, "HOST: must be an IP address"),
    ({"HOST": "999.1.1.1"}, "HOST: must be an IP address"),
    ({"PORT": "abc", "HOST": "x"}, "HOST: must be an IP address.*; PORT:"),
    ({"JWKS_MIN_AGE": "7200", "JWKS_MAX_AGE": "3600"}, "JWKS_MIN_AGE: must not exceed JWKS_MAX_AGE"),
    ({"JWKS_CONNECT_TIMEOUT": "10", "JWKS_TOTAL_TIMEOUT": "5"}, "JWKS_CONNECT_TIMEOUT: must not exceed"),
    ({"PORT": "\uff18\uff10\uff10\uff10"}, "PORT: must be a whole number"),
    ({"PORT": "8_000"}, "PORT: must be a whole number"),
    ({"JWKS_COOLDOWN": "nan"}, "JWKS_COOLDOWN: must be a number"),
    ({"API_KEYS": "k1," + "k" * 40}, r"API_KEYS: keys must be at least 16 characters \(1 of 2 are shorter\)"),
    ({"JWKS_URI_ALLOWLIST": "*.example.com, https://login.example.org"},
     "JWKS_URI_ALLOWLIST: 'https://login.example.org' is not a host glob"),
    ({"JWKS_URI_ALLOWLIST": "keys.example.com:443"}, "JWKS_URI_ALLOWLIST: 'keys.example.com:443' is not a host glob"),
    # Found by a review: two colons sent a URL with a port down the IPv6 branch ("write an IPv6 address alone").
    ({"JWKS_URI_ALLOWLIST": "https://keys.example.com:443"}, "is not a host glob: write the host alone, such as "
                                                             r"\*.example.com"),
    ({"RATE_LIMIT_STORAGE": "redis://user:hunter2@127.0.0.1:63x9/0"}, "RATE_LIMIT_STORAGE: the port must be a number"),
    ({"RATE_LIMIT_STORAGE": "redis://127.0.0.1/0"}, "RATE_LIMIT_STORAGE: must name a host and a port"),
    ({"RATE_LIMIT_STORAGE": "redis://127.0.0.1:6379/cache"}, "RATE_LIMIT_STORAGE: the database, after the port"),
    ({"RATE_LIMIT_STORAGE": "memcached://127.0.0.1:11211"}, "RATE_LIMIT_STORAGE: must be memory:// or"),
    ({"RATE_LIMIT_STORAGE": "re\tdis://127.0.0.1:6379/0"}, "RATE_LIMIT_STORAGE: .* without spaces or control"),
    ({"JWKS_CA_FILE": "/nonexistent/ca.pem"}, "JWKS_CA_FILE: cannot read '/nonexistent/ca.pem': No such file"),
    ({"JWKS_CA_FILE": __file__}, "JWKS_CA_FILE: .* holds no PEM CA certificate that loads"),
    ({"JWKS_PROXY": "socks5://hunter2@proxy:1080"}, "JWKS_PROXY: must be an http:// or https:// proxy URL"),
    ({"JWKS_PROXY": "http://user:hunter2@proxy:99999"}, "JWKS_PROXY: must be an http:// or https:// URL with a host"),
    ({"JWKS_PROXY": "http://proxy:3128/hunter2"}, "JWKS_PROXY: must be the proxy's scheme, host and port only"),
    ({"READ_TIMEOUT_SECONDS": "0"}, "READ_TIMEOUT_SECONDS: must be between 0.1 and 600"),
    ({"READ_TIMEOUT_SECONDS": "10s"}, "READ_TIMEOUT_SECONDS: must be a number between 0.1 and 600"),
    # Found by mutation testing: each bound or rule below was untested.
    ({"READY_REQUIRES_KEYS": "maybe"}, "READY_REQUIRES_KEYS: must be true or false"),
    ({"MAX_BODY_BYTES": "0"}, "MAX_BODY_BYTES:"),
    ({"JWKS_PROXY": "http://proxy.internal:0"}, "JWKS_PROXY:"),
    ({"WORKERS": "0"}, "WORKERS:"),
    ({"API_KEYS": "0123456789abcdef\x7f"}, "API_KEYS: keys must be printable ASCII"),
    ({"MAX_TOKEN_BYTES": "2000000"}, "MAX_TOKEN_BYTES:"),
], ids=["port-not-a-number", "api-keys-empty", "api-keys-blank", "api-key-not-ascii", "host-name", "host-bad-ip",
        "every-problem", "min-age-above-max-age", "connect-above-total-timeout", "port-fullwidth-digits",
        "port-underscore", "float-nan", "api-key-short", "allowlist-url", "allowlist-port", "allowlist-url-with-port",
        "storage-bad-port",
        "storage-no-port", "storage-named-db", "storage-other-scheme", "storage-control-character", "ca-file-missing",
        "ca-file-not-pem", "proxy-socks", "proxy-bad-port", "proxy-with-a-path", "read-timeout-zero",
        "read-timeout-with-a-unit", "ready-not-a-boolean", "body-cap-zero", "proxy-port-zero", "no-worker",
        "api-key-control-character", "token-cap-above-1MiB"])
def test_a_bad_setting_is_refused_naming_the_variable(environ, message):
    with pytest.raises(SettingsError, match=message) as info:
        load_settings(environ)
    assert "hunter2" not in str(info.value) and "k" * 40 not in str(info.value)


# Found by mutation testing: each bound or rule below was untested (a value just past a bound is refused).
@pytest.mark.parametrize("environ", [
    {"JWKS_URI_ALLOWLIST": "keys.example.com/?api_key=hunter2"}, {"JWKS_URI_ALLOWLIST": "fd00::1]"},
    {"JWKS_URI_ALLOWLIST": "kéys.example.com"}, {"JWKS_URI_ALLOWLIST": "keys\x7f.example.com"},
    {"RATE_LIMIT_STORAGE": "redis+unix://"}, {"RATE_LIMIT_STORAGE": "memory:// x"}, {"RATE_LIMIT_STORAGE": "memory:x"},
    {"API_KEYS": "abcdefgh ijklmnopq"}, {"MAX_BODY_BYTES": str((16 << 20) + 1)}, {"READ_TIMEOUT_SECONDS": "600.5"},
    {"JWKS_MAX_AGE": "0.5"}, {"CONFIG_POLL_SECONDS": "0.05"}, {"JWKS_CONNECT_TIMEOUT": "0.01"},
    {"JWKS_MAX_BYTES": "1023"}, {"MAX_TOKEN_BYTES": "255"}, {"WORKERS": "65"}, {"JWKS_PROXY": "http://:3128"},
    {"JWKS_PROXY": "http://proxy internal:3128"}, {"JWKS_PROXY": "http://proxy.internal:3128#hunter2"},
], ids=lambda environ: "=".join(next(iter(environ.items()))))
def test_a_setting_just_past_a_bound_or_rule_is_refused(environ):
    (name,) = environ
    with pytest.raises(SettingsError, match=f"^{name}: ") as info:
        load_settings(environ)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("environ, field, expected", [
    ({"HOST": " 127.0.0.1"}, "host", "127.0.0.1"), ({"PORT": "+9000"}, "port", 9000),
    ({"PORT": "65535"}, "port", 65535),
    ({"READ_TIMEOUT_SECONDS": ".5"}, "read_timeout_seconds", 0.5),
    ({"READ_TIMEOUT_SECONDS": "600"}, "read_timeout_seconds", 600), ({"JWKS_MIN_AGE": "0"}, "jwks_min_age", 0),
    ({"READY_REQUIRES_KEYS": " true"}, "ready_requires_keys", True),
    ({"READY_REQUIRES_KEYS": ""}, "ready_requires_keys", False),
    ({"LOG_LEVEL": "debug"}, "log_level", "DEBUG"),
    ({"JWKS_PROXY": "http://proxy.internal:3128/"}, "jwks_proxy", "http://proxy.internal:3128/"),
    ({"JWKS_MIN_AGE": "3600", "JWKS_MAX_AGE": "3600"}, "jwks_min_age", 3600),
    ({"JWKS_CONNECT_TIMEOUT": "5", "JWKS_TOTAL_TIMEOUT": "5"}, "jwks_connect_timeout", 5),
], ids=lambda item: "=".join(next(iter(item.items()))) if isinstance(item, dict) else None)
def test_a_setting_at_its_bound_or_written_loosely_is_taken_as_meant(environ, field, expected):
    assert getattr(load_settings(environ), field) == expected


def test_a_ca_file_named_with_spaces_around_it_is_read():
    import certifi

    assert load_settings({"JWKS_CA_FILE": f" {certifi.where()} "}).jwks_ca_file == certifi.where()


@pytest.mark.parametrize("environ", [{"JWKS_MAX_AGE": "60"}, {"JWKS_TOTAL_TIMEOUT": "1"},
                                     {"MAX_BODY_BYTES": "8192"}], ids=["max-age", "total-timeout", "body"])
def test_one_setting_below_the_others_default_is_taken_as_meant(environ):
    load_settings(environ)  # JWKS_MAX_AGE=60 under the default floor of 300: the ceiling wins, as it always did


def test_the_key_set_defaults_are_the_specs():
    """trust.md: the unknown-kid cooldown defaults to 30 s (found by mutation testing: no test read the default)."""
    settings = load_settings({})
    assert settings.jwks_cooldown == 30.0
    assert settings.jwks_default_age == 600.0  # a key set served without Cache-Control: 10 minutes


def test_a_verified_token_cache_of_0_disables_it():
    assert load_settings({"VERIFIED_TOKEN_CACHE_SIZE": "0"}).verified_token_cache_size == 0


def test_good_settings_are_read_as_given():
    one, two = "k1-" + "a" * 13, "k2-" + "b" * 29
    settings = load_settings({"API_KEYS": f"{one}, {two}", "HOST": "::", "PORT": " 9000 ", "JWKS_COOLDOWN": "1.5e1",
                              "JWKS_URI_ALLOWLIST": "*.Example.com, [::1], [kl]eys.example.com, fd00::*",
                              "RATE_LIMIT_STORAGE": "REDISS://user:pw@127.0.0.1:6380/2"})
    assert (settings.api_keys, settings.host, settings.port) == ((one, two), "::", 9000)
    assert settings.jwks_cooldown == 15
    assert settings.jwks_uri_allowlist == ("*.example.com", "::1", "[kl]eys.example.com", "fd00::*")
    assert settings.rate_limit_storage == "rediss://user:pw@127.0.0.1:6380/2"  # the storage reads lower case only
    assert load_settings({}).api_keys == ()  # unset: no API keys


@pytest.mark.parametrize("query, says", [
    ("?db=abc", "Invalid value for 'db'"),
    # Found by a review: these started, and every decision then failed on the storage (under the default
    # on_storage_error: allow, without any rate limit).
    ("?protocol=hunter2", "protocol must be an integer"),
    ("?protocol=4", "protocol must be either 2 or 3"),
    ("?bogus=hunter2", "names an option the Redis client does not take"),
    ("?ssl_cert_reqs=none", "names an option the Redis client does not take (or one that needs rediss://)"),
    # Found by a review: a traceback (AttributeError), and three that started with every decision failing.
    ("?retry=hunter2", "an option in the URL's query is not one the Redis client can use (AttributeError)"),
    ("?encoding=hunter2", "encoding must be a text encoding writing ASCII as ASCII"),
    ("?encoding=utf-16", "encoding must be a text encoding writing ASCII as ASCII"),
    ("?encoding=rot13", "encoding must be a text encoding writing ASCII as ASCII"),
    ("?socket_connect_timeout=-1", "socket_connect_timeout must be a number of seconds above 0"),
    ("?socket_timeout=0", "socket_timeout must be a number of seconds above 0"),
    ("?db=99999999999999999999999", "db must be a database index from 0"),
    ("?db=2147483648", "db must be a database index from 0"), ("?db=-1", "db must be a database index from 0"),
    # A health check before every command: against a Redis before 7.2 it reads the refusal of CLIENT SETINFO as its
    # PING's answer, so every decision failed on the storage (found by mutation testing).
    ("?health_check_interval=-1", "health_check_interval must be a number of seconds from 0"),
    # A TLS option's value is the operator's: the client's message quotes it ("Flag: hunter2").
    ("?ssl_cert_reqs=hunter2", "Invalid SSL Certificate Requirements Flag"),
], ids=["db-not-a-number", "protocol-not-a-number", "protocol-4", "unknown-option", "tls-option-without-tls",
        "retry-not-an-object", "unknown-encoding", "utf-16", "not-a-text-encoding", "negative-connect-timeout",
        "zero-timeout", "db-out-of-range", "db-past-the-largest", "db-negative", "negative-health-check-interval",
        "tls-option-value"])
def test_a_redis_url_the_storage_refuses_stops_startup_naming_the_variable_not_the_url(query, says):
    from app.server import create_app

    scheme = "rediss" if query.startswith("?ssl_") and "none" not in query else "redis"
    with pytest.raises(SettingsError, match=r"^RATE_LIMIT_STORAGE: ") as info:
        create_app(load_settings({"RATE_LIMIT_STORAGE": f"{scheme}://:hunter2@127.0.0.1:6379/0{query}"}))
    assert says in str(info.value) and "hunter2" not in str(info.value)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0?protocol=3&client_name=jwt-decision",
                                 "rediss://127.0.0.1:6379/0?ssl_cert_reqs=required", "redis+unix:///run/redis.sock?db=1"])
def test_a_redis_url_with_options_the_client_takes_is_accepted_without_connecting(url):
    from app.ratelimit import Budgets

    assert Budgets(url).backend == "redis"


def test_python_m_app_exits_2_naming_the_bad_setting():
    done = subprocess.run([sys.executable, "-m", "app"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOST": "localhost", "API_KEYS": ""})
    assert done.returncode == 2
    assert "HOST: must be an IP address" in done.stderr and "API_KEYS: is set but names no key" in done.stderr


@pytest.mark.parametrize("environ, says", [
    ({"ISSUER_PROFILES_JSON": "{"}, "configuration error: ISSUER_PROFILES_JSON: $: not valid JSON"),
    ({"RATE_LIMIT_STORAGE": "redis://127.0.0.1:6379/0?db=abc"}, "configuration error: RATE_LIMIT_STORAGE: "),
], ids=["profiles-not-json", "storage-option"])
def test_python_m_app_openapi_exits_2_with_one_line_for_a_bad_configuration(environ, says):
    """It printed a traceback where `serve` prints one line (found by a review)."""
    done = subprocess.run([sys.executable, "-m", "app", "openapi"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", **environ})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(says) and "Traceback" not in done.stderr, done.stderr[-500:]


def test_python_m_app_ignores_sighup_before_it_reads_its_settings_or_imports_anything():
    """Until granian installs its handler, SIGHUP's default ends the process. Found by reviews: SIG_IGN was set
    after the settings and the working directories, so a SIGHUP in the service's first 0.1 s ended it; then after
    the module's imports, in its first 20-30 ms."""
    code = (
        "import runpy, signal, sys\n"
        "import app.settings as settings\n"
        "seen = []\n"
        "class Watch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'ctypes':  # the first import of app/__main__ that nothing before it made\n"
        "            seen.append(signal.getsignal(signal.SIGHUP))\n"
        "        return None\n"
        "sys.meta_path.insert(0, Watch())\n"
        "def load(*args, **kwargs):\n"
        "    seen.append(signal.getsignal(signal.SIGHUP))\n"
        "    raise settings.SettingsError('stopped here')\n"
        "settings.load_settings = load\n"
        "sys.argv = ['app']\n"
        "try:\n"
        "    runpy.run_module('app', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(seen == [signal.SIG_IGN, signal.SIG_IGN])\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.stdout.strip().splitlines()[-1] == "True", done.stdout + done.stderr


def _serve(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", **env})


def test_a_second_copy_on_a_port_in_use_stops_instead_of_sharing_it():
    """granian's workers bind with SO_REUSEPORT: without the check, the second copy would start and take half the
    first one's connections."""
    first = Service({"WORKERS": "2"})
    try:
        done = _serve(PORT=str(first.port))
        assert done.returncode == 2, done.stderr
        assert (f"configuration error: HOST 127.0.0.1, PORT {first.port}: the port is in use by another process"
                in done.stderr) and "Traceback" not in done.stderr
        assert httpx.get(first.base + "/healthz").status_code == 200
    finally:
        first.stop()


def test_an_address_this_machine_does_not_have_stops_startup_without_a_traceback():
    done = _serve(HOST="192.0.2.1", PORT="0")  # TEST-NET-1 (RFC 5737): never assigned
    assert done.returncode == 2
    assert "configuration error: HOST 192.0.2.1, PORT 0: cannot listen there" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unusable_metrics_directory_stops_startup_naming_it(tmp_path):
    taken = tmp_path / "a-file"
    taken.write_text("")
    done = _serve(PROMETHEUS_MULTIPROC_DIR=str(taken), PORT="0")
    assert done.returncode == 2
    assert f"configuration error: PROMETHEUS_MULTIPROC_DIR: cannot use '{taken}' as the metrics directory" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_snapshot_directory_the_operator_named_but_cannot_be_used_stops_startup(tmp_path):
    taken = tmp_path / "a-file"
    taken.write_text("")
    done = _serve(JWT_DECISION_SNAPSHOT_DIR=str(taken), PORT="0")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"configuration error: JWT_DECISION_SNAPSHOT_DIR: cannot make a directory in '{taken}'" in done.stderr
