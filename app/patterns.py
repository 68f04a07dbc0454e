"""Rule patterns: RE2 (linear time, no backtracking), `{{variables}}` substituted as escaped literals, and the
texts a JSON value offers to a pattern.

Every pattern is compiled when the rules load; one RE2 refuses (backreferences, look-around) stops loading.
A pattern with variables is checked at load with a placeholder and compiled per distinct set of values through
a bounded LRU, so a claim value such as `.*` or `acme|evil` is only ever a literal.
"""

from __future__ import annotations

import re
from collections import OrderedDict, namedtuple
from dataclasses import dataclass, field
from typing import Any

import msgspec
import re2

VARIABLE = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}")
# `^literal$` (escapes of punctuation allowed): most name patterns (`^x-tenant$`, `^https://myapp\.com/plan$`).
_LITERAL_PIECE = re.compile(r"(?:[^\\.^$|?*+()\[\]{}]|\\[^A-Za-z0-9])*")
_LITERAL = re.compile(rf"\^({_LITERAL_PIECE.pattern})\$")
FLAGS = frozenset("imsg")
# Distinct (pattern, flags, values) compilations kept; values come from tokens and headers, so it must be bounded.
SUBSTITUTED_CACHE_SIZE = 4096
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would print refused patterns to stderr; we report them with their JSON path
_OPTIONS.never_capture = True  # rules ask "does it match", never for groups: RE2 takes its fastest paths
# Patterns a caller wrote (an inline authorizer of POST /v1/authorize, which needs no credentials unless API_KEYS
# is set) get a smaller memory budget. RE2 keeps a lazily built DFA with each compiled pattern, up to about two
# thirds of `max_mem` (8 MiB by default): a pattern built to blow it up (`^/(a|b)*a(a|b){12}.*z$`) held ~1.5 MiB
# after one search of a 6,000-character path, so 100 such rules in one request grew a worker by 156 MB and the
# cache of inline authorizers kept it (found by a review). With 128 KiB such a pattern held ~52 KiB (RE2 then
# searches without its DFA, still in linear time); alternations of 1,000 six-letter words and 8,000-character
# literals under `i` still compile, 2,000 random words no longer do ("pattern too large").
UNTRUSTED_MAX_MEM = 128 << 10
UNTRUSTED_DFA_BYTES = 64 << 10  # what one untrusted pattern's DFA is counted as (see pattern_bytes)
_UNTRUSTED = re2.Options()
_UNTRUSTED.log_errors, _UNTRUSTED.never_capture, _UNTRUSTED.max_mem = False, True, UNTRUSTED_MAX_MEM
_UNANCHORED = re2._Anchor.UNANCHORED
_NO_MATCH = (-1, -1)

Value = str | tuple[str, ...]


class PatternError(ValueError):
    pass


def _source(text: str, flags: str) -> str:
    """The pattern as RE2 compiles it, the rule's flags inline. `g` is accepted for compatibility with
    JavaScript-flavoured rule sets and means nothing for a search."""
    inline = "".join(flag for flag in "ims" if flag in flags)
    return f"(?{inline}){text}" if inline else text


def _compile(text: str, flags: str, untrusted: bool = False) -> Any:
    try:
        return re2.compile(_source(text, flags), _UNTRUSTED if untrusted else _OPTIONS)
    except re2.error as exc:
        raise PatternError(f"RE2 refuses this pattern: {_refusal(exc)}") from None


def _refusal(exc: re2.error) -> str:
    """RE2's reason, without the part of the pattern it quotes unless that is a few characters (`\\q`, `**`):
    an operator's pattern may hold a secret (`^<shared key>$` for a header), and a refused pattern's message is
    logged and shown by /readyz ("missing ): ^(<the rest of the pattern>"; found by a review)."""
    detail = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
    reason, _, quoted = detail.partition(": ")
    if not quoted or len(quoted) <= 8:
        return detail
    return f"{reason} (in a part of {len(quoted)} characters, not shown: a pattern may hold a secret)"


