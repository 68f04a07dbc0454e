"""The rule engine: match compiled rules against one request and combine them (authorization.md section 2).

Pure: the request's facts (method, normalised path, headers, query, verified claims) in, a verdict out; no I/O,
no clock. Rules are compiled by `app.ruleset.compile_rules` and indexed by `RuleSet` (or both at once by
`load_rules` from plain JSON values).

    rules = load_rules([{"id": "r", "effect": "allow", "methods": ["GET"]}])
    verdict = evaluate(rules, Facts("GET", "/v1/x", (), (), {"sub": "u"}), "deny")
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, Literal

import msgspec

from app.checks.claims import granted_scopes
from app.paths import spell_as_path, spelled_as_itself, trailing_twin
from app.patterns import (ANYTHING, MISSING, Pattern, PatternError, Value, json_text, resolve_pointer, scope_words,
                          splits_words, texts)
from app.ruleset import ClaimValues, Condition, Effect, Rule, RuleDoc, Variable, compile_rules
from app.token import holds_jwt

__all__ = ["Facts", "Verdict", "RuleResult", "RuleSet", "evaluate", "match_rule", "combine", "load_rules"]

Reason = Literal["rule_allowed", "rule_denied", "default_allow", "default_deny"]
# Header values never shown in a trace: they carry credentials.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})


class Facts(msgspec.Struct, frozen=True, gc=False):
    """What rules see of a request. `headers` names are lower-cased; `claims` is None for an anonymous request."""

    method: str
    path: str  # normalised (app.paths.normalise_path)
    headers: tuple[tuple[str, str], ...]
    query: tuple[tuple[str, str], ...]
    claims: dict[str, Any] | None
    secrets: tuple[str, ...] = ()  # values to hide from the trace (the token)
    # Set by `evaluate` for an anonymous request under `default_effect: allow`: a deny rule's claim variable then
    # stands for any value like any other unresolved one, since no allow rule is needed for the request to pass
    # and withholding the token must not skip the deny (found by a review). Under `deny` the rule does not match,
    # as the contract says: allowing such a request takes an allow rule.
    anonymous_deny_holds: bool = False
    # Query names that are lists or maps to upstreams (`a` for `a[]=1&a[]=2`, `page` for `page[size]&page[number]`,
    # app.readings.name_aliases): to a deny rule's `must_exist` condition their items are not copies of one
    # value, so not ambiguous (a rule reading every parameter refused JSON:API requests; found by a review). To an
    # allow rule, and to `must_absent`, they are.
    lists: frozenset[str] = frozenset()


class RuleResult(msgspec.Struct, gc=False):
    rule: Rule
    matched: bool = False
    variables: dict[str, Value] = msgspec.field(default_factory=dict)
    unresolved: str | None = None  # why a variable could not be resolved (the rule then does not match)
    missing_scopes: tuple[str, ...] = ()  # set when every other condition held: more scopes would match
    conditions: list[dict[str, Any]] | None = None  # with explain only


class Verdict(msgspec.Struct, frozen=True, gc=False):
    effect: Effect
    reason: Reason
    rule: Rule | None
    variables: dict[str, Value]
    missing_scopes: tuple[str, ...]  # scopes that would have turned a default deny into an allow
    trace: list[dict[str, Any]] | None


def _shown(facts: Facts, name: str, value: str) -> str:
    if name in SECRET_HEADERS or any(secret and secret in value for secret in facts.secrets) or holds_jwt(value):
        return "[redacted]"
    return value


def _display(rule: Rule, facts: Facts, variables: dict[str, Value]) -> dict[str, Value]:
    """Variable values as the answer and the trace may show them: none read from a credential header or holding
    the token or anything shaped like one."""
    secrets = [secret for secret in facts.secrets if secret]
    shown: dict[str, Value] = {}
    for variable in rule.variables:
        value = variables.get(variable.name)
        if value is None:  # unresolved (a deny rule then fails closed without it)
            continue
        secret = variable.source == "header" and (variable.key or "") in SECRET_HEADERS
        if not secret:
            parts = (value,) if isinstance(value, str) else value
            secret = any(holds_jwt(part) or any(item in part for item in secrets) for part in parts)
        shown[variable.name] = "[redacted]" if secret else value
    return shown


MAX_TRACE_VALUES = 16  # values of a condition a trace shows (with their count when there are more)

# A variable's value (each element of an array) is at most this long: every path, header and claim value a rule
# sees in practice is shorter, and a bound keeps the substituted pattern one RE2 always compiles.
MAX_VARIABLE_LENGTH = 1024


_REPEATED = object()  # a header or query parameter sent more than once


def _variable_raw(variable: Variable, facts: Facts) -> Any:
    """The value a variable reads, MISSING, _REPEATED, or None for a claim variable of an anonymous request.

    A repeated header or query parameter does not resolve: as an array it would become an alternation the
    client chose (`X-Tenant: victim` and `X-Tenant: mine` matching `^{{tenant}}$` against a claim `mine`), while
    the upstream usually reads one of the values. Arrays come from verified claims only."""
    if variable.source == "jwtClaim":
        if facts.claims is None:
            return None
        return (resolve_pointer(facts.claims, variable.pointer) if variable.pointer is not None
                else facts.claims.get(variable.key or "", MISSING))
    pairs = facts.headers if variable.source == "header" else facts.query
    found = [value for name, value in pairs if name == variable.key]
    if len(found) == 1 and variable.source == "query" and any(  # ASP.NET Core reads `Tenant` as `tenant` too
            value != found[0] and name != variable.key and name.lower() == variable.key.lower()  # type: ignore
            for name, value in pairs):
        return _REPEATED
    return MISSING if not found else found[0] if len(found) == 1 else _REPEATED


def _as_value(raw: Any) -> tuple[Value | None, str]:
    """A variable's value from what it read, or None and why not (to follow the variable's name)."""
    if raw is None:
        return None, "has no verified claims to read (anonymous request)"
    if raw is MISSING:
        return None, "is missing"
    if raw is _REPEATED:
        return None, "is sent more than once (ambiguous)"
    items = raw if isinstance(raw, list) else [raw]
    parts: list[str] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            return None, "is not a string, number or array of them"
        text = item if isinstance(item, str) else json_text(item)
        if not text:  # an empty value would turn `/orgs/{{id}}` into a prefix of every organisation
            return None, "is empty"
        if len(text) > MAX_VARIABLE_LENGTH:  # RE2 may refuse to build a pattern around a huge literal
            return None, f"is longer than {MAX_VARIABLE_LENGTH} characters"
        parts.append(text)
    if not parts:
        return None, "is an empty array"
    return (tuple(dict.fromkeys(parts)) if isinstance(raw, list) else parts[0]), ""


def _variable_value(variable: Variable, facts: Facts) -> tuple[Value | None, str]:
    value, why = _as_value(_variable_raw(variable, facts))
    if value is None:
        return None, f"{variable.source} {variable.key or '/'.join(variable.pointer or ())!r} {why}"
    return value, ""


def uses(condition: Condition | Pattern | None) -> frozenset[str]:
    """The variables a condition's (or a path's) patterns use."""
    if condition is None:
        return frozenset()
    if isinstance(condition, Pattern):
        return frozenset(condition.names)
    return uses(condition.name) | uses(condition.value)


_FAILS_CLOSED = "fails closed: in a deny rule it stands for any value"


def _ambiguous(pairs: list[tuple[str, list[str]]], lists: frozenset[str] | None) -> str | None:
    """The first name given more than once with different values, among the headers or parameters a condition
    reads: the upstream may read either copy, so no answer about "the" value can be trusted. ASP.NET Core reads
    `Tenant` and `tenant` as one name. `lists`, in a deny rule: names whose values are items of one list or map
    (`ids[]` and Facts.lists), where "some item matches" already is the cautious reading."""
    seen: dict[str, list[str]] = {}
    for name, values in pairs:
        if seen.setdefault(name.lower(), values) != values and not (
                lists is not None and (name.endswith("[]") or name in lists)):
            return name
    return None


def _condition(condition: Condition, facts: Facts, variables: dict[str, Value], display: dict[str, Value] | None,
               effect: Effect) -> tuple[bool, dict[str, Any] | None]:
    """`must_exist`: some entry whose name matches has a value matching (any value when none is given). A header
    or parameter the condition reads that is repeated with different values is ambiguous: the condition then
    takes the side that fails closed (does not hold in an allow rule, holds in a deny rule)."""
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
    # The items of a list are each matched by a deny's `must_exist` condition (the cautious reading); to an allow,
    # and to `must_absent`, they are ambiguous like any repeated value.
    lists = facts.lists if effect == "deny" and condition.exists else None
    ambiguous = _ambiguous(compared, lists) if condition.kind != "token" else None
    if ambiguous is not None:
        held = effect == "deny"
    elif condition.value is None:
        held = bool(compared) == condition.exists
    else:
        held = any(condition.value.search(variables, text) for _, values in compared for text in values
                   ) == condition.exists
    if display is None:
        return held, None
    detail: dict[str, Any] = {"field": condition.field, "held": held,
                              "presence": "must_exist" if condition.exists else "must_absent",
                              "value_pattern": condition.value.shown(display) if condition.value else None}
    if condition.name is not None:
        detail["name_pattern"] = condition.name.shown(display)
    if ambiguous is not None:
        detail["ambiguous"] = (f"{ambiguous!r} is sent more than once with different values: the condition fails "
                               "closed")
    # The first MAX_TRACE_VALUES values, and how many there were: a trace listed every value for each rule (found
    # by a review: 67 MB for a 60 KB request, rules x values).
    shown: list[dict[str, Any]] = []
    room, total = MAX_TRACE_VALUES, 0
    for name, values in compared:
        total += len(values)
        if room > 0:
            kept = values[:room]
            room -= len(kept)
            shown.append({"name": name, "values": [_shown(facts, name if condition.kind == "headers" else "", text)
                                                   for text in kept]})
    detail["compared"] = shown
    if total > MAX_TRACE_VALUES:
        detail["compared_count"] = total
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
                  "notValues": sorted(entry.not_values) if entry.not_values is not None else None,
                  "actual": actual[:MAX_TRACE_VALUES],
                  **({"actual_count": len(actual)} if len(actual) > MAX_TRACE_VALUES else {})}


def _unevaluated(rule: Rule, field: str, pattern: Pattern | None, why: str, explain: bool
                 ) -> tuple[bool, dict[str, Any] | None]:
    """A condition of a deny rule that cannot be evaluated (a `must_absent` condition using an unresolved variable,
    or a substituted pattern RE2 cannot build): it holds, so that the deny is not skipped at the client's choosing."""
    assert rule.effect == "deny"
    return True, ({"field": field, "held": True, "pattern": pattern.text if pattern is not None else None,
                   "unresolved": f"{why}: {_FAILS_CLOSED}"} if explain else None)


