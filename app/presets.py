"""Presets (trust.md section 3): one starter policy per identity provider, decoded and checked once at startup.

A preset file `presets/<provider>.json` holds `provider` (equal to the file name), `title`, `issuer` (a template
such as `https://{tenant_domain}/`, or a list of fixed issuers), `jwks_uri` (a template), `parameters` (name ->
description), optional `defaults` (name -> value), `policy` (VerifyPolicy fields other than the issuer and the key
source; `audiences` may be `[]` or name a parameter, as Firebase's `["{project_id}"]`) and `notes` (the
provider's quirks). Every parameter appears in the issuer template, so an issuer alone gives all the values.

`load_presets(directory)` decodes every file into a frozen `Preset` and fills it with sample values to check
that the policy compiles; a bad file raises ConfigError: `presets/x.json: $.policy.allowed_algs[0]: ...`.

- `Preset.fill(params, *, partial=False) -> dict`: the complete policy (issuer, audiences, allowed_algs,
  jwks_uri, ...) ready for `msgspec.convert(..., VerifyPolicy)`. `audience` (a string, comma-separated, or a
  list of strings) replaces `audiences`. Values are checked against the parameter's kind (a host is a host
  name, not a URL; a region is `us-east-1`; ...); unknown, repeated, malformed or (unless `partial`) missing
  parameters raise `ParameterError` whose problems have `loc == (name,)` (the API answers 422 at
  `["query", name]`). With `partial=True` missing parameters stay as `{placeholders}` (profiles that bring
  their own issuer or keys use this); defaults then fill the issuer but not the jwks_uri, whose placeholders
  only given values fill.
- `Preset.parameters_from_issuer(issuer) -> dict | None`: reverse-matches the issuer template, so a profile
  with `preset: auth0` and `issuer: https://acme.us.auth0.com/` gets `{"tenant_domain": "acme.us.auth0.com"}`
  (and hence its jwks_uri); `{}` for presets without parameters when the issuer is theirs; None otherwise.
- `Preset.template() -> dict`: the policy with the issuer and jwks_uri templates, placeholders unfilled.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import SplitResult, urlsplit

import msgspec
from msgspec import Meta

from app.config import END, ConfigError, convert, decode, json_path, worded
from app.policy import PolicyError, Problem, VerifyPolicy, compile_policy, is_loopback_host

Name = Annotated[str, Meta(pattern=worded(r"^[a-z][a-z0-9_]{0,31}" + END, "a name: 1 to 32 lower-case letters, "
                                          "digits or '_', starting with a letter"))]
Template = Annotated[str, Meta(min_length=1, max_length=512)]
_PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)\}")
_PORT = r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"  # 1 to 65535
_DOMAIN = r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?"
_IPV4 = r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
# A server the operator runs (Keycloak, self-managed GitLab) may also be reached at an IPv4 address or at a name of
# one label (`keycloak:8443` inside a cluster).
_LABELS = r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?"  # one label or more
_SELF_HOSTED = r"(?:" + _IPV4 + "|" + _LABELS + r")(?::" + _PORT + ")?"
_REGION = r"[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}"
_GUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
MAX_AUDIENCES = 64
MAX_AUDIENCE_LENGTH = 2048  # as an inline policy's (app.policy.NonEmpty)
# What a provider's name looks like: a text that does not is never echoed (a token or a secret pasted into the
# wrong place, a 7,000-character path segment).
NAME_LIKE = re.compile(r"[a-z0-9_-]{1,32}")


def _host_hint(value: str) -> str | None:
    if "://" in value:
        return "not a URL: drop 'https://' and any path"
    if "/" in value or "?" in value or "#" in value:
        return "without a path"
    _, colon, port = value.rpartition(":")
    if colon and not _compiled(_PORT).fullmatch(port):
        return "a port is a number from 1 to 65535, in ASCII digits without leading zeros"
    if value != value.lower():
        return "host names are lower case in issuers"
    return None


def _hosted_domain_hint(value: str) -> str | None:
    """A domain of a hosted provider (Auth0, Okta), served on 443 only: its tokens' `iss` has no port."""
    host, colon, port = value.rpartition(":")
    if colon and _compiled(_DOMAIN).fullmatch(host) and _compiled(_PORT).fullmatch(port):
        return "without a port: the provider serves its domains on 443, and its tokens' iss names none"
    return _host_hint(value)


