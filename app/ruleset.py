"""The rule dialect on the wire (authorization.md section 2) and its compilation into plain, pre-compiled rules.

The field names are the seeds' (RequestRocket rules, Gloo claim policies, AWS scope checks), camelCase
included. `compile_rules` checks everything once: every pattern compiled by RE2, every `{{variable}}` declared,
every JSON Pointer parsed, and reports each problem with its location (`[3, "path", "path", "pattern"]`).
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, field

from app.config import END, METHOD, worded
from app.paths import DECODED, percent_encode_non_ascii
from app.patterns import (FLAGS, VARIABLE, Pattern, PatternError, compile_pattern, literal_prefix, parse_pointer,
                          pattern_bytes)
from app.policy import Problem

Presence = Literal["must_exist", "present", "must_absent", "must_not_exist", "absent"]
Effect = Literal["allow", "deny"]
PatternText = Annotated[str, Meta(max_length=4096)]
Name = Annotated[str, Meta(min_length=1, max_length=256)]
Short = Annotated[str, Meta(min_length=1, max_length=256)]
_ABSENT = frozenset({"must_absent", "must_not_exist", "absent"})


class _Doc(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class PatternDoc(_Doc):
    pattern: PatternText


class ClaimSelectorDoc(_Doc):
    """A top-level claim name pattern, or an RFC 6901 pointer for nested claims."""

    pattern: PatternText | None = None
    pointer: Annotated[str, Meta(max_length=1024)] | None = None


class PathDoc(_Doc):
    """`{"path": {"pattern": ...}, "presence": ...}` or the flat `{"pattern": ..., "presence": ...}`."""

    path: PatternDoc | None = None
    pattern: PatternText | None = None
    presence: Presence = "must_exist"


class PairDoc(_Doc):
    name: PatternDoc
    value: PatternDoc | None = None
    presence: Presence = "must_exist"


class TokenDoc(_Doc):
    claim: ClaimSelectorDoc
    value: PatternDoc | None = None
    presence: Presence = "must_exist"


class ClaimValuesDoc(_Doc):
    key: Name | None = None
    pointer: Annotated[str, Meta(max_length=1024)] | None = None
    values: Annotated[list[Short], Meta(max_length=256)] | None = None
    not_values: Annotated[list[Short], Meta(max_length=256)] | None = field(default=None, name="notValues")


class VariableDoc(_Doc):
    name: Annotated[str, Meta(pattern=worded(r"^[A-Za-z_][A-Za-z0-9_]{0,63}" + END, "a variable name: 1 to 64 "
                                             "letters, digits or '_', not starting with a digit"))]
    source: Literal["jwtClaim", "header", "query"]
    key: Name | None = None
    pointer: Annotated[str, Meta(max_length=1024)] | None = None
    # In an allow rule's path, may the value span segments (its `/` matching `/`)? See app.rules.in_path.
    multi_segment: bool = field(default=False, name="multiSegment")


class RuleDoc(_Doc):
    effect: Effect
    id: Short | None = None
    methods: Annotated[list[Annotated[str, Meta(pattern=METHOD)]], Meta(max_length=16)] = []
    path: PathDoc | None = None
    headers: Annotated[list[PairDoc], Meta(max_length=64)] = []
    query: Annotated[list[PairDoc], Meta(max_length=64)] = []
    token: Annotated[list[TokenDoc], Meta(max_length=64)] = []
    claims: Annotated[list[ClaimValuesDoc], Meta(max_length=64)] = []
    required_scopes: Annotated[list[Short], Meta(max_length=64)] = field(default_factory=list, name="requiredScopes")
    any_scopes: Annotated[list[Short], Meta(max_length=64)] = field(default_factory=list, name="anyScopes")
    variables: Annotated[list[VariableDoc], Meta(max_length=32)] = []
    regex_flags: Annotated[str, Meta(max_length=8)] = field(default="", name="regexFlags")
    priority: Annotated[int, Meta(ge=0, le=1000)] = 0
    notes: Annotated[str, Meta(max_length=2048)] | None = None


# Compiled rules: plain values, every pattern ready.

@dataclass(frozen=True, slots=True)
class Condition:
    """A name/value condition (`headers`, `query`, `token`): some entry whose name matches has a matching value."""

    kind: Literal["headers", "query", "token"]
    field: str  # e.g. "headers[0]", for the trace
    name: Pattern | None  # header or query name, or top-level claim name
    pointer: tuple[str, ...] | None  # a nested claim (token conditions only)
    value: Pattern | None  # None: any value
    exists: bool  # must_exist (True) or must_absent (False)


@dataclass(frozen=True, slots=True)
class ClaimValues:
    field: str
    pointer: tuple[str, ...]  # a claim name is a one-token pointer
    values: frozenset[str] | None
    not_values: frozenset[str] | None


@dataclass(frozen=True, slots=True)
class Variable:
    name: str
    source: str  # jwtClaim | header | query
    key: str | None  # header names lower-cased
    pointer: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class Rule:
    index: int
    id: str | None
    effect: Effect
    priority: int
    notes: str | None
    methods: frozenset[str] | None
    path: Pattern | None
    path_exists: bool
    headers: tuple[Condition, ...]
    query: tuple[Condition, ...]
    token: tuple[Condition, ...]
    claims: tuple[ClaimValues, ...]
    required_scopes: tuple[str, ...]
    any_scopes: tuple[str, ...]
    variables: tuple[Variable, ...]
    conditions: tuple[Condition, ...] = ()  # headers, query, token: the evaluation order (set by compile)
    slashes: frozenset[str] = frozenset()  # variables whose `/` stays `/` in the path (app.rules.in_path)


class RuleError(ValueError):
    """Every problem of a rule list, each located within it: `(3, "path", "path", "pattern")`."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{list(problem.loc)}: {problem.msg}" for problem in problems))
        self.problems = problems