def _noted(outcome: tuple[bool, dict[str, Any] | None], missing: frozenset[str]) -> tuple[bool, dict[str, Any] | None]:
    """A condition evaluated with unresolved variables standing for any value: the trace says so."""
    held, detail = outcome
    if detail is not None and missing:
        detail["unresolved"] = f"variable {', '.join(sorted(missing))} unresolved: {_FAILS_CLOSED}"
    return held, detail


def _checks(rule: Rule, facts: Facts, variables: dict[str, Value], display: dict[str, Value] | None,
            unresolved: frozenset[str] = frozenset()) -> Iterator[tuple[bool, dict[str, Any] | None]]:
    """Every non-scope condition of a rule, lazily (`display` set: explain). The set lookups (methods, `claims`
    values) come before the patterns, so that most rules that do not match exit without running RE2.

    `unresolved` (deny rules only): variables that could not be resolved, `ANYTHING` in `variables`. A condition
    using one holds when some value would make it hold: a `must_exist` pattern is searched with any text in the
    variable's place (`^/orgs/{{org}}/billing$` still only on such paths), and a `must_absent` one holds. A
    pattern RE2 cannot build once substituted raises PatternError in an allow rule and holds in a deny rule."""
    explain = display is not None
    deny = rule.effect == "deny"
    if rule.methods is not None:
        held = facts.method.upper() in rule.methods
        yield held, ({"field": "methods", "held": held, "expected": sorted(rule.methods), "actual": facts.method}
                     if explain else None)
    for entry in rule.claims:
        yield _claim_values(entry, facts, explain)
    if rule.path is not None:
        missing = uses(rule.path) & unresolved
        if missing and not rule.path_exists:
            yield _unevaluated(rule, "path", rule.path, f"variable {', '.join(sorted(missing))} unresolved", explain)
        else:
            try:
                stops = deny == rule.path_exists
                held, spelling = path_held(rule.path, in_path(variables, rule.slashes, stops), facts.path,
                                           rule.path_exists, deny)
            except PatternError as exc:
                if not deny:
                    raise
                yield _unevaluated(rule, "path", rule.path, f"pattern with variables could not be compiled: {exc}",
                                   explain)
            else:
                detail = None
                if display is not None:  # the pattern with the values spelled as they were matched (in_path)
                    detail = {"field": "path", "held": held,
                              "pattern": rule.path.shown(in_path(display, rule.slashes, stops)),
                              "actual": _shown(facts, "", facts.path),
                              "presence": "must_exist" if rule.path_exists else "must_absent"}
                    if spelling is not None:
                        detail["matched_as"] = _shown(facts, "", spelling)  # the trailing twin (see path_held)
                yield _noted((held, detail), missing)
    for condition in (*rule.headers, *rule.query, *rule.token):
        missing = uses(condition) & unresolved
        if missing and not condition.exists:
            yield _unevaluated(rule, condition.field, condition.value or condition.name,
                               f"variable {', '.join(sorted(missing))} unresolved", explain)
            continue
        try:
            outcome = _noted(_condition(condition, facts, variables, display, rule.effect), missing)
        except PatternError as exc:
            if not deny:
                raise
            outcome = _unevaluated(rule, condition.field, condition.value or condition.name,
                                   f"pattern with variables could not be compiled: {exc}", explain)
        yield outcome


