"""How upstreams read a request otherwise than as it was sent, for `app.authorize`: an allow holds only when every
reading an upstream may make of the request is allowed. Query names as PHP, Rack and Express's qs hand them over,
header names with `_` as WSGI, CGI and Rails read them, a POST as the method it overrides itself with; pure
functions of the request's facts (the path's spellings and the `;` split are app.paths')."""

from __future__ import annotations

import re

from msgspec.structs import replace

from app.rules import Facts, RuleSet

# Every query condition of every rule reads each parameter: 8,000 of them cost a 1,000-rule authorizer 40 times
# a plain request (found by a review of hostile costs). Real queries hold a few dozen.
MAX_QUERY_PARAMETERS = 1024


# Where upstreams read a request otherwise than as sent, a reading of it as they read it is decided too, and an
# allow holds only when every reading is allowed (found by reviews, against PHP, Express, Rack, Rails, WSGI and
# ASP.NET Core upstreams). Names are added, never replaced: a rule on `filter[a]` still sees `filter[a]`, and a
# name also read as another beside a different value of it is ambiguous (rules.py) and fails closed.
_NAME_SHAPE = re.compile(r"[\[\]]*([^\[\]]*)(.*)", re.DOTALL)  # leading brackets, the name, what follows
_ODD_NAME = re.compile(r"^\s|\s$|[\x00-\x1f\x7f]")


def odd_names(query: tuple[tuple[str, str], ...]) -> bool:
    """A decoded name with white space at an end or a control character: PHP drops leading spaces (` debug` is
    `debug`) and ends a name at NUL (`debug%00` too); no form or client sends such names."""
    return any(_ODD_NAME.search(name) for name, _ in query)


_RESHAPED = re.compile(r"[\[\]. ]")  # what a name holds that PHP, Rack or qs read otherwise
RESHAPED_RAW = re.compile(r"[\[\]. %+]")  # _RESHAPED or what may decode to it, in a query as sent
_PHP_UNCLOSED = re.compile(r"[ .\[]")


def read_as(name: str) -> tuple[list[str], str | None]:
    """The other names PHP, Rack and Express's qs read a parameter's name as, and the name whose list or map it is
    an item of (`a` for `a[]`, `a[k]`, `a[k][j]`, and Rack's `a[b`), if any: `[a]` is `a`; `a.b`, `a b` and an
    unclosed `a[b` (all of it: `a[b.c` is `a_b_c`) are PHP 8's `a_b`."""
    if not _RESHAPED.search(name):
        return [], None
    base, rest = _NAME_SHAPE.match(name).groups()  # type: ignore[union-attr]
    if not base:
        return [], None
    php = base.replace(".", "_").replace(" ", "_")
    if rest.startswith("[") and "]" in rest:
        return [php] if php != base else [], base
    if rest.startswith("["):  # Rack reads `a[b` as a map `a` too (`a[` alone it keeps as `a[`; found by a review)
        return [f"{php}_" + _PHP_UNCLOSED.sub("_", rest[1:])], base if len(rest) > 1 else None
    return [alias for alias in dict.fromkeys((base, php)) if alias != name], None


def known_as(name: str) -> set[str]:
    """A parameter's name as upstreams may read it, in lower case (`access.token`, `[access_token]`, `ACCESS_TOKEN`
    for `access_token`)."""
    aliases, listed = read_as(name)
    return {alias.lower() for alias in (name, *aliases, *([listed] if listed else []))}


def name_aliases(query: tuple[tuple[str, str], ...]) -> tuple[tuple[tuple[str, str], ...], frozenset[str]] | None:
    """The query with each parameter also under the names PHP, Rack and Express's qs read it by (an item of a list
    or map under the list's name too), and the names that are lists or maps: their items are no copies of one
    value (rules.py). None when no name differs."""
    added: list[tuple[str, str]] = []
    lists: set[str] = set()
    for name, value in query:
        aliases, listed = read_as(name)
        if listed is not None:
            aliases = [listed, *aliases]
            lists.update(aliases)
        added.extend((alias, value) for alias in aliases)
    # A name also sent as itself is no list: `tenant=mine&tenant[]=victim` is two readings of `tenant` (PHP's
    # `['victim']`), ambiguous to a deny as to an allow (found by a review).
    lists.difference_update(name for name, _ in query)
    return ((*query, *added), frozenset(lists)) if added else None