def _project_hint(value: str) -> str | None:
    if value.isascii() and value.isdigit():
        return "the project id, not the project number"
    if "." in value or ":" in value or "/" in value:
        return "the project id alone, not a domain or URL such as acme-prod.firebaseapp.com"
    if value != value.lower():
        return "lower case, as tokens carry it"
    if "_" in value:
        return "hyphens, not underscores"
    return None


def _tenant_hint(value: str) -> str | None:
    if value.lower() in ("common", "organizations", "consumers"):
        return "multi-tenant endpoints have no single issuer: configure one profile per tenant GUID"
    if "." in value:
        return ("v2.0 tokens carry the tenant GUID in 'iss', never a domain name: use the Directory (tenant) ID "
                "from the tenant's Overview page")
    return "lower case, as tokens carry it" if value != value.lower() else None


@dataclass(frozen=True, slots=True)
class Kind:
    """What a parameter's value looks like; `pattern` also matches it inside an issuer (no `/` in any kind)."""

    pattern: str
    expected: str
    sample: str
    hint: Callable[[str], str | None] = lambda _: None

    def problem(self, value: str) -> str | None:
        if len(value) <= 255 and _compiled(self.pattern).fullmatch(value):
            return None
        hint = self.hint(value)
        return f"expected {self.expected} such as {self.sample!r}" + (f" ({hint})" if hint else "")


@lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


# Parameter kinds by parameter name: a preset may only declare parameters listed here.
PARAMETER_KINDS: dict[str, Kind] = {
    "tenant_domain": Kind(_DOMAIN, "a host name", "acme.us.auth0.com", _hosted_domain_hint),
    "okta_domain": Kind(_DOMAIN, "a host name", "acme.okta.com", _hosted_domain_hint),
    "host": Kind(_SELF_HOSTED, "a host name or IPv4 address (with an optional port)", "sso.example.com", _host_hint),
    "gitlab_host": Kind(_SELF_HOSTED, "a host name or IPv4 address (with an optional port)", "gitlab.example.com",
                        _host_hint),
    "authorization_server_id": Kind(r"[A-Za-z0-9]{1,64}", "an authorization server id", "default"),
    "region": Kind(_REGION, "an AWS region", "us-east-1"),
    "user_pool_id": Kind(_REGION + r"_[A-Za-z0-9]{1,55}", "a Cognito user pool id", "us-east-1_AbC123xyZ"),
    "tenant_id": Kind(_GUID, "a tenant GUID", "0f6c2b8e-3d4a-4b7c-9e21-5a8d7f3c1b90", _tenant_hint),
    "project_id": Kind(r"[a-z][a-z0-9-]{4,28}[a-z0-9]",
                       "a project id (6-30 lower-case letters, digits, hyphens; a letter first)", "acme-prod",
                       _project_hint),
    "realm": Kind(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,254}", "a realm name (letters, digits, . _ ~ -)", "acme"),
}
_NOT_IN_POLICY = ("issuer", "jwks_uri", "secret", "public_key", "jwks", "discovery")
# Where the IdP is reached, which may differ from its issuer's host (a custom domain, keys from an internal address)
HOST_PARAMETERS = frozenset(name for name, kind in PARAMETER_KINDS.items() if kind.pattern in (_DOMAIN, _SELF_HOSTED))


class ParameterError(PolicyError):
    """Bad preset parameters; each problem's `loc` is `(parameter name,)`."""

    def __str__(self) -> str:
        return "; ".join(f"{'.'.join(map(str, problem.loc))}: {problem.msg}" for problem in self.problems)


def _cross_check(values: Mapping[str, str]) -> list[Problem]:
    pool, region = values.get("user_pool_id"), values.get("region")
    if pool and region and pool.split("_", 1)[0] != region:
        return [Problem(("user_pool_id",), f"the user pool {pool} is in region {pool.split('_', 1)[0]}, not "
                                          f"{region}: its id starts with its region")]
    return []