def match_rule(rule: Rule, facts: Facts, explain: bool = False) -> RuleResult:
    """Whether every condition of the rule holds. Scope conditions come last so that a rule failing only on
    scopes says which scopes were missing (RFC 6750 `insufficient_scope`)."""
    result = RuleResult(rule, conditions=[] if explain else None)
    unresolved: set[str] = set()
    reasons: list[str] = []
    for variable in rule.variables:
        value, why = _variable_value(variable, facts)
        if value is None:
            reasons.append(f"variable {variable.name}: {why}")
            if rule.effect != "deny" or (variable.source == "jwtClaim" and facts.claims is None
                                         and not facts.anonymous_deny_holds):
                # An allow rule does not match (fail closed). Nor does a deny rule reading a claim of an anonymous
                # request under `default_effect: deny`: allowing it takes an allow rule (see Facts).
                result.unresolved = reasons[-1]
                return result
            unresolved.add(variable.name)  # fail closed: in a deny rule it stands for any value
            continue
        result.variables[variable.name] = value
    if reasons:
        result.unresolved = "; ".join(reasons) + f" ({_FAILS_CLOSED})"
    anything = dict.fromkeys(unresolved, ANYTHING)
    display = {**_display(rule, facts, result.variables), **anything} if explain else None
    held_all = True
    try:
        for held, detail in _checks(rule, facts, {**result.variables, **anything}, display, frozenset(unresolved)):
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