def header_aliases(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...] | None:
    """The headers with `X_Tenant` also as `x-tenant`, as WSGI, CGI (PHP) and Rails read it, and Caddy and
    Traefik pass it on; or None without such a name."""
    added = [(name.replace("_", "-"), value) for name, value in headers if "_" in name]
    return (*headers, *added) if added else None


# Method overrides upstreams honour on a POST: Rack::MethodOverride, Express's method-override (the first of a
# comma-separated list: every item is read here, two methods being a 400), Symfony and Laravel (a query `_method`
# too), Spring's HiddenHttpMethodFilter, ASP.NET Core's HttpMethodOverride.
_OVERRIDE_HEADERS = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})
_METHOD_TOKEN = re.compile(r"[A-Za-z]{1,32}")


def overrides(facts: Facts) -> list[str]:
    """The methods a POST names itself as, besides POST (a `_method` in a body cannot be seen)."""
    if facts.method != "POST":
        return []
    named = [part.strip() for name, value in facts.headers if name.replace("_", "-") in _OVERRIDE_HEADERS
             for part in value.split(",")]
    named += [value.strip() for name, value in facts.query if name == "_method" or "_method" in read_as(name)[0]]
    return sorted({value.upper() for value in named if _METHOD_TOKEN.fullmatch(value)} - {"POST"})


# The query parameters a request's readings may hold in all, when a rule reads the query: what the readings of a
# request could already hold before names were read as upstreams read them (1,024 parameters, split at `;` too,
# each with its dot segments as sent). The readings multiply, each decided on every rule (found by reviews: 16
# readings of 6,000 names took 1.2 s of a worker; 31 readings of 60 took 2.5 s with `(?i)` name patterns).
READING_PARAMETERS = 4 * MAX_QUERY_PARAMETERS


def _joined(*parts: str) -> str:
    return ", ".join(part for part in parts if part)


def readings(facts: Facts, dotted: str | None, split: tuple[tuple[str, str], ...] | None, method: str | None,
              rules: RuleSet) -> list[tuple[Facts, str]]:
    """Every other reading of the request an upstream may make, with what it reads otherwise (see authorize): only
    those that change what some rule reads (the query's names, the headers' names, the method)."""
    headers = header_aliases(facts.headers) if rules.reads_headers else None
    queries = [(facts.query, "")] + ([(split, "the query split at ';' too")] if split is not None else [])
    variants = []
    for query, said in queries:
        variants.append((query, facts.headers, frozenset(), said))
        aliased = name_aliases(query) if rules.query_rules else None
        # Each alone and both: Express reads `debug[]` as `debug` but keeps `X_Key` apart from `X-Key`, PHP both.
        if aliased is not None:
            variants.append((aliased[0], facts.headers, aliased[1],
                             _joined(said, "parameter names as PHP, Rack or Express read them")))
        if headers is not None:
            variants.append((query, headers, frozenset(), _joined(said, "header names with '_' as '-' (WSGI, PHP, "
                                                                        "Rails)")))
        if aliased is not None and headers is not None:
            variants.append((aliased[0], headers, aliased[1], _joined(said, "parameter and header names as PHP reads "
                                                                            "them")))
    readings = []
    for verb in (facts.method, method) if method is not None else (facts.method,):
        for path in (facts.path, dotted) if dotted is not None else (facts.path,):
            for query, sent, lists, said in variants:
                if verb != facts.method or path != facts.path or query is not facts.query or sent is not facts.headers:
                    what = [f"the method {verb} it overrides itself with" if verb != facts.method else "",
                            "the path's dot segments as sent" if path != facts.path else "", said]
                    readings.append((replace(facts, method=verb, path=path, query=query, headers=sent, lists=lists),
                                     "decided as an upstream may read it: " + _joined(*what)))
    return readings
