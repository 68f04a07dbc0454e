"""Rule patterns: RE2 (linear time, no backtracking), `{{variables}}` substituted as escaped literals, and the
texts a JSON value offers to a pattern.

Every pattern is compiled when the rules load; one RE2 refuses (backreferences, look-around) stops loading.
A pattern with variables is checked at load with a placeholder and compiled per distinct set of values through
a bounded LRU, so a claim value such as `.*` or `acme|evil` is only ever a literal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import msgspec
import re2

VARIABLE = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}")
# `^literal$` (escapes of punctuation allowed): most name patterns (`^x-tenant$`, `^https://myapp\.com/plan$`).
_LITERAL = re.compile(r"\^((?:[^\\.^$|?*+()\[\]{}]|\\[^A-Za-z0-9])*)\$")
FLAGS = frozenset("imsg")
# Distinct (pattern, flags, values) compilations kept; values come from tokens and headers, so it must be bounded.
SUBSTITUTED_CACHE_SIZE = 4096
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would print refused patterns to stderr; we report them with their JSON path
_OPTIONS.never_capture = True  # rules ask "does it match", never for groups: RE2 takes its fastest paths
_UNANCHORED = re2._Anchor.UNANCHORED
_NO_MATCH = (-1, -1)

Value = str | tuple[str, ...]


class PatternError(ValueError):
    pass


def _compile(text: str, flags: str) -> Any:
    # `g` is accepted for compatibility with JavaScript-flavoured rule sets and means nothing for a search.
    inline = "".join(flag for flag in "ims" if flag in flags)
    try:
        return re2.compile(f"(?{inline}){text}" if inline else text, _OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise PatternError(f"RE2 refuses this pattern: {detail}") from None


def found(compiled: Any, text: str) -> bool:
    """Whether the pattern occurs in `text` (a search). Calls RE2's Match directly: the wrapper's `search`
    builds a match object with character offsets, twice the cost, for an answer rules never use."""
    encoded = text.encode("utf-8", "surrogatepass")
    return bool(compiled._regexp.Match(_UNANCHORED, encoded, 0, len(encoded))[0] != _NO_MATCH)


def escape(value: Value) -> str:
    """A variable's value as a literal: a string escaped, an array an alternation of escaped elements."""
    if isinstance(value, str):
        return re2.escape(value)
    return "(?:" + "|".join(re2.escape(item) for item in value) + ")"


@lru_cache(maxsize=SUBSTITUTED_CACHE_SIZE)
def _compile_substituted(template: str, flags: str, names: tuple[str, ...], values: tuple[Value, ...]) -> Any:
    lookup = dict(zip(names, values))
    return _compile(VARIABLE.sub(lambda match: escape(lookup[match.group(1)]), template), flags)


@dataclass(frozen=True, slots=True)
class Pattern:
    """A compiled search pattern, or a template whose variables are filled per request."""

    text: str
    flags: str
    names: tuple[str, ...]  # variables the pattern uses, in order of first use
    compiled: Any  # the RE2 object when there are no variables
    literal: str | None = None  # set when the pattern can only match this exact text: compared, not searched

    def search(self, variables: dict[str, Value], text: str) -> bool:
        if self.literal is not None:
            return text == self.literal
        return found(self.resolve(variables), text)

    def resolve(self, variables: dict[str, Value]) -> Any:
        """The RE2 object for these variable values (compiled once per distinct value set)."""
        if not self.names:
            return self.compiled
        return _compile_substituted(self.text, self.flags, self.names,
                                    tuple(variables[name] for name in self.names))

    def shown(self, variables: dict[str, Value]) -> str:
        """The pattern as matched, for the trace."""
        if not self.names:
            return self.text
        return VARIABLE.sub(lambda match: escape(variables[match.group(1)]), self.text)


def compile_pattern(text: str, flags: str, declared: frozenset[str]) -> Pattern:
    """Compile at load. Raises PatternError for an RE2 refusal or an undeclared `{{variable}}`."""
    names = tuple(dict.fromkeys(VARIABLE.findall(text)))
    unknown = [name for name in names if name not in declared]
    if unknown:
        raise PatternError(f"uses undeclared variable(s) {', '.join(unknown)}; declare them in 'variables'")
    if not names:
        compiled = _compile(text, flags)
        literal = _LITERAL.fullmatch(text)
        # Without `i` and `m`, RE2's `^...$` around plain characters matches that exact text and nothing else.
        exact = re.sub(r"\\(.)", r"\1", literal.group(1)) if literal and not set(flags) & {"i", "m"} else None
        return Pattern(text, flags, (), compiled, exact)
    _compile(VARIABLE.sub("x", text), flags)  # syntax check with a literal in each variable's place
    return Pattern(text, flags, names, None)


def json_text(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def texts(value: Any, words: bool = False) -> list[str]:
    """What a JSON value offers to a pattern: a string itself (and its words, for `scope`), a number or boolean
    its JSON text, an array each element's texts. Objects and null offer nothing, so they never match."""
    if isinstance(value, str):
        parts = value.split() if words else []
        return [value, *parts] if len(parts) > 1 else [value]
    if isinstance(value, (bool, int, float)):
        return [json_text(value)]
    if isinstance(value, list):
        return [text for item in value for text in texts(item)]
    return []


def splits_words(name: str, value: Any) -> bool:
    """`scope` (RFC 8693 4.2, space-separated) and `scp` when it is a string match word by word too."""
    return name == "scope" or (name == "scp" and isinstance(value, str))


def parse_pointer(pointer: str) -> tuple[str, ...]:
    """RFC 6901: `/realm_access/roles` -> ("realm_access", "roles"); `~1` is `/`, `~0` is `~`."""
    if not pointer.startswith("/"):
        raise PatternError("a JSON Pointer starts with '/' (RFC 6901)")
    if re.search(r"~(?![01])", pointer):
        raise PatternError("'~' must be followed by 0 or 1 in a JSON Pointer (RFC 6901)")
    return tuple(part.replace("~1", "/").replace("~0", "~") for part in pointer[1:].split("/"))


_MISSING = object()


def resolve_pointer(document: Any, tokens: tuple[str, ...]) -> Any:
    """The value at a parsed pointer, or `MISSING`. Array indexes are decimal without leading zeros."""
    current = document
    for token in tokens:
        if isinstance(current, dict):
            current = current.get(token, _MISSING)
        elif isinstance(current, list) and re.fullmatch(r"0|[1-9][0-9]{0,8}", token) and int(token) < len(current):
            current = current[int(token)]
        else:
            return _MISSING
        if current is _MISSING:
            return _MISSING
    return current


MISSING = _MISSING