# The decision path: every rule compiled once, when its rule set is built, into a closure specialised to its
# conditions (a literal header name is a string comparison, a claim named by key one dict lookup), deciding
# exactly as `match_rule` (a property test compares them) without building the explanation.

Check = Callable[[Facts, dict[str, Value]], bool]
Matcher = Callable[[Facts], "RuleResult | None"]
_NO_VARIABLES: dict[str, Value] = {}  # shared by rules without variables; never written to


def _claim_texts(name: str | None, value: Any) -> list[str]:
    """`texts` of a claim's value; `name` set when the claim was read by a one-token pointer or its name."""
    return texts(value, name is not None and splits_words(name, value))


def _variable_getter(variable: Variable) -> Callable[[Facts], Value | None]:
    """The variable's value, or None when the rule must not match (`_variable_value` without the reason)."""
    def get(facts: Facts) -> Value | None:
        raw = _variable_raw(variable, facts)
        if isinstance(raw, str) and 0 < len(raw) <= MAX_VARIABLE_LENGTH:  # the common case, as _as_value has it
            return raw
        return _as_value(raw)[0]
    return get


def _claim_check(entry: ClaimValues) -> Check:
    pointer, values, not_values = entry.pointer, entry.values, entry.not_values
    key = pointer[0] if len(pointer) == 1 else None
    plain = key is not None and not splits_words(key, "")  # a string value of this claim is one text

    def held(facts: Facts, variables: dict[str, Value]) -> bool:
        claims = facts.claims
        value = MISSING if claims is None else claims.get(key, MISSING) if key is not None else resolve_pointer(
            claims, pointer)
        if plain and isinstance(value, str):
            return (values is None or value in values) and (not_values is None or value not in not_values)
        actual = () if value is MISSING else _claim_texts(key, value)
        if values is not None and not any(text in values for text in actual):
            return False
        return not_values is None or not any(text in not_values for text in actual)
    return held