class _Compiler:
    def __init__(self, index: int, doc: RuleDoc, untrusted: bool) -> None:
        self.index = index
        self.untrusted = untrusted
        self.flags = doc.regex_flags
        self.declared = frozenset(variable.name for variable in doc.variables)
        self.problems: list[Problem] = []

    def problem(self, loc: tuple[str | int, ...], message: str) -> None:
        self.problems.append(Problem((self.index, *loc), message))

    def pattern(self, text: str, loc: tuple[str | int, ...], extra_flags: str = "") -> Pattern | None:
        try:
            return compile_pattern(text, self.flags + extra_flags, self.declared, self.untrusted)
        except PatternError as exc:
            self.problem(loc, str(exc))
            return None

    def literal(self, text: str | None, loc: tuple[str | int, ...], compared: bool = True) -> None:
        """Variables are substituted in patterns only: elsewhere `{{org}}` is compared as that text, so a deny
        rule with `anyScopes: ["{{org}}:admin"]` never matched and loaded silently (found by a review). `compared`:
        the text is a value compared with the token's (else a name, which no condition can stand for)."""
        match = VARIABLE.search(text) if text is not None else None
        if match is not None:
            self.problem(loc, f"variables are substituted in patterns only: here {match.group(0)!r} would be "
                              "read as that text" + (f"; compare the value with a condition whose value pattern is "
                                                      f"'^{match.group(0)}$'" if compared else
                                                      "; name a claim, header or query parameter as written"))

    def pointer(self, text: str, loc: tuple[str | int, ...]) -> tuple[str, ...] | None:
        self.literal(text, loc, compared=False)
        try:
            return parse_pointer(text)
        except PatternError as exc:
            self.problem(loc, str(exc))
            return None

    def pair(self, doc: PairDoc, loc: tuple[str | int, ...]) -> Condition:
        kind: Literal["headers", "query"] = "headers" if loc[0] == "headers" else "query"
        name = self.pattern(doc.name.pattern, (*loc, "name", "pattern"))
        if kind == "headers" and name is not None and "i" not in name.flags:
            # Header names are matched lower-cased and are case-insensitive (RFC 9110 5.1): `^X-Debug$` means
            # x-debug, rather than a condition that can never hold (a deny rule that silently does nothing).
            name = (replace(name, literal=name.literal.lower()) if name.literal is not None
                    else self.pattern(doc.name.pattern, (*loc, "name", "pattern"), extra_flags="i"))
        value = self.pattern(doc.value.pattern, (*loc, "value", "pattern")) if doc.value else None
        return Condition(kind, f"{kind}[{loc[1]}]", name, None, value, doc.presence not in _ABSENT)

    def token(self, doc: TokenDoc, loc: tuple[str | int, ...]) -> Condition:
        selector = doc.claim
        if (selector.pattern is None) == (selector.pointer is None):
            self.problem((*loc, "claim"), "exactly one of 'pattern' or 'pointer' is required")
        name = self.pattern(selector.pattern, (*loc, "claim", "pattern")) if selector.pattern is not None else None
        pointer = self.pointer(selector.pointer, (*loc, "claim", "pointer")) if selector.pointer is not None else None
        value = self.pattern(doc.value.pattern, (*loc, "value", "pattern")) if doc.value else None
        return Condition("token", f"token[{loc[1]}]", name, pointer, value, doc.presence not in _ABSENT)

    def claim_values(self, doc: ClaimValuesDoc, loc: tuple[str | int, ...]) -> ClaimValues:
        if (doc.key is None) == (doc.pointer is None):
            self.problem(loc, "exactly one of 'key' or 'pointer' is required")
        if doc.values is None and doc.not_values is None:
            self.problem(loc, "one of 'values' or 'notValues' is required")
        self.literal(doc.key, (*loc, "key"), compared=False)
        pointer = (doc.key,) if doc.key is not None else self.pointer(doc.pointer or "/", (*loc, "pointer"))
        for field_name, items in (("values", doc.values), ("notValues", doc.not_values)):
            for position, item in enumerate(items or ()):
                self.literal(item, (*loc, field_name, position))
        values = frozenset(doc.values) if doc.values is not None else None
        not_values = frozenset(doc.not_values) if doc.not_values is not None else None
        return ClaimValues(f"claims[{loc[1]}]", pointer or (), values, not_values)

    def variable(self, doc: VariableDoc, loc: tuple[str | int, ...]) -> Variable:
        pointer = None
        if doc.source == "jwtClaim":
            if (doc.key is None) == (doc.pointer is None):
                self.problem(loc, "a jwtClaim variable needs exactly one of 'key' or 'pointer'")
            if doc.pointer is not None:
                pointer = self.pointer(doc.pointer, (*loc, "pointer"))
        elif doc.key is None or doc.pointer is not None:
            self.problem(loc, f"a {doc.source} variable needs 'key' (the {doc.source} name) and no 'pointer'")
        self.literal(doc.key, (*loc, "key"), compared=False)
        key = doc.key.lower() if doc.key is not None and doc.source == "header" else doc.key
        return Variable(doc.name, doc.source, key, pointer)

    def rule(self, doc: RuleDoc) -> Rule:
        unknown = sorted(set(doc.regex_flags) - FLAGS)
        if unknown:
            shown = "".join(unknown) if all(flag.isascii() and flag.isalpha() for flag in unknown) else "(not shown)"
            self.problem(("regexFlags",), f"unknown flag(s) {shown}; accepted: i, m, s (g is ignored)")
            self.flags = ""
        names = [variable.name for variable in doc.variables]
        if len(set(names)) != len(names):
            self.problem(("variables",), "variable names must be unique")
        path, path_exists = None, True
        if doc.path is not None:
            nested, flat = doc.path.path, doc.path.pattern
            if (nested is None) == (flat is None):
                self.problem(("path",), "give the pattern either as path.pattern or as pattern, exactly once")
            else:
                text, loc = (nested.pattern, ("path", "path", "pattern")) if nested is not None else \
                    (flat or "", ("path", "pattern"))
                problem = _unmatchable_path_pattern(text) or _path_start_problem(text, self.flags)
                if problem is not None:  # it could never match a normalised path: say how to write it
                    self.problem(loc, problem)
                else:
                    path = self.pattern(text, loc)
                    # Read once RE2 has accepted the pattern: what RE2 refuses is reported as RE2 says it.
                    insensitive = "i" in self.flags or _INLINE_I.search(text) is not None
                    needed = None if path is None else _Requirement(VARIABLE.sub("x", text), insensitive).needed()
                    if needed is not None:
                        self.problem(loc, _never_held(needed))
                        path = None
            path_exists = doc.path.presence not in _ABSENT
        for position, method in enumerate(doc.methods):
            if method == "*":  # a token RFC 9110 allows, which no client sends: a deny on it held never (a review)
                self.problem(("methods", position), "'*' is no method: leave methods out (or empty) for any method")
        for field_name, scopes in (("requiredScopes", doc.required_scopes), ("anyScopes", doc.any_scopes)):
            for position, scope in enumerate(scopes):
                self.literal(scope, (field_name, position))
        headers = tuple(self.pair(item, ("headers", i)) for i, item in enumerate(doc.headers))
        query = tuple(self.pair(item, ("query", i)) for i, item in enumerate(doc.query))
        token = tuple(self.token(item, ("token", i)) for i, item in enumerate(doc.token))
        claims = tuple(self.claim_values(item, ("claims", i)) for i, item in enumerate(doc.claims))
        variables = tuple(self.variable(item, ("variables", i)) for i, item in enumerate(doc.variables))
        if not self.problems:  # (a pattern refused says nothing of the names it uses)
            patterns = [path, *(item for condition in headers + query + token
                                for item in (condition.name, condition.value))]
            used = {name for pattern in patterns if pattern is not None for name in pattern.names}
            for position, variable in enumerate(doc.variables):
                if variable.name not in used:
                    # Unused, it still decided: an allow rule whose variable cannot be resolved does not match.
                    self.problem(("variables", position, "name"),
                                 f"variable {variable.name!r} is used in no pattern: write {{{{{variable.name}}}}} "
                                 "in a path, headers, query or token pattern, or remove it")
        return Rule(
            index=self.index, id=doc.id, effect=doc.effect, priority=doc.priority, notes=doc.notes,
            methods=_methods(doc),
            path=path, path_exists=path_exists, headers=headers, query=query, token=token,
            conditions=headers + query + token,
            claims=claims, required_scopes=tuple(dict.fromkeys(doc.required_scopes)),
            any_scopes=tuple(dict.fromkeys(doc.any_scopes)), variables=variables,
            # A `/` matches `/` where that can only make the rule more careful (a deny that must hold, an allow
            # that must not), or where the variable says `multiSegment`; elsewhere it is `%2F` (app.rules.in_path).
            slashes=frozenset(item.name for item in doc.variables
                              if (doc.effect == "deny") == path_exists or item.multi_segment),
        )


