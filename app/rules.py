"""The rule engine: match compiled rules against one request and combine them (authorization.md section 2).

Pure: the request's facts (method, normalised path, headers, query, verified claims) in, a verdict out; no I/O,
no clock. Rules are compiled by `app.ruleset.compile_rules` (or `load_rules` from plain JSON values).

    rules = load_rules([{"id": "r", "effect": "allow", "methods": ["GET"]}])
    verdict = evaluate(rules, Facts("GET", "/v1/x", (), (), {"sub": "u"}), "deny")
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from app.checks.claims import granted_scopes
from app.patterns import MISSING, PatternError, Value, json_text, resolve_pointer, splits_words, texts
from app.ruleset import ClaimValues, Condition, Effect, Rule, RuleSet, Variable, compile_rules, load_rules

__all__ = ["Facts", "Verdict", "RuleResult", "evaluate", "match_rule", "combine", "compile_rules", "load_rules"]

Reason = Literal["rule_allowed", "rule_denied", "default_allow", "default_deny"]
# Header values never shown in a trace: they carry credentials.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})


@dataclass(frozen=True, slots=True)
class Facts:
    """What rules see of a request. `headers` names are lower-cased; `claims` is None for an anonymous request."""

    method: str
    path: str  # normalised (app.paths.normalise_path)
    headers: tuple[tuple[str, str], ...]
    query: tuple[tuple[str, str], ...]
    claims: dict[str, Any] | None
    secrets: tuple[str, ...] = ()  # values to hide from the trace (the token)


@dataclass(slots=True)
class RuleResult:
    rule: Rule
    matched: bool = False
    variables: dict[str, Value] = field(default_factory=dict)
    unresolved: str | None = None  # why a variable could not be resolved (the rule then does not match)
    missing_scopes: tuple[str, ...] = ()  # set when every other condition held: more scopes would match
    conditions: list[dict[str, Any]] | None = None  # with explain only


@dataclass(frozen=True, slots=True)
class Verdict:
    effect: Effect
    reason: Reason
    rule: Rule | None
    variables: dict[str, Value]
    missing_scopes: tuple[str, ...]  # scopes that would have turned a default deny into an allow
    trace: list[dict[str, Any]] | None


def _shown(facts: Facts, name: str, value: str) -> str:
    if name in SECRET_HEADERS or any(secret and secret in value for secret in facts.secrets):
        return "[redacted]"
    return value


def _display(rule: Rule, facts: Facts, variables: dict[str, Value]) -> dict[str, Value]:
    """Variable values as the trace may show them: none read from a credential header or holding the token."""
    shown: dict[str, Value] = {}
    for variable in rule.variables:
        value = variables[variable.name]
        items = (value,) if isinstance(value, str) else value
        secret = variable.source == "header" and (variable.key or "") in SECRET_HEADERS
        shown[variable.name] = ("[redacted]" if secret or any(_shown(facts, "", item) != item for item in items)
                                else value)
    return shown


# A variable's value (each element of an array) is at most this long: every path, header and claim value a rule
# sees in practice is shorter, and a bound keeps the substituted pattern one RE2 always compiles.
MAX_VARIABLE_LENGTH = 1024


def _variable_value(variable: Variable, facts: Facts) -> tuple[Value | None, str]:
    if variable.source == "jwtClaim":
        if facts.claims is None:
            return None, "no verified claims (anonymous request)"
        raw = (resolve_pointer(facts.claims, variable.pointer) if variable.pointer is not None
               else facts.claims.get(variable.key or "", MISSING))
    else:
        pairs = facts.headers if variable.source == "header" else facts.query
        found = [value for name, value in pairs if name == variable.key]
        raw = MISSING if not found else found[0] if len(found) == 1 else found
    where = f"{variable.source} {variable.key or '/'.join(variable.pointer or ())!r}"
    if raw is MISSING:
        return None, f"{where} is missing"
    items = raw if isinstance(raw, list) else [raw]
    parts: list[str] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            return None, f"{where} is not a string, number or array of them"
        text = item if isinstance(item, str) else json_text(item)
        if not text:  # an empty value would turn `/orgs/{{id}}` into a prefix of every organisation
            return None, f"{where} is empty"
        if len(text) > MAX_VARIABLE_LENGTH:  # RE2 may refuse to build a pattern around a huge literal
            return None, f"{where} is longer than {MAX_VARIABLE_LENGTH} characters"
        parts.append(text)
    if not parts:
        return None, f"{where} is an empty array"
    return (tuple(dict.fromkeys(parts)) if isinstance(raw, list) else parts[0]), ""


def _condition(condition: Condition, facts: Facts, variables: dict[str, Value], display: dict[str, Value] | None
               ) -> tuple[bool, dict[str, Any] | None]:
    """`must_exist`: some entry whose name matches has a value matching (any value when none is given)."""
    compared: list[tuple[str, list[str]]] = []
    if condition.kind == "token":
        claims = facts.claims or {}
        if condition.pointer is not None:
            value = resolve_pointer(claims, condition.pointer) if facts.claims is not None else MISSING
            if value is not MISSING:
                words = len(condition.pointer) == 1 and splits_words(condition.pointer[0], value)
                compared.append(("/" + "/".join(condition.pointer), texts(value, words)))
        elif condition.name is not None and condition.name.literal is not None:  # one claim name: look it up
            name = condition.name.literal
            if name in claims:
                compared.append((name, texts(claims[name], splits_words(name, claims[name]))))
        else:
            assert condition.name is not None
            compared = [(name, texts(value, splits_words(name, value))) for name, value in claims.items()
                        if condition.name.search(variables, name)]
    else:
        assert condition.name is not None
        pairs = facts.headers if condition.kind == "headers" else facts.query
        compared = [(name, [value]) for name, value in pairs if condition.name.search(variables, name)]
    if condition.value is None:
        present = bool(compared)
    else:
        present = any(condition.value.search(variables, text) for _, values in compared for text in values)
    held = present == condition.exists
    if display is None:
        return held, None
    detail: dict[str, Any] = {"field": condition.field, "held": held,
                              "presence": "must_exist" if condition.exists else "must_absent",
                              "value_pattern": condition.value.shown(display) if condition.value else None}
    if condition.name is not None:
        detail["name_pattern"] = condition.name.shown(display)
    detail["compared"] = [{"name": name, "values": [_shown(facts, name if condition.kind == "headers" else "", text)
                                                    for text in values]} for name, values in compared]
    return held, detail


def _claim_values(entry: ClaimValues, facts: Facts, explain: bool) -> tuple[bool, dict[str, Any] | None]:
    """Gloo style, exact strings: `values` = has one of them; `notValues` = has none of them."""
    value = resolve_pointer(facts.claims, entry.pointer) if facts.claims is not None else MISSING
    actual = [] if value is MISSING else texts(value, len(entry.pointer) == 1 and splits_words(entry.pointer[0], value))
    held = ((entry.values is None or any(text in entry.values for text in actual))
            and (entry.not_values is None or not any(text in entry.not_values for text in actual)))
    if not explain:
        return held, None
    return held, {"field": entry.field, "held": held, "claim": "/" + "/".join(entry.pointer),
                  "values": sorted(entry.values) if entry.values is not None else None,
                  "notValues": sorted(entry.not_values) if entry.not_values is not None else None, "actual": actual}


def _checks(rule: Rule, facts: Facts, variables: dict[str, Value], display: dict[str, Value] | None
            ) -> Iterator[tuple[bool, dict[str, Any] | None]]:
    """Every non-scope condition of a rule, lazily (`display` set: explain). The set lookups (methods, `claims`
    values) come before the patterns, so that most rules that do not match exit without running RE2."""
    explain = display is not None
    if rule.methods is not None:
        held = facts.method.upper() in rule.methods
        yield held, ({"field": "methods", "held": held, "expected": sorted(rule.methods), "actual": facts.method}
                     if explain else None)
    for entry in rule.claims:
        yield _claim_values(entry, facts, explain)
    if rule.path is not None:
        held = rule.path.search(variables, facts.path) == rule.path_exists
        yield held, ({"field": "path", "held": held, "pattern": rule.path.shown(display), "actual": facts.path,
                      "presence": "must_exist" if rule.path_exists else "must_absent"} if display is not None
                     else None)
    for condition in (*rule.headers, *rule.query, *rule.token):
        yield _condition(condition, facts, variables, display)


def match_rule(rule: Rule, facts: Facts, explain: bool = False) -> RuleResult:
    """Whether every condition of the rule holds. Scope conditions come last so that a rule failing only on
    scopes says which scopes were missing (RFC 6750 `insufficient_scope`)."""
    result = RuleResult(rule, conditions=[] if explain else None)
    for variable in rule.variables:
        value, why = _variable_value(variable, facts)
        if value is None:
            result.unresolved = f"variable {variable.name}: {why}"
            return result  # fail closed: the rule does not match
        result.variables[variable.name] = value
    display = _display(rule, facts, result.variables) if explain else None
    held_all = True
    try:
        for held, detail in _checks(rule, facts, result.variables, display):
            if result.conditions is not None and detail is not None:
                result.conditions.append(detail)
            if not held:
                held_all = False
                if not explain:
                    return result
    except PatternError as exc:  # a substituted pattern RE2 cannot build (e.g. too large): fail closed
        result.unresolved = f"pattern with variables could not be compiled: {exc}"
        return result
    if not (rule.required_scopes or rule.any_scopes):
        result.matched = held_all
        return result
    granted = set(granted_scopes(facts.claims or {}))
    missing = [scope for scope in rule.required_scopes if scope not in granted]
    any_ok = not rule.any_scopes or any(scope in granted for scope in rule.any_scopes)
    if result.conditions is not None:
        if rule.required_scopes:
            result.conditions.append({"field": "requiredScopes", "held": not missing,
                                      "required": list(rule.required_scopes), "granted": sorted(granted),
                                      "missing": missing})
        if rule.any_scopes:
            result.conditions.append({"field": "anyScopes", "held": any_ok, "any": list(rule.any_scopes),
                                      "granted": sorted(granted)})
    result.matched = held_all and not missing and any_ok
    if held_all and not result.matched:
        result.missing_scopes = tuple(missing) + (() if any_ok else rule.any_scopes)
    return result


def combine(results: Sequence[RuleResult], default_effect: Effect) -> tuple[Effect, Reason, RuleResult | None]:
    """Deny overrides: every rule is evaluated; if any matching rule is `deny` the decision is deny; else if any
    matching rule is `allow` it is allow; else the authorizer's `default_effect`.

    The rule reported is the matching rule of the winning effect with the highest `priority` (ties: the earlier
    in the list). Rejected alternatives: first-match (the outcome would depend on rule order, and an allow
    listed above a deny would silently open what the deny closes) and allow-overrides (one broad allow would
    defeat every targeted deny, such as a tier or tenant restriction). Priority orders the report, never the
    outcome.
    """
    best: dict[str, RuleResult] = {}
    for result in results:
        if not result.matched:
            continue
        effect = result.rule.effect
        current = best.get(effect)
        if current is None or result.rule.priority > current.rule.priority:
            best[effect] = result
    if "deny" in best:
        return "deny", "rule_denied", best["deny"]
    if "allow" in best:
        return "allow", "rule_allowed", best["allow"]
    return default_effect, "default_allow" if default_effect == "allow" else "default_deny", None


def _condition_holds(condition: Condition, facts: Facts, variables: dict[str, Value]) -> bool:
    """`_condition` without the trace: stops at the first entry that decides."""
    name, value = condition.name, condition.value
    if condition.kind == "token":
        if facts.claims is None and condition.exists:
            return False
        claims = facts.claims or {}
        if condition.pointer is not None:
            found = resolve_pointer(claims, condition.pointer)
            entries = [] if found is MISSING else [
                texts(found, len(condition.pointer) == 1 and splits_words(condition.pointer[0], found))]
        elif name is not None and name.literal is not None:
            entries = [texts(claims[name.literal], splits_words(name.literal, claims[name.literal]))] \
                if name.literal in claims else []
        else:
            assert name is not None
            entries = [texts(item, splits_words(key, item)) for key, item in claims.items()
                       if name.search(variables, key)]
        present = any(value is None or any(value.search(variables, text) for text in entry) for entry in entries)
    else:
        assert name is not None
        pairs = facts.headers if condition.kind == "headers" else facts.query
        present = any(name.search(variables, key) and (value is None or value.search(variables, text))
                      for key, text in pairs)
    return present == condition.exists


_NO_VARIABLES: dict[str, Value] = {}  # shared by rules without variables; never written to


def _match_quickly(rule: Rule, facts: Facts, method: str) -> RuleResult | None:
    """`match_rule` without the explanation, in the same order of conditions as `_checks` (methods and set
    lookups before patterns), returning None for a rule that neither matches nor misses only scopes: most
    rules of a large set, for which no result object is built. The outcome equals `match_rule`'s (a property
    test compares them)."""
    if rule.methods is not None and method not in rule.methods:
        return None
    if rule.variables:
        variables: dict[str, Value] = {}
        for variable in rule.variables:
            value, _ = _variable_value(variable, facts)
            if value is None:
                return None  # fail closed: the rule does not match
            variables[variable.name] = value
    else:
        variables = _NO_VARIABLES
    claims = facts.claims
    for entry in rule.claims:
        value = resolve_pointer(claims, entry.pointer) if claims is not None else MISSING
        actual = () if value is MISSING else texts(value, len(entry.pointer) == 1
                                                   and splits_words(entry.pointer[0], value))
        if entry.values is not None and not any(text in entry.values for text in actual):
            return None
        if entry.not_values is not None and any(text in entry.not_values for text in actual):
            return None
    try:
        if rule.path is not None and rule.path.search(variables, facts.path) != rule.path_exists:
            return None
        for condition in rule.conditions:
            if not _condition_holds(condition, facts, variables):
                return None
    except PatternError:  # a substituted pattern RE2 cannot build: fail closed, as match_rule does
        return None
    if variables is _NO_VARIABLES:
        variables = {}
    if not (rule.required_scopes or rule.any_scopes):
        return RuleResult(rule, True, variables)
    granted = granted_scopes(claims or {})
    missing = tuple(scope for scope in rule.required_scopes if scope not in granted)
    any_ok = not rule.any_scopes or any(scope in granted for scope in rule.any_scopes)
    if not missing and any_ok:
        return RuleResult(rule, True, variables)
    return RuleResult(rule, False, variables, missing_scopes=missing + (() if any_ok else rule.any_scopes))


def evaluate(rules: Sequence[Rule], facts: Facts, default_effect: Effect = "deny", *, explain: bool = False
             ) -> Verdict:
    """Match every rule, combine (deny overrides), and say which rule decided and, with explain, why."""
    if explain:
        results = [match_rule(rule, facts, explain) for rule in rules]
    else:
        method = facts.method.upper()
        candidates = rules.select(method, facts.path) if isinstance(rules, RuleSet) else rules
        results = [result for rule in candidates if (result := _match_quickly(rule, facts, method)) is not None]
    effect, reason, winner = combine(results, default_effect)
    missing: tuple[str, ...] = ()
    if reason == "default_deny":
        missing = tuple(dict.fromkeys(scope for result in results if result.rule.effect == "allow"
                                      for scope in result.missing_scopes))
    trace = [_trace(result, facts) for result in results] if explain else None
    variables = _display(winner.rule, facts, winner.variables) if winner and winner.variables else {}
    return Verdict(effect, reason, winner.rule if winner else None, variables, missing, trace)


def _trace(result: RuleResult, facts: Facts) -> dict[str, Any]:
    rule = result.rule
    variables = _display(rule, facts, result.variables) if not result.unresolved else {}
    return {"index": rule.index, "id": rule.id, "effect": rule.effect, "priority": rule.priority,
            "matched": result.matched, "unresolved": result.unresolved,
            "variables": {name: list(value) if isinstance(value, tuple) else value
                          for name, value in variables.items()},
            "conditions": result.conditions or []}