def in_path(variables: dict[str, Value], slashes: frozenset[str], stops: bool) -> dict[str, Value]:
    """Variables as a normalised path spells them (app.paths.spell_as_path): `%` as `%25`, a space as `%20`,
    non-ASCII characters percent-encoded (UTF-8, upper case). So a claim `münchen` matches the path
    `/orgs/m%C3%BCnchen`, and a claim `m%C3%BCnchen` does not (one tenant's id cannot spell another's path).

    A `/` in a value is `%2F`, which no path holds, except for the variables in `slashes` (Rule.slashes). Where a
    match lets a request through (an allow rule's `must_exist`, a deny rule's `must_absent`) a value stands for
    text within one segment, so a self-chosen org slug `victim/reports` cannot reach `/orgs/victim/reports` (found
    by a review), unless the variable says `multiSegment` (GitLab's `project_path`); where a match stops one (a
    deny rule's `must_exist`, an allow rule's `must_absent`) it keeps its slashes, which only makes the rule more
    careful (a deny on a GitHub `repository` `octo/app`: found by the next review); `stops` says so, and the value
    is then read as path segments are (`_stopping`)."""
    for value in variables.values():
        if isinstance(value, str):
            if not (value.isalnum() and value.isascii()) and not spelled_as_itself(value):  # `acme`: at once
                break
        elif not all(map(spelled_as_itself, value)):  # ANYTHING iterates as nothing
            break
    else:
        return variables  # the common case: nothing to spell differently
    if not stops:
        return {name: spell_as_path(value, name in slashes) if isinstance(value, str)
                else value if value is ANYTHING else tuple(spell_as_path(item, name in slashes) for item in value)
                for name, value in variables.items()}
    return {name: value if value is ANYTHING else _stopping(value, name in slashes)
            for name, value in variables.items()}


def _stopping(value: Value, slash: bool) -> Value:
    """A value as a match that stops a request reads it (app.paths.spell_as_path with `merge`): with a slash at an
    end, also without it, since the pattern may hold that slash itself (`/orgs/{{o}}/billing` with `x/`) or not
    (`^{{p}}(/.*)?$` with `/admin`: stripping it stopped such denies; found by a review). A value read as nothing
    (`/`) names no path: any value then stands for it, as for a deny rule's unresolved variable (fail closed)."""
    spellings: list[str] = []
    for item in (value,) if isinstance(value, str) else value:
        spelled = spell_as_path(item, slash, True)
        if not spelled:
            return ANYTHING
        # (every combination: `/admin/` is also `/admin`, or `^{{p}}(/.*)?$` misses `/admin/users`; found by a review)
        spellings += [spelled, spelled.lstrip("/"), spelled.rstrip("/"), spelled.strip("/")]
    spellings = list(dict.fromkeys(spellings))
    return spellings[0] if isinstance(value, str) and len(spellings) == 1 else tuple(spellings)


def path_held(pattern: Pattern, variables: dict[str, Value], path: str, exists: bool, deny: bool
              ) -> tuple[bool, str | None]:
    """Whether a path condition holds, and the spelling that decided it when not the path itself.

    Many frameworks serve `/admin/` with the handler of `/admin` (Litestar, Express, Spring MVC 5) and some the
    reverse, so the path's trailing twin (app.paths.trailing_twin) counts where it makes the rule fail closed: a
    deny rule's `must_exist` holds when either spelling matches (`^/admin$` covers `/admin/`: found by a review),
    and an allow rule's `must_absent` only when neither does. An allow rule's `must_exist` takes the path as it is,
    and so does a deny rule's `must_absent` (else a deny on everything outside `^/public$` would deny `/public`,
    whose twin is outside)."""
    if pattern.search(variables, path):
        return exists, None
    if deny == exists:
        twin = trailing_twin(path)
        if twin is not None and pattern.search(variables, twin):
            return exists, twin
    return not exists, None