def found(compiled: Any, text: str) -> bool:
    """Whether the pattern occurs in `text` (a search). Calls RE2's Match directly: the wrapper's `search`
    builds a match object with character offsets, twice the cost, for an answer rules never use."""
    encoded = text.encode("utf-8", "surrogatepass")
    return bool(compiled._regexp.Match(_UNANCHORED, encoded, 0, len(encoded))[0] != _NO_MATCH)


class _Anything(tuple):  # type: ignore[type-arg]
    """The value of a variable a deny rule could not resolve (`ANYTHING`): it stands for any non-empty text, so a
    condition using it holds when some value would make it hold. Equal to itself only (not to `()`)."""

    def __eq__(self, other: object) -> bool:
        return other is self

    def __hash__(self) -> int:
        return id(self)


ANYTHING: Value = _Anything()
_ANY_TEXT = "(?s:.+)"


# What RE2 folds together under `i` beyond ASCII case: the Kelvin sign with k, long s with s, and non-ASCII
# letters with others. In a variable's value under `i`, k and s match their two ASCII cases only, and every
# non-ASCII character itself only.
_FOLD_PINNED = {"k": "(?-i:[kK])", "K": "(?-i:[kK])", "s": "(?-i:[sS])", "S": "(?-i:[sS])"}


def _literal(text: str, folded: bool = False) -> str:
    """`text` as RE2 matches it literally. Under `i` (`folded`) only ASCII case is ignored: RE2 folds more (the
    Kelvin sign with `k`, long s with `s`), so a claim `\u212aacme` matched the header `x-tenant: kacme` of another
    tenant, and a claim `kacme` the header `\u212aacme` (found by two reviews)."""
    escaped = re2.escape(text)
    if not folded:
        return escaped
    return "".join(_FOLD_PINNED.get(char, char) if char < "\x80" else f"(?-i:{char})" for char in escaped)


def escape(value: Value, folded: bool = False) -> str:
    """A variable's value as a literal: a string escaped, an array an alternation of escaped elements."""
    if isinstance(value, str):
        return _literal(value, folded)
    if value is ANYTHING:
        return _ANY_TEXT
    return "(?:" + "|".join(_literal(item, folded) for item in value) + ")"


def _atom(value: Value, folded: bool = False) -> str:
    """A value as it is put into a pattern: one group, so nothing around it reaches inside. A quantifier after
    `{{t}}` repeats the value, not its last character, and an escape before it (`\\0`, `\\x4`) cannot take its
    first characters as digits; so the value is matched as literal text, and a deny rule's "any value" covers
    every value (found by a review: `^\\0{{t}}$` with `7` matched a BEL, `{{t}}{0,0}` dropped a last letter)."""
    return escape(value, folded) if not isinstance(value, str) else "(?:" + _literal(value, folded) + ")"


# Case-insensitivity turned on or off inside a pattern: `(?i)`, `(?si:...)`, `(?-i)`. With variables it may only
# be the whole pattern's, leading, so that whether a value is folded is known (`folds`).
# RE2, linear: Python's `re` backtracked quadratically over a long run of letters (`(?iii...i` refused by RE2
# later cost 0.1 s a 4 KB pattern in an inline authorizer; found by a review).
_I_MODIFIER = re2.compile(r"\(\?[a-zA-Z-]*i[a-zA-Z-]*[:)]")
_LEADING_I = re2.compile(r"\^?\(\?[a-zA-Z]*i[a-zA-Z]*\)")


def folds(template: str, flags: str) -> bool:
    """Whether the values put into this template are matched case-insensitively."""
    return "i" in flags or _LEADING_I.match(template) is not None


# What the substituted patterns may hold per worker. Values can be chosen by clients (a header or query variable),
# so a bound on the count alone is not one on memory: RE2's program for a 1,024-character case-insensitive
# literal is ~180 KB (each letter a class), 4,096 of them 700 MB. The cost of an entry is estimated from its
# source at the worst rate measured (~176 bytes a character, under `i`, whether a flag or inline `(?i)`) plus
# ~160 bytes an instruction of RE2's program (counted repetitions multiply it); the least recently used go
# first, and an entry that would take more than an eighth of the budget is not kept.
SUBSTITUTED_CACHE_BYTES = 32 << 20
MAX_SHOWN_PATTERN = 2048  # characters of a substituted pattern a trace shows