def _texts(value: Any) -> list[str]:
    """A template field's texts: the string itself, or the strings of a list (a preset's issuers or audiences)."""
    if isinstance(value, str):
        return [value]
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _respellings(issuer: str, fixed_domain: bool) -> list[tuple[str, str]]:
    """Spellings of an issuer a provider's could have, with what tells them apart: the trailing slash, `http`, and
    where the provider's domain is fixed a host in capitals and a default port written out (found by reviews:
    each loaded, and no token's `iss` ever matched). `http` on a loopback host is a development server's
    (Keycloak's `start-dev` on localhost), not a typo, where the host is the operator's."""
    spellings = [(issuer + "/", "a trailing slash is part of the issuer"),
                 (issuer.rstrip("/"), "a trailing slash is part of the issuer")]
    scheme, separator, rest = issuer.partition("://")
    authority, slash, path = rest.partition("/")
    if fixed_domain and separator and authority != authority.lower():  # (a parameter's kind says so elsewhere)
        spellings.append((f"{scheme}://{authority.lower()}{slash}{path}", "host names are lower case in issuers"))
    if issuer.startswith("http://") and (fixed_domain or not is_loopback_host(url_hostname(issuer) or "")):
        spellings.append(("https://" + issuer[len("http://"):], "the scheme is part of the issuer"))
    if fixed_domain and separator and authority.endswith(":443"):
        spellings.append((f"{scheme}://{authority[:-4]}{slash}{path}", "a default port is part of the issuer"))
    return spellings


def _has_port(url: SplitResult) -> bool:
    """Whether the URL's authority writes a port, even one urlsplit cannot read (`:99999`)."""
    return url.netloc.rpartition("@")[2].rpartition("]")[2].rfind(":") >= 0