def _path_check(pattern: Pattern, exists: bool, deny: bool, slashes: frozenset[str]) -> Check:
    literal, search = pattern.literal, pattern.search
    if literal is not None:
        twin = trailing_twin(literal) if deny == exists else None
        if twin is not None and trailing_twin(twin) != literal:  # "" or "//": no path has them as its twin
            twin = None
        return lambda facts, variables: (facts.path == literal or facts.path == twin) == exists
    if deny == exists:  # path_held without its tuple: the twin counts
        spelled, prefix, folded = bool(pattern.names), pattern.prefix or "", "i" in pattern.flags

        def held(facts: Facts, variables: dict[str, Value]) -> bool:
            if spelled:
                variables = in_path(variables, slashes, True)
            path = facts.path
            if search(variables, path):
                return exists
            if path == "/":
                return not exists
            twin = path[:-1] if path[-1] == "/" else path + "/"  # trailing_twin, inline
            head = twin[:len(prefix)]  # the prefix test of Pattern.search, without its call (most twins fail it)
            if head != prefix and (not folded or (twin.isascii() and head.lower() != prefix)):
                return not exists
            return search(variables, twin) == exists
        return held
    if not pattern.names:  # the variables are not read: nothing to spell as a path would
        return lambda facts, variables: search(variables, facts.path) == exists
    return lambda facts, variables: search(in_path(variables, slashes, False), facts.path) == exists


def _pair_check(condition: Condition, effect: Effect) -> Check:
    """A `headers` or `query` condition: some pair whose name matches has a matching value; a name repeated with
    different values is ambiguous and fails closed (see `_condition`)."""
    assert condition.name is not None
    headers, exists, key, name = condition.kind == "headers", condition.exists, condition.name.literal, condition.name
    value = condition.value.search if condition.value is not None else None
    ambiguous = effect == "deny"
    listed = ambiguous and exists

    def held(facts: Facts, variables: dict[str, Value]) -> bool:
        found, seen = False, {}
        for pair_name, text in facts.headers if headers else facts.query:
            if pair_name == key if key is not None else name.search(variables, pair_name):
                if seen.setdefault(pair_name.lower(), text) != text and not (  # (see _condition)
                        listed and (pair_name.endswith("[]") or pair_name in facts.lists)):
                    return ambiguous
                found = found or value is None or value(variables, text)
        return found == exists
    return held


def _token_check(condition: Condition) -> Check:
    """A `token` condition: some claim whose name matches (or the one a pointer names) has a matching value."""
    pointer, name, exists = condition.pointer, condition.name, condition.exists
    value = condition.value.search if condition.value is not None else None
    key = (pointer[0] if len(pointer) == 1 else None) if pointer is not None else name.literal if name else None
    plain = key is not None and not splits_words(key, "")  # a string value of this claim is one text

    def one(facts: Facts, variables: dict[str, Value]) -> bool:  # the claim named by `key`
        claims = facts.claims
        found = MISSING if claims is None else claims.get(key, MISSING)
        if found is MISSING:
            return not exists
        if value is None or (value(variables, found) if plain and isinstance(found, str)
                             else any(value(variables, text) for text in _claim_texts(key, found))):
            return exists
        return not exists

    def entries(claims: dict[str, Any], variables: dict[str, Value]) -> Iterator[list[str]]:
        if pointer is not None:
            found = resolve_pointer(claims, pointer)
            if found is not MISSING:
                yield _claim_texts(None, found)
        else:
            assert name is not None
            yield from (_claim_texts(claim, item) for claim, item in claims.items() if name.search(variables, claim))

    def some(facts: Facts, variables: dict[str, Value]) -> bool:  # a deeper pointer, or claims a pattern names
        if facts.claims is None:
            return not exists
        for entry in entries(facts.claims, variables):
            if value is None or any(value(variables, text) for text in entry):
                return exists
        return not exists
    return one if key is not None else some


def _granted(claims: dict[str, Any] | None) -> Collection[str]:
    """`granted_scopes` for membership tests, without its ordering work in the common case (`scope` only)."""
    if claims is None:
        return ()
    if "scp" in claims or "permissions" in claims:
        return granted_scopes(claims)
    scope = claims.get("scope")
    return scope_words(scope) if isinstance(scope, str) else ()