def _cost(source: str, compiled: Any) -> int:
    return 1024 + len(source) * 176 + compiled.programsize * 160


class _SubstitutedCache:
    """LRU of compiled substituted patterns, bounded by count and by estimated bytes (see above)."""

    CacheInfo = namedtuple("CacheInfo", "hits misses currsize bytes")

    def __init__(self, size: int, budget: int) -> None:
        self.size, self.budget = size, budget
        self._entries: OrderedDict[tuple[Any, ...], tuple[Any, int]] = OrderedDict()
        self.bytes = self.hits = self.misses = 0

    def __call__(self, template: str, flags: str, names: tuple[str, ...], values: tuple[Value, ...]) -> Any:
        key = (template, flags, names, values)
        entry = self._entries.get(key)
        if entry is not None:
            self.hits += 1
            self._entries.move_to_end(key)
            return entry[0]
        self.misses += 1
        source = _substituted(template, names, values, folds(template, flags))
        compiled = _compile(source, flags)
        cost = _cost(source, compiled)
        if cost > self.budget // 8:
            return compiled  # compiled for this use only: keeping it would push out everything else
        self._entries[key] = (compiled, cost)
        self.bytes += cost
        while self._entries and (len(self._entries) > self.size or self.bytes > self.budget):
            _, (_, dropped) = self._entries.popitem(last=False)
            self.bytes -= dropped
        return compiled

    def cache_clear(self) -> None:
        self._entries.clear()
        self.bytes = self.hits = self.misses = 0

    def cache_info(self) -> Any:
        return self.CacheInfo(self.hits, self.misses, len(self._entries), self.bytes)


def pattern_bytes(pattern: Pattern) -> int:
    """What a compiled pattern may hold, estimated as for the substituted cache (`_cost`, from its source and
    program) plus, for an untrusted one that RE2 searches, the DFA it may build. One with variables is compiled per
    use: it holds nothing between requests but, untrusted, its last substitution (`Pattern.last`, within
    UNTRUSTED_MAX_MEM); a literal one is compared as text: RE2 never builds its DFA."""
    if pattern.compiled is None:  # with variables: nothing held but an untrusted one's last substitution, its
        # program within UNTRUSTED_MAX_MEM and its source (up to ~110 KB under `i` for a 16 KB token's array)
        return 1024 + (2 * UNTRUSTED_MAX_MEM if pattern.untrusted else 0)
    searched = pattern.untrusted and pattern.literal is None
    return _cost(pattern.text, pattern.compiled) + (UNTRUSTED_DFA_BYTES if searched else 0)


def _substituted(template: str, names: tuple[str, ...], values: tuple[Value, ...], folded: bool) -> str:
    lookup = dict(zip(names, values))
    return VARIABLE.sub(lambda match: _atom(lookup[match.group(1)], folded), template)


_compile_substituted = _SubstitutedCache(SUBSTITUTED_CACHE_SIZE, SUBSTITUTED_CACHE_BYTES)