def _edit_distance(one: str, other: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions), for host names at startup."""
    previous = list(range(len(other) + 1))
    for i, char in enumerate(one, 1):
        current = [i]
        for j, theirs in enumerate(other, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char != theirs)))
        previous = current
    return previous[-1]


def url_hostname(url: str) -> str | None:
    """The URL's host name (lower-cased by urlsplit), None when it has none or is no URL."""
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def _substitute(text: str, values: Mapping[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda match: values.get(match.group(1), match.group(0)), text)


def _ordered(policy: dict[str, Any]) -> dict[str, Any]:
    """Fields in VerifyPolicy's order, so the issuer and audiences come first for a reader."""
    fields = VerifyPolicy.__struct_fields__
    return {**{name: policy[name] for name in fields if name in policy},
            **{name: value for name, value in policy.items() if name not in fields}}


class Preset(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    provider: Name
    title: Annotated[str, Meta(min_length=1, max_length=200)]
    issuer: Template | Annotated[list[Template], Meta(min_length=1, max_length=8)]
    jwks_uri: Template
    policy: dict[str, Any]
    notes: Annotated[str, Meta(min_length=1, max_length=4096)]
    parameters: dict[Name, Annotated[str, Meta(min_length=1, max_length=500)]] = {}
    defaults: dict[Name, str] = {}
    # Claims one of which a profile should require a value of: where anyone can get a token from the issuer with
    # the audience they choose (every repository on GitHub, every project on gitlab.com), a profile that pins none
    # accepts them all. Loading such a profile logs `profile_not_pinned`.
    pin_one_of: list[Annotated[str, Meta(min_length=1, max_length=200)]] = []

    def template(self) -> dict[str, Any]:
        return _ordered({**copy.deepcopy(self.policy), "issuer": copy.deepcopy(self.issuer),
                         "jwks_uri": self.jwks_uri})

    def values(self, params: Mapping[str, str | Sequence[str]], *, partial: bool = False
               ) -> tuple[dict[str, str], list[str] | None]:
        """The checked parameter values (defaults applied) and the audiences given, if any."""
        problems: list[Problem] = []
        values: dict[str, str] = {}
        audiences: list[str] | None = None
        for name, raw in params.items():
            items = [raw] if isinstance(raw, str) else list(raw)
            if name == "audience":
                audiences = list(dict.fromkeys(part.strip() for item in items for part in item.split(",")
                                               if part.strip()))
                if not audiences or len(audiences) > MAX_AUDIENCES:
                    problems.append(Problem(("audience",), f"expected 1 to {MAX_AUDIENCES} audiences (repeat the "
                                                           "parameter or separate them with commas)"))
                elif any(len(audience) > MAX_AUDIENCE_LENGTH for audience in audiences):  # (it said "1 to 64")
                    problems.append(Problem(("audience",), f"an audience is at most {MAX_AUDIENCE_LENGTH:,} "
                                                           "characters"))
            elif name not in self.parameters:
                takes = ", ".join([*self.parameters, "audience"])
                named = NAME_LIKE.fullmatch(name) is not None  # a text no name is (a token) is never echoed
                problems.append(Problem((name if named else "parameter",),
                                        f"unknown parameter{f' {name!r}' if named else ''}; the {self.provider} "
                                        f"preset takes {takes}", "extra_forbidden"))
            elif len(items) != 1:
                problems.append(Problem((name,), "given more than once"))
                values[name] = ""
            else:
                message = PARAMETER_KINDS[name].problem(items[0])
                if message:
                    problems.append(Problem((name,), message))
                values[name] = items[0]
        for name, description in self.parameters.items():
            if name not in values and name in self.defaults:
                values[name] = self.defaults[name]
            elif name not in values and not partial:
                problems.append(Problem((name,), f"missing: {description}", "missing"))
        if not problems:
            problems.extend(_cross_check(values))
        if problems:
            raise ParameterError(problems)
        return values, audiences

    def fill(self, params: Mapping[str, str | Sequence[str]], *, partial: bool = False) -> dict[str, Any]:
        """The policy with the parameters filled in (see the module docstring). Raises ParameterError."""
        values, audiences = self.values(params, partial=partial)
        policy = self.template()
        policy["issuer"] = (_substitute(policy["issuer"], values) if isinstance(policy["issuer"], str)
                            else policy["issuer"])
        # A partial fill's key set follows only the values given: under a profile's own issuer, a default (gitlab.com)
        # would name another host's keys; the placeholder left makes the profile loader check the issuer instead.
        given = values if not partial else {name: value for name, value in values.items() if name in params}
        policy["jwks_uri"] = _substitute(self.jwks_uri, given)
        template_audiences = policy.get("audiences", [])
        policy["audiences"] = audiences if audiences is not None else [
            _substitute(item, values) if isinstance(item, str) else item for item in template_audiences]
        return _ordered(policy)

    def unfilled(self, policy: Mapping[str, Any], fields: Iterable[str]) -> list[str]:
        """The parameters a partial fill left as `{name}` in these fields of its policy."""
        return sorted({name for field in fields for text in _texts(policy.get(field))
                       for name in _PLACEHOLDER.findall(text) if name in self.parameters})

    @property
    def fixed_keys(self) -> bool:
        """Whether the key set is one URL whatever the parameters (github_actions, google, firebase): then
        parameters cannot give another issuer its own keys."""
        return "{" not in self.jwks_uri

    def near_miss(self, issuer: str, *, named_host: str | None = None) -> str | None:
        """Why an issuer that almost has this preset's shape does not (a trailing slash, `http`, a default port, a
        parameter of the wrong kind, a Cognito pool in another region, another host where the provider's is fixed),
        or None when it is another shape on the provider's own host (a Keycloak before 17 with `/auth`, an Okta org
        server), which discovery may serve. Never None for a host that is not the provider's: discovery would
        trust whoever holds that name (`amazonaws.co`). `named_host`: parameters were given, naming this host; an
        issuer on another host is then another shape (an Entra v1 issuer), taken as written, unless it nearly has
        the preset's shape where its domain is fixed (a Cognito pool's region)."""
        if isinstance(self.issuer, list):
            return f"the {self.provider} preset's issuers are {' or '.join(map(repr, self.issuer))}"
        shape = f"the {self.provider} preset's issuers look like {self.issuer!r}"
        scheme, _, rest = self.issuer.partition("://")
        host = rest.split("/", 1)[0]
        try:
            given = urlsplit(issuer)
            hostname = given.hostname
        except ValueError:  # "https://[x": not a URL at all (urlsplit refuses an unclosed IPv6 bracket)
            return f"{shape}; the issuer given is not a URL"
        fixed_domain = _PLACEHOLDER.sub("", host) != ""
        if fixed_domain:  # the provider's domain is fixed (cognito-idp.{region}.amazonaws.com)
            origin = _issuer_regex(f"{scheme}://{host}", loose=True)
            if not origin.fullmatch(f"{given.scheme}://{given.netloc.lower()}") and named_host is None:
                # Parameters fill the preset's key-set URL for an issuer of another shape (an Entra v1 issuer);
                # a preset without them has one key set, the host's (found by a review: GitHub Enterprise Server
                # with `parameters: {}` loaded github.com's keys).
                return (f"{shape}, on {scheme}://{host}" + ("; for another issuer of this provider (an Entra v1 "
                        "issuer, say) give 'parameters'" if not self.fixed_keys else ""))
        placeholder = _PLACEHOLDER.fullmatch(host)
        hosted = placeholder is not None and PARAMETER_KINDS[placeholder.group(1)].hint is _hosted_domain_hint
        if hosted and _has_port(given) and not is_loopback_host(hostname or ""):
            # Whatever the shape (an Okta org server, an Auth0 path or custom domain): the provider serves its
            # domains on 443 alone, and its issuers name no port. (A mock on localhost is a developer's.)
            return f"{shape}; {placeholder.group(1)}: without a port: the provider serves its domains on 443"
        named = named_host.lower().rstrip(".") if named_host is not None else None
        given_host = hostname.rstrip(".") if hostname is not None else None
        near_host = named is not None and given_host is not None and given_host != named
        if near_host and (fixed_domain or hosted) and _edit_distance(given_host, named) <= 2:  # type: ignore[arg-type]
            # Another host is another shape, but not one a letter or two from a provider's domain (`amazonaws.co`,
            # `auth0.co`). An operator's own hosts (Keycloak, GitLab) may well be: `10.0.0.10` and `10.0.0.15`.
            return f"{shape}: the issuer's host is a letter or two from {named_host!r}, the one named"
        if not fixed_domain and near_host:
            return None  # the host is all parameters: another host than the one they name is another shape
        for other, why in _respellings(issuer, fixed_domain):
            if other != issuer and self.parameters_from_issuer(other) is not None:
                return f"{shape}: {other!r} would fit ({why}, compared exactly)"
        match = _issuer_regex(self.issuer, loose=True).fullmatch(issuer)
        if match is not None:
            details = [f"{name}: {problem}" for name, value in match.groupdict().items()
                       if (problem := PARAMETER_KINDS[name].problem(value))]
            if not details:  # the cross check names the values, which only passed their kinds' checks may be (a
                # newline in a pool id made a forged `configuration error:` line; found by a review)
                details = [f"{problem.loc[0]}: {problem.msg}" for problem in _cross_check(match.groupdict())]
            if details:
                return f"{shape}; {'; '.join(details)}"
        return None

    def parameters_from_issuer(self, issuer: str) -> dict[str, str] | None:
        """The parameter values an issuer gives when it has the shape of this preset's issuer, else None."""
        if isinstance(self.issuer, list):
            return {} if issuer in self.issuer else None
        match = _issuer_regex(self.issuer).fullmatch(issuer)
        if match is None:
            return None
        found = match.groupdict()
        return None if _cross_check(found) else found


@lru_cache(maxsize=64)
def _issuer_regex(template: str, loose: bool = False) -> re.Pattern[str]:
    """The template's issuers; `loose`: any text without `/` for each parameter (to name the one that is off)."""
    parts, last = [], 0
    for match in _PLACEHOLDER.finditer(template):
        name = match.group(1)
        value = "[^/]+" if loose else PARAMETER_KINDS[name].pattern
        parts.append(re.escape(template[last:match.start()]) + f"(?P<{name}>{value})")
        last = match.end()
    return re.compile("".join(parts) + re.escape(template[last:]))


def _template_problems(preset: Preset, stem: str) -> list[tuple[str, str]]:
    """Everything about the file's shape that msgspec cannot see."""
    problems: list[tuple[str, str]] = []
    if preset.provider != stem:
        problems.append(("$.provider", f"must equal the file name {stem!r}"))
    for name in preset.parameters:
        if name not in PARAMETER_KINDS:
            problems.append((json_path("parameters", name),
                             f"unknown parameter kind; known: {', '.join(PARAMETER_KINDS)}"))
    issuer_names = _PLACEHOLDER.findall(preset.issuer) if isinstance(preset.issuer, str) else []
    for name in {name for name in issuer_names if issuer_names.count(name) > 1}:
        problems.append(("$.issuer", f"the placeholder {{{name}}} appears more than once"))
    audiences = preset.policy.get("audiences", [])
    templates: list[tuple[str, Any]] = [(json_path("jwks_uri"), preset.jwks_uri)]
    templates += [(json_path("issuer"), preset.issuer)] if isinstance(preset.issuer, str) else [
        (json_path("issuer", index), item) for index, item in enumerate(preset.issuer)]
    if isinstance(audiences, list) and all(isinstance(item, str) for item in audiences):
        templates += [(json_path("policy", "audiences", index), item) for index, item in enumerate(audiences)]
    else:  # a string would be filled character by character (found by a review)
        problems.append((json_path("policy", "audiences"), "expected an array of strings"))
    for path, text in templates:
        if not isinstance(text, str):
            continue
        for name in _PLACEHOLDER.findall(text):
            if name not in preset.parameters:
                problems.append((path, f"the placeholder {{{name}}} is not a declared parameter"))
        if "{" in _PLACEHOLDER.sub("", text) or "}" in _PLACEHOLDER.sub("", text):
            problems.append((path, "a placeholder is {name}, lower case, with both braces"))
    for name in preset.parameters:
        if name not in issuer_names:
            problems.append((json_path("parameters", name), "every parameter must appear in the issuer template, "
                                                            "so that a profile's issuer gives its value"))
    for name, value in preset.defaults.items():
        message = (PARAMETER_KINDS[name].problem(value) if name in preset.parameters and name in PARAMETER_KINDS
                   else "is not a declared parameter")
        if message:
            problems.append((json_path("defaults", name), message))
    for name in _NOT_IN_POLICY:
        if name in preset.policy:
            problems.append((json_path("policy", name), "not allowed in a preset's policy: the issuer and jwks_uri "
                                                        "are top-level templates, and presets use no other key source"))
    return problems


def _check_compiles(preset: Preset, label: str) -> list[tuple[str, str]]:
    """Fill with sample values and compile, as a profile would; errors point into the file."""
    sample = {name: PARAMETER_KINDS[name].sample for name in preset.parameters}
    filled = preset.fill(sample)
    filled["audiences"] = filled["audiences"] or ["https://api.example.com"]
    policy = convert(filled, VerifyPolicy, label, ("policy",))
    try:
        compile_policy(policy, inline=False)
    except PolicyError as exc:
        return [(json_path(*problem.loc) if problem.loc[:1] in (("issuer",), ("jwks_uri",))
                 else json_path("policy", *problem.loc), problem.msg) for problem in exc.problems]
    return []


def load_presets(directory: Path) -> dict[str, Preset]:
    """Every `*.json` of the directory, by provider. Raises ConfigError for the first bad file."""
    if not directory.is_dir():
        raise ConfigError(str(directory), [("$", "the presets directory does not exist")])
    presets: dict[str, Preset] = {}
    for path in sorted(directory.glob("*.json")):
        label = str(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(label, [("$", f"cannot read the file: {exc.strerror}")]) from None
        preset = decode(data, Preset, label)
        problems = _template_problems(preset, path.stem) or _check_compiles(preset, label)
        if problems:
            raise ConfigError(label, problems)
        presets[preset.provider] = preset
    return presets