def _matcher(rule: Rule) -> Matcher:
    """The rule as one closure. Its `methods` are not tested here: `RuleSet.select` only offers the rules whose
    methods admit the request's."""
    getters = tuple((variable.name, _variable_getter(variable)) for variable in rule.variables)
    checks: tuple[Check, ...] = (
        *map(_claim_check, rule.claims),
        *((_path_check(rule.path, rule.path_exists, rule.effect == "deny", rule.slashes),)
          if rule.path is not None else ()),
        *(_token_check(item) if item.kind == "token" else _pair_check(item, rule.effect) for item in rule.conditions))
    if rule.effect == "deny" and getters:
        return _deny_matcher(rule, getters, checks)

    def match(facts: Facts) -> RuleResult | None:
        variables = _NO_VARIABLES
        if getters:
            variables = {}
            for name, get in getters:
                value = variables[name] = get(facts)  # type: ignore[assignment]
                if value is None:
                    return None  # fail closed: an allow rule does not match
        try:
            for check in checks:
                if not check(facts, variables):
                    return None
        except PatternError:  # a substituted pattern RE2 cannot build: fail closed, as match_rule does
            return None  # (a deny rule with variables has its own matcher, where such a condition holds)
        if variables is _NO_VARIABLES:
            variables = {}
        return _scoped(rule, facts, variables, None)
    return match


def _scoped(rule: Rule, facts: Facts, variables: dict[str, Value], unresolved: str | None) -> RuleResult:
    """The result of a rule whose other conditions held: matched unless a scope condition fails, and then which
    scopes were missing (RFC 6750 `insufficient_scope`)."""
    required, any_scopes = rule.required_scopes, rule.any_scopes
    if not (required or any_scopes):
        return RuleResult(rule, True, variables, unresolved=unresolved)
    granted = _granted(facts.claims)
    missing = tuple(scope for scope in required if scope not in granted)
    any_ok = not any_scopes or any(scope in granted for scope in any_scopes)
    if not missing and any_ok:
        return RuleResult(rule, True, variables, unresolved=unresolved)
    return RuleResult(rule, False, variables, missing_scopes=missing + (() if any_ok else any_scopes))


def _deny_matcher(rule: Rule, getters: tuple[tuple[str, Callable[[Facts], Value | None]], ...],
                  checks: tuple[Check, ...]) -> Matcher:
    """A deny rule with variables, failing closed as `match_rule` does: an unresolved variable stands for any
    value (a `must_absent` condition using it holds), and a condition whose substituted pattern RE2 cannot build
    holds (otherwise a client could skip the deny by sending a header twice, or a value too long to substitute)."""
    used = (*((frozenset(), True) for _ in rule.claims),  # `claims` entries compare exact values: no variable
            *(((uses(rule.path), rule.path_exists),) if rule.path is not None else ()),
            *((uses(item), item.exists) for item in rule.conditions))
    paired = tuple((check, names, exists) for check, (names, exists) in zip(checks, used))
    from_claims = frozenset(variable.name for variable in rule.variables if variable.source == "jwtClaim")

    def match(facts: Facts) -> RuleResult | None:
        variables: dict[str, Value] = {}
        unresolved: set[str] = set()
        for name, get in getters:
            value = get(facts)
            if value is None:
                if facts.claims is None and name in from_claims and not facts.anonymous_deny_holds:
                    return None  # an anonymous request: the deny rule does not match (see Facts)
                unresolved.add(name)
            else:
                variables[name] = value
        matching = {**variables, **dict.fromkeys(unresolved, ANYTHING)} if unresolved else variables
        for check, names, exists in paired:
            if unresolved and not exists and not unresolved.isdisjoint(names):
                continue  # holds: fails closed
            try:
                if not check(facts, matching):
                    return None
            except PatternError:
                continue  # holds: fails closed
        return _scoped(rule, facts, variables, "unresolved" if unresolved else None)
    return match


BUCKET = 8  # characters of a path prefix that sort rules into buckets