@dataclass(frozen=True, slots=True)
class Pattern:
    """A compiled search pattern, or a template whose variables are filled per request."""

    text: str
    flags: str
    names: tuple[str, ...]  # variables the pattern uses, in order of first use
    compiled: Any  # the RE2 object when there are no variables
    literal: str | None = None  # set when the pattern can only match this exact text: compared, not searched
    # Set when every match starts with this text (`^/admin/...`): a text that does not is refused without RE2.
    # Lower-cased under `i`, and then only used for ASCII texts (RE2 folds some non-ASCII letters into ASCII).
    prefix: str | None = None
    # `^pre{{a}}mid{{b}}post$` without `i` or `m`: the literal pieces with the variable names between them. The
    # values are escaped, so such a pattern matches exactly pre + a + mid + b + post: compared, not searched.
    exact: tuple[str, ...] | None = None
    # With `exact`: the pattern ended in `(/.*)?$` (a path and everything under it, the org-isolation shape).
    subtree: bool = False
    # Written by a caller (an inline authorizer): compiled with UNTRUSTED_MAX_MEM, and substituted per use, never
    # kept in the shared cache (where a caller's patterns would push out the configured ones).
    untrusted: bool = False
    # An untrusted pattern's last substitution, `[values, compiled]`: a decision searches one pattern with the same
    # values in each header value or claim element, and compiled it again each time (found by a review: 5 s for a
    # 20 KB request). Counted in `pattern_bytes`.
    last: list[Any] = field(default_factory=list, compare=False, repr=False)
    # `^x-debug$` under `i`: the ASCII literal lower-cased. An ASCII text is compared lower-cased, not searched
    # (999 query rules of that shape against 1,000 query parameters: 0.16-0.23 s a request searched, 0.10-0.15 s
    # compared); RE2 still reads a non-ASCII text, which it may fold into the literal (the Kelvin sign into `k`).
    folded: str | None = None

    def search(self, variables: dict[str, Value], text: str) -> bool:
        if self.literal is not None:
            return text == self.literal
        if self.folded is not None and text.isascii():
            return text.lower() == self.folded
        if self.exact is not None:
            held = (_exact(self.exact, variables, text) if not self.subtree else
                    _exact_subtree(self.exact, variables, text, "s" in self.flags))
            if held is not None:
                return held
        prefix = self.prefix
        if prefix is not None:
            if "i" not in self.flags:
                if not text.startswith(prefix):
                    return False
            elif text.isascii() and text[:len(prefix)].lower() != prefix:
                return False
        return found(self.resolve(variables), text)

    def resolve(self, variables: dict[str, Value]) -> Any:
        """The RE2 object for these variable values (compiled once per distinct value set)."""
        if not self.names:
            return self.compiled
        values = tuple(variables[name] for name in self.names)
        if self.untrusted:
            last = self.last
            if last and last[0] == values:
                return last[1]
            compiled = _compile(_substituted(self.text, self.names, values, folds(self.text, self.flags)), self.flags,
                                True)
            last[:] = [values, compiled]
            return compiled
        return _compile_substituted(self.text, self.flags, self.names, values)

    def shown(self, variables: dict[str, Value]) -> str:
        """The pattern as matched, for the trace: its first MAX_SHOWN_PATTERN characters (an array variable is an
        alternation of all its values; found by a review: 14 MB of trace for a 39 KB request)."""
        if not self.names:
            return self.text
        folded = folds(self.text, self.flags)
        shown = VARIABLE.sub(lambda match: _atom(variables[match.group(1)], folded), self.text)  # as matched
        if len(shown) <= MAX_SHOWN_PATTERN:
            return shown
        return f"{shown[:MAX_SHOWN_PATTERN]}... ({len(shown)} characters)"


def _has_alternation(text: str) -> bool:
    index = 0
    while index < len(text):
        if text[index] == "\\":
            index += 2
            continue
        if text[index] == "|":
            return True
        index += 1
    return False


def literal_prefix(text: str, flags: str) -> str | None:
    """The text every match must start with, read from a pattern anchored by `^`: the plain characters (and
    escaped punctuation) after it, up to the first operator; a character followed by `?`, `*` or `{n,m}` is not
    required, so it is left out (one followed by `+` is). None when there is no such text, or when it could
    mislead: an unescaped `|` anywhere (an alternative need not start with it) or the `m` flag (`^` then also
    matches after a newline). Used to refuse texts without running RE2, so it may only ever be shorter than the
    truth, never longer."""
    if not text.startswith("^") or "m" in flags or _has_alternation(text):
        return None
    chars: list[str] = []
    index = 1
    while index < len(text):
        char = text[index]
        if char == "\\":
            following = text[index + 1:index + 2]
            if not following or following.isalnum() or not following.isascii():
                if following == "Q" and chars:  # an empty `\Q\E` is no atom either: `\?\Q\E?` is `\??`
                    chars.pop()
                break
            chars.append(following)
            index += 2
            continue
        if char in ".^$|?*+()[]{}":
            # `{{name}}` is a variable (a literal of unknown text): stop. `?`, `*` and `{n,m}` make the character
            # before them optional: drop it; `+` repeats it, once at least: keep it (`^/a//+b` needs `//`, which a
            # merged path never holds: found by mutation testing). So may one after a flag group: RE2 reads
            # `/(?i)*` as `/*` (the group is no atom), so any `(?` drops it too.
            if char in "?*" or (char == "{" and not text.startswith("{{", index)) or text.startswith("(?", index):
                if chars:
                    chars.pop()
            break
        chars.append(char)
        index += 1
    prefix = "".join(chars)
    if not prefix:
        return None
    if "i" in flags:
        return prefix.lower() if prefix.isascii() else None
    return prefix