def _methods(doc: RuleDoc) -> frozenset[str] | None:
    """The rule's methods, upper-cased. A deny rule on GET covers HEAD too: servers answer HEAD with the GET
    handler (RFC 9110 9.3.2), so its effects and headers would otherwise be reachable past the deny."""
    methods = frozenset(method.upper() for method in doc.methods)
    if doc.effect == "deny" and "GET" in methods:
        methods |= {"HEAD"}
    return methods or None


# One RE2 escape: a character code (\x{e9}, \xe9, octal \351), a Unicode class (\pL, \p{Greek}), or any other.
_ESCAPE_TOKEN = re.compile(r"\\(?:x\{([0-9A-Fa-f]{1,8})\}|x([0-9A-Fa-f]{2})|([0-7]{1,3})|[pP]\{[^}]*\}|[pP].|.)",
                           re.DOTALL)
_INLINE_I = re.compile(r"\(\?[a-zA-Z]*i")  # (?i) or (?si:...): case-insensitivity turned on inside a pattern


def _escape_code(match: re.Match[str]) -> int | None:
    """The character code an `_ESCAPE_TOKEN` match spells (\\x{e9}, \\xe9, octal \\351), else None."""
    digits = match.group(1) or match.group(2)
    return int(digits, 16) if digits else int(match.group(3), 8) if match.group(3) else None