class RuleSet(tuple):  # type: ignore[type-arg]
    """Compiled rules in their order, each also as a matcher, plus an index of the rules a request can match.

    With deny overrides every rule is evaluated, but a rule that provably cannot match may be skipped: one whose
    `methods` excludes the request's method, or one whose path must match a pattern that every match starts
    with a literal text (`^/admin/...`) the path does not start with. Rules are bucketed by the first `BUCKET`
    characters of that text (shorter texts, `i` patterns and path-absent rules are in every bucket); a bucket
    keeps the original order, so priority ties still go to the earlier rule.
    """

    def __init__(self, rules: Sequence[Rule]) -> None:
        self._by_bucket: dict[str, list[int]] = {}
        self._unbucketed: list[int] = []
        for position, rule in enumerate(self):
            prefix = rule.path.prefix if rule.path is not None and rule.path_exists else None
            if prefix is not None and "i" not in rule.path.flags and len(prefix) >= BUCKET:
                self._by_bucket.setdefault(prefix[:BUCKET], []).append(position)
            else:
                self._unbucketed.append(position)
        self._methods = frozenset(method for rule in self if rule.methods is not None for method in rule.methods)
        # What the rules read besides the path, for the readings of a request (app.readings.readings).
        self.query_rules = sum(1 for rule in self if rule.query or any(item.source == "query"
                                                                         for item in rule.variables))
        self.reads_headers = any(rule.headers or any(item.source == "header" for item in rule.variables)
                                 for rule in self)
        self.reads_methods = any(rule.methods is not None for rule in self)
        self._matchers = tuple(_matcher(rule) for rule in self)
        self._selected: dict[tuple[str, str | None, str | None], tuple[Matcher, ...]] = {}

    def select(self, method: str, path: str) -> tuple[Matcher, ...]:
        """The matchers of the rules that can match `method` (upper-case) on `path`, in order (memoised per
        method and bucket, both bounded by the rule set: an unknown method or bucket shares the catch-all entry)."""
        known_method = method if method in self._methods else ""
        bucket: str | None = path[:BUCKET]
        if bucket not in self._by_bucket:
            bucket = None
        # A path condition may be decided on the path's trailing twin (path_held), whose first BUCKET characters
        # differ from the path's only when it is that short.
        twin = trailing_twin(path) if len(path) <= BUCKET else None
        other = twin[:BUCKET] if twin is not None and twin[:BUCKET] != bucket else None
        if other not in self._by_bucket:
            other = None
        selected = self._selected.get((known_method, bucket, other))
        if selected is None:
            positions = sorted({*self._unbucketed, *(self._by_bucket[bucket] if bucket is not None else ()),
                                *(self._by_bucket[other] if other is not None else ())})
            selected = self._selected[known_method, bucket, other] = tuple(
                self._matchers[position] for position in positions
                if self[position].methods is None or known_method in self[position].methods)
        return selected


def load_rules(value: list[dict[str, Any]]) -> RuleSet:
    """Decode plain JSON values (e.g. from a benchmark or a test) and compile them."""
    return RuleSet(compile_rules(msgspec.convert(value, type=list[RuleDoc])))


def evaluate(rules: Sequence[Rule], facts: Facts, default_effect: Effect = "deny", *, explain: bool = False
             ) -> Verdict:
    """Match every rule, combine (deny overrides), and say which rule decided and, with explain, why."""
    if facts.claims is None and default_effect == "allow" and not facts.anonymous_deny_holds:
        facts = msgspec.structs.replace(facts, anonymous_deny_holds=True)
    if explain:
        results = [match_rule(rule, facts, explain) for rule in rules]
    else:
        indexed = rules if isinstance(rules, RuleSet) else RuleSet(rules)
        results = [result for match in indexed.select(facts.method.upper(), facts.path)
                   if (result := match(facts)) is not None]
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
    variables = _display(rule, facts, result.variables)
    counts = {name: len(value) for name, value in variables.items()
              if isinstance(value, tuple) and len(value) > MAX_TRACE_VALUES}
    return {"index": rule.index, "id": rule.id, "effect": rule.effect, "priority": rule.priority,
            "matched": result.matched, "unresolved": result.unresolved,
            "variables": {name: list(value[:MAX_TRACE_VALUES]) if isinstance(value, tuple) else value
                          for name, value in variables.items()},
            **({"variable_counts": counts} if counts else {}),
            "conditions": result.conditions or []}