def _unescape(literal: str) -> str:
    return re.sub(r"\\(.)", r"\1", literal, flags=re.DOTALL)  # a backslash and a newline: a newline, as in RE2


def _joined(pieces: tuple[str, ...], variables: dict[str, Value]) -> str | None:
    """pieces[0] + value + pieces[2] + ...: the only text an exact template matches; None when a value is an
    array (RE2 decides)."""
    if len(pieces) == 3:  # one variable: the common case, without the general loop's generators
        value = variables[pieces[1]]
        return pieces[0] + value + pieces[2] if isinstance(value, str) else None
    if not all(isinstance(variables[name], str) for name in pieces[1::2]):
        return None
    return "".join(piece if index % 2 == 0 else variables[piece] for index, piece in enumerate(pieces))


def _exact(pieces: tuple[str, ...], variables: dict[str, Value], text: str) -> bool | None:
    """Whether `text` is pieces[0] + value + pieces[2] + ..., an array value standing for any of its elements;
    None (RE2 decides) when there are several variables and one of them is an array."""
    if len(pieces) == 3:
        before, name, after = pieces
        end = len(text) - len(after)
        if end < len(before) or not text.startswith(before) or not text.endswith(after):
            return False
        value, middle = variables[name], text[len(before):end]
        if isinstance(value, str):
            return middle == value
        return None if value is ANYTHING else middle in value
    whole = _joined(pieces, variables)
    return None if whole is None else text == whole


def _exact_subtree(pieces: tuple[str, ...], variables: dict[str, Value], text: str, dotall: bool) -> bool | None:
    """`^pieces(/.*)?$`: the pieces' text itself, or it followed by `/` and anything (without `s`, `.` is not a
    newline); None (RE2 decides) when a value is an array."""
    whole = _joined(pieces, variables)
    if whole is None:
        return None
    if not text.startswith(whole):
        return False
    rest = text[len(whole):]
    return not rest or (rest[0] == "/" and (dotall or "\n" not in rest))


SUBTREE = "(/.*)?"


def _exact_pieces(text: str, flags: str) -> tuple[tuple[str, ...], bool] | None:
    """The literal pieces and variable names of `^...$` (see `Pattern.exact`), and whether it ends in `(/.*)?`."""
    if set(flags) & {"i", "m"} or not (text.startswith("^") and text.endswith("$")):
        return None
    inner = text[1:-1]
    subtree = inner.endswith(SUBTREE)
    parts = VARIABLE.split(inner[:-len(SUBTREE)] if subtree else inner)  # literal, name, literal, ..., literal
    # Literal pieces of plain characters and escaped punctuation only: no quantifier applying to a value, no
    # trailing lone backslash escaping its first character (or the `(` of an escaped `\(/.*)?`).
    if not all(_LITERAL_PIECE.fullmatch(part) for part in parts[::2]):
        return None
    return tuple(_unescape(part) if index % 2 == 0 else part for index, part in enumerate(parts)), subtree