def _tokens(pattern: str) -> Iterator[tuple[str, str, int | None]]:
    """The pattern as RE2 reads it, coarsely: ("char", c, None) for a plain character, ("literal", text, None)
    for a \\Q...\\E section, ("escape", text, code) with the character code it spells (None: not a character),
    and ("class", text, None) for a whole [...] class."""
    index, end = 0, len(pattern)
    while index < end:
        char = pattern[index]
        if char == "\\" and pattern.startswith("\\Q", index):
            close = pattern.find("\\E", index + 2)
            close = end if close < 0 else close
            yield "literal", pattern[index + 2:close], None
            index = close + 2
        elif char == "\\":
            match = _ESCAPE_TOKEN.match(pattern, index)
            if match is None:  # a trailing backslash: RE2 refuses the pattern anyway
                yield "escape", "\\", None
                index += 1
                continue
            yield "escape", match.group(0), _escape_code(match)
            index = match.end()
        elif char == "[":
            cursor = index + 1
            cursor += pattern.startswith("^", cursor)
            cursor += pattern.startswith("]", cursor)
            while cursor < end and pattern[cursor] != "]":
                if pattern[cursor] == "\\":
                    cursor += 2
                elif pattern.startswith("[:", cursor) and ":]" in pattern[cursor + 2:]:
                    cursor = pattern.index(":]", cursor + 2) + 2
                else:
                    cursor += 1
            yield "class", pattern[index:cursor + 1], None
            index = cursor + 1
        else:
            yield "char", char, None
            index += 1


