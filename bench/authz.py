"""Authorization workloads: rule sets of any size, the authorizers document, and rule evaluation µs per decision.

The request is a tenant reading its own reports: `GET /v1/organisations/acme/reports?page=2` with a token whose
`org` is `acme` and whose scope has `read:reports`. Every rule but the last is a `deny` or `allow` rule that
does not match it (one of each condition kind: methods, path, flat path, query, headers, token, claims, scopes),
and the last is the org-isolation `allow` with a `{{orgId}}` variable. Deny overrides, so every rule that can match
is evaluated; the engine's index skips the rules whose methods or literal path prefix rule the request out (6 of
10 are evaluated, 556 of 1,000), and `rules_evaluated` says how many.

These rows depend on app/rules.py, app/authorize.py and the routes of app/api/authorize.py: each one is skipped
with a note when its API moves rather than failing the whole run. The adapters are `rule_decider` and
`rules_evaluated` below (the only places that know the rule engine's API).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from bench import tokens as T
from bench.inprocess import interleaved, loop

METHOD = "GET"
PATH = "/v1/organisations/acme/reports"
QUERY = "page=2"
TARGET = f"{PATH}?{QUERY}"
HEADERS = {"x-tenant": "acme", "accept": "application/json"}


def _filler(i: int) -> dict[str, Any]:
    kinds: list[dict[str, Any]] = [
        {"effect": "deny", "methods": ["DELETE"], "path": {"path": {"pattern": f"^/v1/organisations/[^/]+/danger-{i}$"}}},
        {"effect": "deny", "path": {"path": {"pattern": f"^/admin-{i}(/.*)?$"}, "presence": "must_exist"}},
        {"effect": "deny", "claims": [{"key": "org", "values": [f"banned-{i}", f"suspended-{i}"]}]},
        {"effect": "deny", "query": [{"name": {"pattern": f"^debug{i}$"}, "presence": "must_exist"}]},
        {"effect": "deny", "headers": [{"name": {"pattern": f"^x-block-{i}$"}, "presence": "must_exist"}]},
        {"effect": "deny", "token": [{"claim": {"pattern": "^azp$"}, "value": {"pattern": f"^evil-client-{i}$"},
                                      "presence": "must_exist"}]},
        {"effect": "allow", "path": {"path": {"pattern": f"^/v1/other-{i}/.*$"}}, "requiredScopes": [f"admin:{i}"]},
        {"effect": "allow", "methods": ["POST"], "anyScopes": [f"export:{i}", f"reports:export-{i}"]},
        {"effect": "deny", "path": {"pattern": f"^/internal-{i}/", "presence": "present"}, "regexFlags": "i"},
    ]
    return {"id": f"filler-{i}", **kinds[i % len(kinds)]}


def rules(count: int) -> list[dict[str, Any]]:
    """`count` rules in the spec's dialect (authorization.md section 2); only the last one matches."""
    org_isolation = {
        "id": "org-isolation", "effect": "allow", "methods": ["GET", "POST"],
        "path": {"path": {"pattern": "^/v1/organisations/{{orgId}}(/.*)?$"}, "presence": "must_exist"},
        "headers": [{"name": {"pattern": "^x-tenant$"}, "value": {"pattern": "^{{orgId}}$"}, "presence": "must_exist"}],
        "requiredScopes": ["read:reports"],
        "variables": [{"name": "orgId", "source": "jwtClaim", "key": "org"}],
        "priority": 10,
    }
    return [_filler(i) for i in range(count - 1)] + [org_isolation]


def authorizers(alg: str = "RS256", sizes: tuple[int, ...] = (10,)) -> dict[str, Any]:
    """The AUTHORIZERS_JSON document: `bench-<n>` for each size, trusting the benchmark policy inline."""
    return {f"bench-{n}": {"policy": T.policy_doc(alg), "default_effect": "deny", "rules": rules(n),
                           "claims_to_headers": {"sub": "X-User-Id", "org": "X-Org-Id"}} for n in sizes}


def rule_decider(count: int, claims: dict[str, Any]) -> Callable[[], Any]:
    """One decision over `count` compiled rules, as a zero-argument callable. Raises when the engine's API is not
    the one below (ImportError, AttributeError, TypeError): adjust here when app/rules.py changes."""
    engine = importlib.import_module("app.rules")
    compiled = engine.load_rules(rules(count))
    headers = tuple(HEADERS.items()) + (("authorization", "Bearer <token>"),)
    query = (("page", "2"),)
    facts = engine.Facts(METHOD, PATH, headers, query, claims)
    verdict = engine.evaluate(compiled, facts, "deny")
    if getattr(verdict, "effect", None) != "allow":
        raise RuntimeError(f"the benchmark request should be allowed by the last rule, got {verdict!r}"[:300])
    return lambda: engine.evaluate(compiled, facts, "deny")


def rules_evaluated(count: int) -> int:
    """How many of `count` rules a decision on the benchmark request evaluates: those the engine's index
    (`RuleSet.select`) does not rule out by method or path prefix."""
    engine = importlib.import_module("app.rules")
    return len(engine.load_rules(rules(count)).select(METHOD, PATH))


def rule_figures(now: float, sizes: tuple[int, ...] = (10, 1000), repeats: int = 7, calls: int = 2000
                 ) -> dict[int, float | str]:
    """µs per decision for each size, or the reason the row is skipped."""
    claims = T.claims(0, now)
    out: dict[int, float | str] = {}
    runs = {}
    for count in sizes:
        try:
            decide = rule_decider(count, claims)
        except Exception as exc:  # noqa: BLE001 - someone else's module, mid-change: report, do not fail
            out[count] = f"skipped: {type(exc).__name__}: {exc}"[:200]
            continue
        runs[str(count)] = loop(lambda _, decide=decide: decide(), [None] * max(20, calls // max(1, count // 10)))
    if runs:
        for name, value in interleaved(runs, repeats).items():
            out[int(name)] = value
    return out