def misplaced_variable(text: str) -> str | None:
    """Why a `{{variable}}` of the pattern would not be matched as the literal text it is substituted as, else
    None: inside a character class or `\\Q...\\E`, after a backslash, or against a brace (a `{n}` count). There
    its value is not text in sequence (`[{{t}}]` is a set of characters), so neither its escaping nor a deny
    rule's "any value" for an unresolved variable would mean what it says."""
    index, in_class, in_quote = 0, False, False
    while index < len(text):
        variable = VARIABLE.match(text, index)
        if in_quote:
            if text.startswith("\\E", index):
                in_quote = False
                index += 2
            elif variable:
                return f"{variable.group()} is inside \\Q...\\E"
            else:
                index += 1
            continue
        if variable:
            name = variable.group()  # `{{t}}`
            if in_class:
                return f"{name} is inside a character class [...]"
            if text[index - 1:index] == "{" or text[variable.end():variable.end() + 1] == "}":
                return f"{name} stands against a brace (a {{n}} count?)"
            index = variable.end()
            continue
        char = text[index]
        if char == "\\":
            if text.startswith("\\Q", index):
                in_quote = True
            elif escaped := VARIABLE.match(text, index + 1):
                return f"{escaped.group()} follows a backslash"
            index += 2
        elif in_class:
            if text.startswith("[:", index):  # [[:alpha:]]
                end = text.find(":]", index + 2)
                index = end + 2 if end >= 0 else index + 1
            else:
                in_class = char != "]"
                index += 1
        elif char == "[":
            in_class = True
            index += 1
            index += text.startswith("^", index)
            index += text.startswith("]", index)  # `[]...]` and `[^]...]`: the first `]` is a member
        else:
            index += 1
    return None


def compile_pattern(text: str, flags: str, declared: frozenset[str], untrusted: bool = False) -> Pattern:
    """Compile at load. Raises PatternError for an RE2 refusal, an undeclared `{{variable}}` or one placed where
    its value would not be literal text (`misplaced_variable`). `untrusted`: a caller wrote it (see Pattern)."""
    names = tuple(dict.fromkeys(VARIABLE.findall(text)))
    unknown = [name for name in names if name not in declared]
    if unknown:
        raise PatternError(f"uses undeclared variable(s) {', '.join(unknown)}; declare them in 'variables'")
    misplaced = misplaced_variable(text) if names else None
    if misplaced is not None:
        raise PatternError(f"{misplaced}: a variable's value is matched as literal text, so it must stand on its own")
    modifiers = _I_MODIFIER.findall(text) if names else []
    leading = _LEADING_I.match(text)
    if modifiers and not (len(modifiers) == 1 and leading is not None and leading.group(0).endswith(modifiers[0])):
        raise PatternError("with variables, case-insensitivity is the whole pattern's or none: use regexFlags i or a "
                           "leading (?i), not (?i) or (?-i) for a part of it")
    if not names:
        compiled = _compile(text, flags, untrusted)
        literal = _LITERAL.fullmatch(text)
        plain = _unescape(literal.group(1)) if literal else None
        # Without `i` and `m`, RE2's `^...$` around plain characters matches that exact text and nothing else.
        exact = plain if plain is not None and not set(flags) & {"i", "m"} else None
        folded = plain.lower() if plain is not None and plain.isascii() and "i" in flags and "m" not in flags else None
        return Pattern(text, flags, (), compiled, exact, literal_prefix(text, flags), untrusted=untrusted,
                       folded=folded)
    _compile(VARIABLE.sub("(?:x)", text), flags, untrusted)  # syntax check with a value in each variable's place
    exact = _exact_pieces(text, flags)
    return Pattern(text, flags, names, None, None, literal_prefix(text, flags), *(exact or (None, False)),
                   untrusted=untrusted)


def json_text(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def scope_words(value: str) -> list[str]:
    """A space-separated scope string's scopes. RFC 6749 3.3: scope tokens are separated by spaces (%x20) only, so
    `"read\u00a0admin"` or `"read\tadmin"` is one scope, as the issuer meant it, not `read` and `admin`."""
    return [word for word in value.split(" ") if word]


def texts(value: Any, words: bool = False) -> list[str]:
    """What a JSON value offers to a pattern: a string itself (and its words, for `scope`), a number or boolean
    its JSON text, an array each element's texts. Objects and null offer nothing, so they never match."""
    if isinstance(value, str):
        parts = scope_words(value) if words else []
        # Its words whenever splitting changes anything: `"admin "` offered only itself, so a deny on the word
        # `admin` missed while requiredScopes granted it (found by a review).
        return [value, *parts] if parts != [value] and parts else [value]
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