def _path_start_problem(pattern: str, flags: str) -> str | None:
    """Why a pattern anchored at the start of the path can never match one, from the text every match starts
    with: a normalised path starts with `/` and holds no `//` (slashes are merged). `^admin(/.*)?$` loaded, and a
    deny rule written so never denied anything (found by a review)."""
    prefix = literal_prefix(pattern, flags)
    if prefix is None:
        return None
    if not prefix.startswith("/"):
        _, scheme, rest = pattern[1:].partition("://")
        fixed = "^/" + (rest.partition("/")[2] if scheme else pattern[1:])
        return (f"every match starts with {prefix[:40]!r}, and a path starts with '/' (without the scheme, the "
                f"host or the query): write {fixed[:60]!r}")
    if "//" in prefix:
        return "slashes are merged before matching (`//` is read as `/`): write '/' for '//'"
    return None


def _unmatchable_path_pattern(pattern: str) -> str | None:
    """Why a path pattern can never match a normalised path (app.paths), with the spelling to use, or None: a
    non-ASCII character, which normalised paths percent-encode (UTF-8, upper case, RFC 3987 3.1). Character
    classes are read for non-ASCII characters written as such only: `[^\\x{80}-\\x{10FFFF}]` (ASCII only) is a
    fine pattern. Escapes a normalised path never holds are `_Requirement`'s (it reads alternatives and optional
    pieces: `(?:%c3|x)` can match `x`)."""
    for kind, text, code in _tokens(pattern):
        if kind == "class":
            # A member written as a non-ASCII character never matches (a negated class is fine: it matches ASCII)
            example = None if text.startswith("[^") else next((char for char in text if not char.isascii()), None)
            if example is not None:
                return (f"paths are matched with non-ASCII characters percent-encoded (UTF-8, upper case), which a "
                        f"character class cannot spell: write {example!r} as {percent_encode_non_ascii(example)!r} "
                        "in an alternation, such as (?:%C3%A9|%C3%A8)")
            continue
        if kind == "escape":
            example = chr(min(code, 0x10FFFF)) if code is not None and code > 0x7F else None
        else:
            example = next((char for char in text if not char.isascii()), None)
        if example is not None:
            if 0xD800 <= ord(example) <= 0xDFFF:
                example = "\ufffd"
            return (f"paths are matched with non-ASCII characters percent-encoded (UTF-8, upper case): write "
                    f"{example!r} as {percent_encode_non_ascii(example)!r}")
    return None


