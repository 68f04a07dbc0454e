"""Settings come from the environment, are checked once at startup, and a bad one stops the process naming it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.server import ROOT
from app.settings import SettingsError, load_settings


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
], ids=["port-not-a-number", "api-keys-empty", "api-keys-blank", "api-key-not-ascii", "host-name", "host-bad-ip",
        "every-problem", "min-age-above-max-age", "connect-above-total-timeout"])
def test_a_bad_setting_is_refused_naming_the_variable(environ, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(environ)


@pytest.mark.parametrize("environ", [{"JWKS_MAX_AGE": "60"}, {"JWKS_TOTAL_TIMEOUT": "1"},
                                     {"MAX_BODY_BYTES": "8192"}], ids=["max-age", "total-timeout", "body"])
def test_one_setting_below_the_others_default_is_taken_as_meant(environ):
    load_settings(environ)  # JWKS_MAX_AGE=60 under the default floor of 300: the ceiling wins, as it always did


def test_good_settings_are_read_as_given():
    settings = load_settings({"API_KEYS": "k1, k2", "HOST": "::", "PORT": "9000"})
    assert (settings.api_keys, settings.host, settings.port) == (("k1", "k2"), "::", 9000)
    assert load_settings({}).api_keys == ()  # unset: no API keys


def test_python_m_app_exits_2_naming_the_bad_setting():
    done = subprocess.run([sys.executable, "-m", "app"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOST": "localhost", "API_KEYS": ""})
    assert done.returncode == 2
    assert "HOST: must be an IP address" in done.stderr and "API_KEYS: is set but names no key" in done.stderr