HELD = DECODED | {"/", "%"}  # the characters a normalised path holds as themselves
# An escape no path holds: a path spelling it is refused before any rule (app.paths).
_REFUSED_ESCAPE = re.compile(r"%(?:2F|5C|3B|[01][0-9A-F]|7F)", re.IGNORECASE)
_CONTROL_ESCAPES = {"a": "\a", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_REPEAT = re.compile(r"\{(\d+)(,\d*)?\}")
_HEX = frozenset("0123456789ABCDEFabcdef")
_MAX_SET = 128  # a class of more members is not spelled out (it is no escape's digit, nor a slash)


_Needed = tuple[str, str]  # (text as the pattern spells it, the text a path would need)


class _Unread(Exception):
    """Pattern syntax the requirement reader does not follow (RE2 judges it)."""


class _Requirement:
    """Reads a path pattern's structure (alternation, groups, repetition) from `_tokens` to find text that every
    match needs and no normalised path holds: a character outside HELD (`\\?`, a space, `#`, `;`, a backslash, a
    control character) or a refused escape (`%0A`, `%2F`). Text in an optional piece (`(\\?.*)?`, `x*`, one
    branch of an alternation whose other branch is fine) is not needed, so `^/api/users(?:/|\\?|$)` loads. Only
    certain verdicts count: a character class is needed-and-unheld only when every member is a plain unheld
    character (under `i`, a non-ASCII one may fold into ASCII: RE2 matches `k` with U+212A), and syntax it does
    not follow means "can match" (RE2 refuses what is invalid): a repetition after an atom that matches nothing
    (`(?i)?`, `\\Q\\E*`, which RE2 applies to the atom before), groups nested deeper than MAX_DEPTH."""

    MAX_DEPTH = 64  # RE2 takes ~1,000 nested groups in 4,096 characters; the reader recurses per group

    def __init__(self, pattern: str, insensitive: bool) -> None:
        self.tokens = list(_tokens(pattern))
        self.index = 0
        self.depth = 0
        self.empty = False  # the last atom matches only the empty text
        self.insensitive = insensitive
        self.held = HELD if not insensitive else _FoldedHeld()
        # The characters each position of the last atom can be, when it is a fixed run of them: `a`, `\x2F`,
        # `[eE]`, `\Q%7\E`, or a group of such atoms (`(?:7E)`); None for anything else (`.`, `\d`, `[^/]`).
        self.fixed: list[frozenset[str]] | None = None

    def needed(self) -> _Needed | None:
        """The first needed text no path holds, as the pattern spells it and as a path would, or None."""
        try:
            found = self.alternation()
        except _Unread:
            return None
        return found if self.index == len(self.tokens) else None

    def peek(self, text: str) -> bool:
        return self.index < len(self.tokens) and self.tokens[self.index][:2] == ("char", text)

    def alternation(self) -> _Needed | None:
        branches = [self.sequence()]
        fixed = self.fixed  # one branch: the group is as fixed as its sequence
        while self.peek("|"):
            self.index += 1
            branches.append(self.sequence())
            fixed = None
        self.fixed = fixed
        return None if None in branches else branches[0]

    def sets(self, kind: str, text: str, code: int | None) -> list[frozenset[str]] | None:
        """The character sets of a fixed atom (see `fixed`), else None. A group's are set by `group`."""
        if kind == "literal":
            return [self.cased(char) for char in text]
        if kind == "class":
            members = _class_members(text)
            return None if members is None else [frozenset(char for member in members for char in self.cased(member))]
        char = _single_char(kind, text, code)
        return None if char is None else [self.cased(char)]

    def cased(self, char: str) -> frozenset[str]:
        return frozenset((char.lower(), char.upper())) if self.insensitive and char.isascii() and char.isalpha() \
            else frozenset(char)

    def sequence(self) -> _Needed | None:
        """The first needed text no path holds. Consecutive fixed atoms (`fixed`) are read as one run of
        character sets, for what is spelled across them: `//` (slashes are merged), or an escape that every
        spelling makes one a normalised path never holds (`%2[eE]`, `%(?:7E)`, `/{2}`; found by a review)."""
        found: _Needed | None = None
        run: list[frozenset[str]] = []
        whole: list[frozenset[str]] | None = []  # the sequence's sets, while every atom is fixed (for a group)
        while self.index < len(self.tokens) and not self.peek("|") and not self.peek(")"):
            quoted = self.tokens[self.index][0] == "literal"
            needed = self.atom()
            sets, after = self.fixed, self.index
            optional, count = self.repetition()
            if self.empty and self.index != after:
                raise _Unread  # RE2 applies this repetition to the atom before
            if quoted and self.index != after and sets is not None and len(sets) > 1:
                sets = None  # RE2 repeats the last character of `\Q...\E` only: no fixed run (found by a review)
            times = 1 if self.index == after else count or 0  # `?`, `*`, `+`, `{m,n}`: no fixed run across
            if sets is None or not times:
                run, whole = [], None
            else:
                for _ in range(min(times, 3)):
                    for chars in sets:
                        run = [*run[-2:], chars]
                        spelled = self.spelled_across(run)
                        if spelled is not None and found is None:
                            found = spelled
                if whole is not None:
                    whole.extend(sets * times if times <= 8 else [])
                    whole = whole if times <= 8 else None
            if needed is not None and not optional and found is None:
                found = needed
        self.fixed = whole
        return found

    def spelled_across(self, run: list[frozenset[str]]) -> _Needed | None:
        """`//`, or an escape no spelling of which a normalised path holds, ending `run`; else None."""
        if len(run) >= 2 and run[-1] == run[-2] == {"/"}:
            return "//", "//"
        if len(run) < 3 or run[-3] != {"%"} or not (run[-2] <= _HEX and run[-1] <= _HEX):
            return None
        spellings = sorted(f"%{high}{low}" for high in run[-2] for low in run[-1])
        if all(self.never_held_escape(spelling) for spelling in spellings):
            return spellings[0], spellings[0]
        return None

    def never_held_escape(self, escape: str) -> bool:
        """An escape a normalised path never holds: refused (`%0A`), decoded (`%7E`), or in lower case."""
        return chr(int(escape[1:], 16)) in DECODED or _REFUSED_ESCAPE.fullmatch(escape) is not None or (
            escape != escape.upper() and not self.insensitive)

    def repetition(self) -> tuple[bool, int | None]:
        """Consume a repetition operator after an atom: whether it allows none (`*`, `?`, `{0,n}`), and its count
        when exact (`{3}`)."""
        exact = None
        if self.peek("*") or self.peek("?"):
            optional = True
            self.index += 1
        elif self.peek("+"):
            optional = False
            self.index += 1
        elif self.peek("{"):
            text = ""
            for kind, char, _ in self.tokens[self.index:self.index + 24]:
                text += char if kind == "char" else "\0"
                if char == "}":
                    break
            count = _REPEAT.match(text)
            if count is None or count.end() != len(text):
                return False, None  # a literal brace: RE2 reads `{` without a valid count as itself
            optional = int(count.group(1)) == 0
            exact = None if count.group(2) else int(count.group(1))
            self.index += len(text)
        else:
            return False, None
        if self.peek("?"):  # lazy: the same language
            self.index += 1
        return optional, exact

    def atom(self) -> _Needed | None:
        kind, text, code = self.tokens[self.index]
        self.index += 1
        self.empty = kind == "literal" and not text  # `\\Q\\E`; a flags-only group sets it too
        self.fixed = self.sets(kind, text, code)
        if kind == "literal":
            unheld = next((char for char in text if char not in self.held), None)
            return None if unheld is None else ("\\Q" + text + "\\E", unheld)
        if kind == "class":
            return _unheld_class(text, self.held)
        if kind == "escape":
            if text == "\\s":
                return text, " "  # whitespace, of which a path holds none
            char = _single_char(kind, text, code)
            return (text, char) if char is not None and char not in self.held else None
        if text == "(":
            self.depth += 1
            if self.depth > self.MAX_DEPTH:
                raise _Unread
            found = self.group()
            self.depth -= 1
            return found
        if text in "*+?)|":
            raise _Unread  # a repetition with nothing to repeat, an unbalanced parenthesis
        return None if text in self.held or text in ".^$" else (text, text)

    def group(self) -> _Needed | None:
        if self.peek("?"):  # (?flags), (?flags:...), (?P<name>...), (?<name>...)
            self.index += 1
            header = ""
            while self.index < len(self.tokens) and not self.peek(")") and not self.peek(":"):
                header += self.tokens[self.index][1]
                self.index += 1
                if header.endswith(">"):
                    break
            if not re.fullmatch(r"[A-Za-z-]*|P?<\w+>", header):
                raise _Unread  # look-around, back-references: RE2 refuses them
            if self.peek(")"):
                self.index += 1
                self.empty = True  # flags only: matches the empty text
                self.fixed = None
                return None
            if self.peek(":"):
                self.index += 1
        found = self.alternation()
        if not self.peek(")"):
            raise _Unread
        self.index += 1
        self.empty = False  # a group is an atom, even `(?:)`
        return found


def _class_members(text: str) -> set[str] | None:
    """The characters a whole `[...]` class matches, when it lists them (members, escapes of one character, small
    ranges); None for a negated class, a named or escaped family (`[:alpha:]`, `\\d`), or a large range."""
    if text.startswith("[^") or "[:" in text:
        return None
    body, members, index = text[1:-1], set(), 0
    previous: str | None = None
    while index < len(body):
        if body[index] == "\\":
            match = _ESCAPE_TOKEN.match(body, index)
            char = None if match is None else _single_char("escape", match.group(0), _escape_code(match))
            if match is None or char is None:
                return None
            index = match.end()
        elif body[index] == "-" and previous is not None and index + 1 < len(body):
            match = _ESCAPE_TOKEN.match(body, index + 1) if body[index + 1] == "\\" else None
            last = body[index + 1] if match is None else _single_char("escape", match.group(0), _escape_code(match))
            if last is None or ord(last) < ord(previous) or ord(last) - ord(previous) > _MAX_SET:
                return None
            members.update(map(chr, range(ord(previous), ord(last) + 1)))
            index = index + 2 if match is None else match.end()
            previous = None
            continue
        else:
            char = body[index]
            index += 1
        members.add(char)
        previous = char
    return members if 0 < len(members) <= _MAX_SET else None


def _single_char(kind: str, text: str, code: int | None) -> str | None:
    """The one character a token from `_tokens` stands for (`a`, `\\?`, `\\x3F`, `\\n`), or None (`.`, `\\d`, a
    class, a group's parenthesis, an anchor)."""
    if kind == "char":
        return None if text in "().^$|*+?" else text
    if kind == "escape":
        if code is not None:
            return chr(code)
        return _CONTROL_ESCAPES.get(text[1:]) or (text[1] if len(text) == 2 and not text[1].isalnum() else None)
    return None


class _FoldedHeld:
    """HELD under `i`: a non-ASCII character may fold into an ASCII letter (U+212A K, U+017F s), so it counts."""

    def __contains__(self, char: object) -> bool:
        return isinstance(char, str) and (char in HELD or not char.isascii())


def _unheld_class(text: str, held: Container[str]) -> _Needed | None:
    """`text` (a whole `[...]`) when each of its members is a plain character a path never holds, else None."""
    if text.startswith("[^") or "[:" in text:
        return None
    body, members, index = text[1:-1], [], 0
    while index < len(body):
        if body[index] == "\\":
            match = _ESCAPE_TOKEN.match(body, index)
            char = None if match is None else _single_char("escape", match.group(0), _escape_code(match))
            if match is None or char is None:
                return None  # \d, \w, \pL ...: a family
            members.append(char)
            index = match.end()
        elif body[index] == "-" and members and index + 1 < len(body):
            return None  # a range: left alone
        else:
            members.append(body[index])
            index += 1
    return (text, members[0]) if members and not any(member in held for member in members) else None


_NEVER_HELD_HINTS = {
    " ": "paths spell a space as '%20'",
    "?": "a path is matched without its query: test the query with a 'query' condition ('%3F' is an escaped '?' "
         "in the path)",
    "#": "a fragment never reaches the server ('%23' is an escaped '#' in the path)",
}


def _never_held(needed: _Needed) -> str:
    """Why a pattern needing `needed` (from `_Requirement`) can never match, with what to write instead."""
    spelled, char = needed
    if len(char) == 3 and char.startswith("%"):  # an escape (`_Requirement.spelled_across`)
        decoded = chr(int(char[1:], 16))
        if decoded in DECODED:
            return (f"paths are matched with the escapes of the characters a path holds as themselves decoded: "
                    f"write {char!r} as {decoded!r}" + (f" (escaped for RE2: '\\{decoded}')"
                                                        if decoded in ".$()*+[]^{}|" else ""))
        if char != char.upper():
            if _REFUSED_ESCAPE.fullmatch(char):  # upper case would not help: such paths are refused
                return (f"no path holds {char!r} in any case: a path with it is refused (path_rejected) before any "
                        "rule")
            return f"paths are matched with percent escapes in upper case: write {char!r} as {char.upper()!r}"
    hint = _NEVER_HELD_HINTS.get(char, "a path holding it is refused (path_rejected) before any rule")
    if char == "//":
        hint = "slashes are merged before matching: write '/' for '//'"
    return (f"this pattern can never match: every match needs {spelled!r} outside any optional piece, and no "
            f"normalised path holds it ({hint})")


def compile_rules(docs: Sequence[RuleDoc], *, untrusted: bool = False) -> tuple[Rule, ...]:
    """Compile a rule list once. Raises RuleError listing every problem, each with its location. `untrusted`: a
    caller wrote them (app.patterns.Pattern)."""
    problems: list[Problem] = []
    rules = []
    for index, doc in enumerate(docs):
        compiler = _Compiler(index, doc, untrusted)
        rules.append(compiler.rule(doc))
        problems.extend(compiler.problems)
    if problems:
        raise RuleError(problems)
    return tuple(rules)


# What a compiled rule holds besides its patterns (the Rule, its matcher closure, its index entries): ~650 bytes
# measured for a bare `{"effect": "deny"}`; counted at three times that.
RULE_BYTES = 2048


def retained_bytes(rules: Sequence[Rule]) -> int:
    """What a compiled rule list may hold: each rule, and its patterns (app.patterns.pattern_bytes). Without the
    rules' own share, 3,000 bare rules were estimated at nothing (found by a review)."""
    patterns = [pattern for rule in rules for pattern in (rule.path, *(part for item in rule.conditions
                                                                        for part in (item.name, item.value)))]
    return len(rules) * RULE_BYTES + sum(pattern_bytes(pattern) for pattern in patterns if pattern is not None)
