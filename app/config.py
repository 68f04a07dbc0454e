"""Configuration documents (profiles, authorizers, presets): read once, validated completely, reloaded safely.

A document comes from an environment variable holding either JSON (the value starts with `{`) or a file path.
Decoding and validation report every problem as `SOURCE: $.json.path: what was expected`, so a bad file stops
startup with one line per mistake. `ReloadingDocument` re-reads a file on SIGHUP or when it changes (its
modification or change time, inode or size), validates the new content first and swaps it in atomically; a bad
new file keeps the old value.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
import structlog

T = TypeVar("T")
log = structlog.get_logger("app.config")
_NOT_A_PATH = ("{", "[", '"', "'")
_TOKEN_LIKE = re.compile(r"(?=[^/]*[0-9])(?=[^/]*[A-Z])(?=[^/]*[a-z])[A-Za-z0-9+=_-]{20,}")
_PATH_LIKE = re.compile(r"[^\x00-\x1f\x7f\"'{}\[\]]{1,1024}")
MSGSPEC_PATH = re.compile(r" - at (`key` in )?`(\$[^`]*)`$")  # "`key` in": a member name of that object


# The end of the text, in Python's `re` and ECMA-262 (OpenAPI) alike. `$` also matches before a final newline
# in Python (and msgspec's `Meta(pattern=...)` searches with Python's `re`), so `"GET\n"` or `"X-User\n"` would
# pass a `^...$` pattern.
END = r"(?![\s\S])"
# What a `Meta(pattern=...)` means, in words: msgspec's "Expected `str` matching regex '^[A-Za-z]{1,16}(?![\s\S])'"
# is told as "expected an HTTP method such as GET" (found by a review).
_PATTERN_WORDS: dict[str, str] = {}


def worded(pattern: str, words: str) -> str:
    """`pattern`, remembered with what it means for error messages (`_validation_problem`)."""
    _PATTERN_WORDS[pattern] = words
    return pattern


# A method is an RFC 9110 token (VERSION-CONTROL, UPDATEREDIRECTREF, M-SEARCH): forward-auth decides any such
# method, so rules and /v1/authorize take them all (found by a review: letters only, a deny on one could not be
# written).
METHOD_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}"
METHOD = worded("^" + METHOD_TOKEN + END, "an HTTP method such as GET (an RFC 9110 token, 1 to 32 characters)")


class ConfigError(ValueError):
    """Every problem of a configuration document, one line each: `SOURCE: $.path: problem`."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {path}: {message}" for path, message in problems))


def json_path(*parts: str | int) -> str:
    """`$.acme-auth0.allowed_algs[0]`; names that are not plain identifiers are bracketed, and one longer than any
    id (MAX_SHOWN_NAME) is not shown: a token or a secret pasted as a member name reached logs and /readyz (found
    by a review)."""
    path = "$"
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif len(part) > MAX_SHOWN_NAME:
            path += f"[<a name of {len(part)} characters>]"
        elif re.fullmatch(r"[A-Za-z0-9_.-]+", part) and "." not in part:
            path += f".{part}"
        else:
            path += "[" + msgspec.json.encode(part).decode() + "]"
    return path


MAX_SHOWN_NAME = 64  # the longest profile or authorizer id
_UNKNOWN_FIELD = re.compile(r"unknown field `(.*)`\Z", re.DOTALL)


def without_secrets(message: str) -> str:
    """msgspec's message with the text it quotes from the input kept only when it looks like a name: an unknown
    field's name, a value outside a fixed set (a token or a secret pasted there reached answers, logs and /readyz;
    found by reviews)."""
    unknown = _UNKNOWN_FIELD.search(message)
    if unknown is not None and shown_name(unknown.group(1)) is None:
        return message[:unknown.start()] + "unknown field (its name is not shown: it is no plain name)"
    if message.startswith("Invalid enum value") and \
            shown_word(message[len("Invalid enum value "):].strip("'\"")) is None:
        return "Invalid enum value (not shown: it is no short word)"
    return message


Stamp = tuple[int, int, int, int] | tuple[str] | None


@dataclass(frozen=True)
class Source:
    """Where a document comes from: the variable's name, its JSON text or a file path."""

    variable: str
    value: str

    @property
    def is_file(self) -> bool:
        """JSON text starts with `{`; a value starting as other JSON or quoted (`'{...}'`, as an env file or a
        compose file can leave it) is read as JSON too, so that its error is a JSON one, not "no such file"
        with the whole value (and the secrets in it) as the file's name."""
        return not self.value.lstrip().lstrip("\ufeff").lstrip().startswith(_NOT_A_PATH)

    @property
    def label(self) -> str:
        if not self.is_file:
            return self.variable
        # A path is named (an unmounted volume's is what the operator needs to see); a value that does not look
        # like one may be a secret put in by mistake: a base64 one holds `/` often, so a long mixed-case run of
        # token characters between slashes hides the value too.
        value = self.value
        shown = _PATH_LIKE.fullmatch(value) and (value.startswith(("/", "./", "../", "~")) or value.endswith(
            ".json")) and not any(_TOKEN_LIKE.fullmatch(part) for part in value.split("/"))
        return f"{self.variable} ({self.value})" if shown else f"{self.variable} (the value, not shown: it does " \
            "not look like a file path)"

    def read(self) -> bytes:
        if not self.is_file:
            text = self.value.strip("\ufeff \t\r\n")
            if text.startswith("'") or (text.startswith('"') and text.endswith('"')):
                raise ConfigError(self.label, [("$", "not valid JSON: the value is in quotes (an env file or a "
                                                     "compose file keeps them): remove the quotes")])
            return self.value.encode()
        try:
            # Without blocking, and only a regular file of at most MAX_CONFIG_BYTES: a FIFO at the path hung startup,
            # and on a reload froze the worker's event loop for good; /dev/zero read until memory ran out (found by
            # a review).
            descriptor = os.open(self.value, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise ConfigError(self.label, [("$", f"cannot read the file: {exc.strerror}")]) from None
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            os.close(descriptor)
            raise ConfigError(self.label, [("$", "cannot read the file: not a regular file")])
        with os.fdopen(descriptor, "rb") as handle:
            if status.st_size > MAX_CONFIG_BYTES:
                raise ConfigError(self.label, [("$", f"the file is larger than {MAX_CONFIG_BYTES >> 20} MiB")])
            try:
                data = handle.read(MAX_CONFIG_BYTES + 1)
            except OSError as exc:
                raise ConfigError(self.label, [("$", f"cannot read the file: {exc.strerror}")]) from None
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(self.label, [("$", f"the file is larger than {MAX_CONFIG_BYTES >> 20} MiB")])
        return data

    def stamp(self) -> Stamp:
        """What tells a changed file: modification and change times, inode and size (`cp -p` or rsync keep the
        modification time, not the change time; `mv` of a new file changes the inode). None when unreadable."""
        try:
            stat = os.stat(self.value) if self.is_file else None
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_size) if stat else None


MAX_CONFIG_BYTES = 16 << 20  # a configuration file (profiles, authorizers): far more than 1,000 rules take


class _Members(dict):  # type: ignore[type-arg]
    duplicated: tuple[str, ...] = ()


def _members(pairs: list[tuple[str, Any]]) -> _Members:
    members = _Members(pairs)
    if len(members) != len(pairs):
        seen: set[str] = set()
        members.duplicated = tuple(dict.fromkeys(key for key, _ in pairs if key in seen or seen.add(key)))
    return members


_BOM = b"\xef\xbb\xbf"
_AT_BYTE = re.compile(r" \(byte (\d+)\)$")


def _without_bom(data: bytes) -> bytes:
    """RFC 8259 section 8.1 lets a parser ignore a UTF-8 byte order mark; editors on Windows write one."""
    return data[len(_BOM):] if data.startswith(_BOM) else data


def _not_json(exc: msgspec.DecodeError, data: bytes) -> str:
    """msgspec's syntax error with its byte offset told as line and column, which an editor can go to."""
    message = str(exc)
    if not data.strip():
        return "not valid JSON: the document is empty"
    if message == "Input data was truncated":
        return f"not valid JSON: {_unclosed(data)}"
    match = _AT_BYTE.search(message)
    if match is None:
        if message.startswith("Number out of range"):  # msgspec names no position, only `$[...][...]`
            huge = next((found for found in _NUMBER.finditer(data)
                         if found.group(1) and math.isinf(float(found.group(1)))), None)
            if huge is not None:
                return ("not valid JSON: a number out of range, beyond a 64-bit float "
                        f"({_position(data, huge.start(1))})")
            return "not valid JSON: a number out of range, beyond a 64-bit float"
        return f"not valid JSON: {message}"
    return f"not valid JSON: {message[: match.start()]} ({_position(data, int(match.group(1)))})"


# A JSON string (skipped) or a number (group 1): a number's position is never one inside a string.
_NUMBER = re.compile(rb'"(?:[^"\\]|\\.)*"|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)')


def _unclosed(data: bytes) -> str:
    """What a truncated document leaves open, and where: the standard library's parser names a string's start
    and the end of anything else (its messages name positions, never the text)."""
    try:
        json.loads(data)
    except json.JSONDecodeError as exc:
        if exc.msg.startswith("Unterminated string"):
            return f"the document ends inside a string that starts at line {exc.lineno}, column {exc.colno}"
        end = _position(data, max(0, len(data.rstrip()) - 1))  # its last character, not where json.loads stopped
        return f"the document ends ({end}) before every value, array and object in it is complete"
    except (ValueError, RecursionError):
        pass
    return "the document ends before it is complete (an unclosed string, array or object)"


def _position(data: bytes, offset: int) -> str:
    offset = min(offset, len(data))
    start = data.rfind(b"\n", 0, offset) + 1
    line = data.count(b"\n", 0, offset) + 1
    column = len(data[start:offset].decode("utf-8", "replace")) + 1
    return f"line {line}, column {column}"


def _not_utf8(data: bytes) -> str | None:
    """Where the document stops being UTF-8 (RFC 8259 section 8.1), or None. msgspec's own error for it is a
    UnicodeDecodeError without the document's offset, which read as "nested too deeply" here before."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not valid JSON: the text is not UTF-8 ({_position(data, exc.start)})"
    return None


def decode_document(data: bytes, label: str) -> Any:
    """A configuration document's JSON. A member name given twice (at any depth) is refused: the last would win
    silently, so a second profile `acme` would replace the first without a word."""
    data = _without_bom(data)
    not_utf8 = _not_utf8(data)
    if not_utf8 is not None:
        raise ConfigError(label, [("$", not_utf8)])
    try:
        document = msgspec.json.decode(data)
        tree = json.loads(data, object_pairs_hook=_members)
    except msgspec.DecodeError as exc:
        raise ConfigError(label, [("$", _not_json(exc, data))]) from None
    except (RecursionError, ValueError):  # msgspec accepted it: only nesting deeper than Python's stack is left
        raise ConfigError(label, [("$", "nested too deeply")]) from None
    problems: list[tuple[str, str]] = []
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(tree, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, _Members):
            problems.extend((json_path(*path, key), "this member name appears more than once in its object")
                            for key in node.duplicated)
            stack.extend((value, (*path, key)) for key, value in node.items())
        elif isinstance(node, list):
            stack.extend((value, (*path, index)) for index, value in enumerate(node))
    if problems:
        raise ConfigError(label, sorted(problems))
    return document


def decode(data: bytes, type_: type[T], label: str, *, path_prefix: tuple[str | int, ...] = ()) -> T:
    """Decode JSON into a Struct type, turning msgspec's error into a ConfigError with the JSON path."""
    data = _without_bom(data)
    not_utf8 = _not_utf8(data)
    if not_utf8 is not None:
        raise ConfigError(label, [(json_path(*path_prefix), not_utf8)])
    try:
        return msgspec.json.decode(data, type=type_)
    except msgspec.ValidationError as exc:
        raise ConfigError(label, [_validation_problem(exc, type_, path_prefix)]) from None
    except msgspec.DecodeError as exc:
        raise ConfigError(label, [(json_path(*path_prefix), _not_json(exc, data))]) from None


def convert(value: Any, type_: type[T], label: str, path: tuple[str | int, ...]) -> T:
    """Like `decode`, for an already decoded value (used after merging a preset under a profile)."""
    try:
        return msgspec.convert(value, type=type_)
    except msgspec.ValidationError as exc:
        raise ConfigError(label, [_validation_problem(exc, type_, path)]) from None


_FIELD = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)")
_MISSING = re.compile(r"missing required field `([^`]+)`")


_ELEMENT = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)\[(\d+)\]")


def convert_each_field(raw: Any, type_: type[T], label: str, key: str, problems: list[tuple[str, str]],
                       stand_ins: dict[str, Any] | None = None, fills: dict[str, Any] | None = None,
                       filled: set[str] | None = None) -> T | None:
    """`raw` (the member `key` of a document) as `type_`, or None with one problem per bad field: msgspec stops
    at the first, so each bad field is reported and set aside in turn (one line per problem, not one per
    restart; found by reviews, for profiles, then for authorizers).

    `stand_ins`, by field name: an element of that list field found bad is replaced by the stand-in rather than
    the whole field set aside. When only elements were replaced, the value is returned although problems were
    added (the caller compares their count), so that its other checks still run: one rule's typo hid every other
    problem of its authorizer (a bad pattern in another rule, a reserved header).

    `fills`, by field name: a required field found bad or missing takes that value instead, and is named in
    `filled`; the value so made is returned, for the caller's own checks of the other fields (a profile with a
    bad `audiences` had its `'none'` algorithm reported only at the next start; found by a review)."""
    if not isinstance(raw, dict):
        try:
            return convert(raw, type_, label, (key,))
        except ConfigError as exc:
            problems.extend(exc.problems)
            return None
    candidate, before = dict(raw), len(problems)
    set_aside: set[str] = set()
    refilled: set[str] = set()
    replaced: set[tuple[str, int]] = set()
    prefix = json_path(key)
    while True:
        try:
            value = convert(candidate, type_, label, (key,))
        except ConfigError as exc:
            path, message = exc.problems[0]
            missing = _MISSING.search(message)
            if missing is not None and missing.group(1) in set_aside:
                if fills is None or missing.group(1) not in fills or missing.group(1) in refilled:
                    return None  # a field set aside above: already reported
                refilled.add(missing.group(1))  # (once: a fill the type refused would loop)
                candidate[missing.group(1)] = fills[missing.group(1)]
                continue
            absent: list[str] = []
            if missing is not None and path == prefix:  # every required field missing, in one line
                info: Any = msgspec.inspect.type_info(type_)
                absent = [field.encode_name for field in getattr(info, "fields", ())
                          if field.required and field.encode_name not in candidate]
                if len(absent) > 1:
                    message = "Object missing required fields " + ", ".join(f"`{name}`" for name in absent)
            problems.append((path, message))
            if absent and fills is not None and all(name in fills for name in absent):
                candidate.update({name: fills[name] for name in absent})
                set_aside.update(absent)
                continue
            element = _ELEMENT.match(path[len(prefix):]) if stand_ins and path.startswith(prefix) else None
            if element is not None and element.group(1) in stand_ins and isinstance(candidate.get(element.group(1)),
                                                                                    list):  # type: ignore[operator]
                field_name, index = element.group(1), int(element.group(2))
                if (field_name, index) not in replaced and index < len(candidate[field_name]):
                    replaced.add((field_name, index))
                    items = list(candidate[field_name])
                    items[index] = stand_ins[field_name]  # type: ignore[index]
                    candidate[field_name] = items
                    continue
            name: str | None = None
            if path == prefix and "unknown field" in message:
                # The member the type does not have (its name may be hidden in the message: without_secrets).
                known = {field.encode_name for field in getattr(msgspec.inspect.type_info(type_), "fields", ())}
                name = next((member for member in candidate if member not in known), None)
            elif path.startswith(prefix):
                step = _FIELD.match(path[len(prefix):])
                name = step.group(1) if step else None
            if name is None or name not in candidate:
                return None
            del candidate[name]
            set_aside.add(name)
            continue
        if filled is not None:
            filled.update(set_aside)
            return value
        return value if len(problems) == before or not set_aside else None


def _validation_problem(exc: msgspec.ValidationError, type_: Any, prefix: tuple[str | int, ...]) -> tuple[str, str]:
    """msgspec's error as (JSON path under `prefix`, problem): its message ends with where, `- at `$...``."""
    message = str(exc)
    match = MSGSPEC_PATH.search(message)
    inner = match.group(2) if match else "$"
    problem = _with_choices(message[: match.start()] if match else message, type_, inner)
    if match and match.group(1):
        problem = f"a member name: {problem}"
    if problem.startswith("Expected `str` matching regex "):
        pattern = next((pattern for pattern in _PATTERN_WORDS if repr(pattern) in problem or pattern in problem), None)
        if pattern is not None:
            problem = f"expected {_PATTERN_WORDS[pattern]}"
    return json_path(*prefix) + inner[1:], problem


_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


_WORD = re.compile(r"[A-Za-z][A-Za-z_-]{0,23}")


_NAME = re.compile(r"[A-Za-z_][A-Za-z_-]{0,39}[0-9]{0,3}")


def shown_name(value: str) -> str | None:
    """A member name quoted when it looks like a mistyped field name (`leeway2`, `clock_skew_tolerance_seconds`:
    letters, `_`, `-`, maybe a number at the end; at most 43), else None (a token or a secret pasted as a name)."""
    return repr(value) if _NAME.fullmatch(value) else None


def shown_member(name: str) -> str:
    """A member name for a path in an answer: itself when `shown_name` would quote it, else its length only."""
    return name if shown_name(name) is not None else f"<a name of {len(name)} characters>"


def shown_word(value: str) -> str | None:
    """`value` quoted when it looks like a mistyped word (letters, `_`, `-`; at most 24), else None: a value in the
    wrong field may be a secret, a key or a token, and configuration errors are logged and shown by /readyz."""
    return repr(value) if _WORD.fullmatch(value) else None


def _with_choices(problem: str, type_: Any, path: str) -> str:
    """msgspec's "Invalid enum value 'permit'" with what was expected ("expected one of 'allow', 'deny'"), read
    from the type at the error's JSON path; any other problem as it is."""
    problem = without_secrets(problem)
    if not problem.startswith("Invalid enum value"):
        return problem
    info: Any = msgspec.inspect.type_info(type_)
    for name, index in _STEP.findall(path):
        found = None
        for candidate in getattr(info, "types", (info,)):  # a union: the member that has this step
            if name and isinstance(candidate, msgspec.inspect.StructType):
                found = next((field.type for field in candidate.fields if field.encode_name == name), None)
            elif name and isinstance(candidate, msgspec.inspect.DictType):
                found = candidate.value_type
            elif index and isinstance(candidate, (msgspec.inspect.ListType, msgspec.inspect.TupleType,
                                                  msgspec.inspect.VarTupleType)):
                found = getattr(candidate, "item_type", None)
            if found is not None:
                break
        if found is None:
            return problem
        info = found
    values = [value for candidate in getattr(info, "types", (info,))
              if isinstance(candidate, msgspec.inspect.LiteralType) for value in candidate.values]
    return f"{problem}: expected one of {', '.join(map(repr, values))}" if values else problem


class ReloadingDocument(Generic[T]):
    """A validated document that follows its file: SIGHUP or a changed file triggers validate-then-swap."""

    def __init__(self, source: Source | None, load: Callable[[bytes, str], T], empty: T,
                 on_change: Callable[[T, T], None] | None = None,
                 agrees: Callable[[T], list[tuple[str, str]]] | None = None) -> None:
        """`agrees(new)`: on reload, the problems of a new value with the other documents as they stand (at
        startup the documents loaded later check against the earlier ones themselves)."""
        self.source = source
        self._load = load
        self._on_change = on_change
        self.agrees = agrees
        self.value: T = empty
        self._stamp: Stamp = None
        self._data: bytes | None = None  # the bytes of the value served
        self.last_error: str | None = None
        self.refused_at: list[Stamp] | None = None  # see `watch`
        self._refused: bytes | None = None  # the bytes refused last (see `reload`)
        self.reads = 0  # reloads attempted (see `watch`)
        if source is not None:
            self._stamp = source.stamp()
            self.value = self._first_load(source)

    def _first_load(self, source: Source) -> T:
        """The document a worker starts with. A worker respawned after its service started takes the last
        document its siblings accepted (the snapshot) when the file now reads otherwise: a file broken since,
        or refused by a reload, would stop the new worker (and, by granian's crash-loop rule, the service) or
        leave it serving another configuration. Its polls then read the file when its siblings' do. Without a
        snapshot (the first start), a ConfigError stops the process."""
        try:
            data: bytes | None = source.read()
        except ConfigError as exc:
            data, unreadable = None, exc
        kept = _snapshot(source)
        if kept is not None and kept[0] != data:
            try:
                value = self._load(kept[0], source.label)
                # The stamp the siblings read it at: this worker's polls see a change when theirs do. Reading the
                # file at once served an edit the others had not yet been told of (SIGHUP) or polled for from the
                # new worker alone (found by a review).
                self._stamp = kept[1]
                self._data = kept[0]
                return value
            except ConfigError:
                pass
        if data is None:
            raise unreadable
        value = self._load(data, source.label)
        _keep_snapshot(source, data, self._stamp)
        self._data = data
        return value

    def reload(self) -> bool:
        """Re-read and swap in when valid and changed; keep serving the old value on error. Returns whether it
        swapped."""
        if self.source is None or not self.source.is_file:
            return False
        self.reads += 1
        self._stamp = self.source.stamp()
        data: bytes | None = None
        try:
            data = self.source.read()
            if data == self._data and self.last_error is None:
                # Touched, chmod-ed or linked, not changed: nothing to rebuild or log. Or changed back before this
                # worker looked (A, B for a moment, A): the snapshot, which the other workers follow when the file
                # breaks, says A again (found by a review: they took the B the operator had reverted).
                kept = _snapshot(self.source)
                if kept is not None and kept[0] != data:
                    _keep_snapshot(self.source, data, self._stamp)
                return False
            new = self._load(data, self.source.label)
            problems = self.agrees(new) if self.agrees is not None else []
            if problems:
                raise ConfigError(self.source.label, problems)
        except ConfigError as exc:
            # The same bytes refused for the same reason are not logged again: the authorizers' change reads the
            # refused profiles again in the same pass, in case they now load (found by a review).
            repeated = self.last_error == str(exc) and data is not None and data == self._refused
            self.last_error, self._refused = str(exc), data
            if not repeated:
                log.error("config_reload_failed", source=self.source.variable, problems=str(exc).splitlines()[:20])
            self._follow_siblings()
            return False
        except Exception as exc:  # noqa: BLE001 - a loader bug must not end the watch: keep the old document
            self.last_error = f"{self.source.label}: $: the document could not be loaded ({type(exc).__name__})"
            log.error("config_reload_failed", source=self.source.variable, problems=[self.last_error])
            return False
        self._swap(data, new)
        return True

    def _follow_siblings(self) -> None:
        """With a file refused, take the document the other workers accepted last (the snapshot) when it is not
        the one served here. Each worker polls on its own: one that missed a version its siblings accepted (A,
        B for a moment, then a broken C) served A while they served B for as long as the file stayed broken
        (found by a review). The file stays refused (`last_error`), and the snapshot is not written again."""
        assert self.source is not None
        snapshot = _snapshot(self.source)
        if snapshot is None or snapshot[0] == self._data:
            return
        kept = snapshot[0]
        try:
            new = self._load(kept, self.source.label)
            if self.agrees is not None and self.agrees(new):
                return
        except Exception:  # noqa: BLE001 - a snapshot that no longer loads: keep what is served
            return
        old, self.value, self._data = self.value, new, kept
        log.info("config_reloaded", source=self.source.variable, taken_from="the other workers' last accepted")
        if self._on_change is not None:
            self._on_change(old, new)

    def adopt(self, data: bytes, stamp: Stamp, value: T) -> None:
        """Swap in a value loaded from `data` read at `stamp`, which the caller checked against the other
        documents: exactly what was checked is applied (a reload would read the file again)."""
        self._stamp = stamp
        self._swap(data, value)

    def _swap(self, data: bytes, new: T) -> None:
        assert self.source is not None
        old, self.value, self.last_error, self._data, self._refused = self.value, new, None, data, None
        _keep_snapshot(self.source, data, self._stamp)
        log.info("config_reloaded", source=self.source.variable)
        if self._on_change is not None:
            self._on_change(old, new)

    def changed_on_disk(self) -> bool:
        return self.source is not None and self.source.is_file and self.source.stamp() != self._stamp


# Set by `python -m app` to a private directory (removed on exit): the file documents last accepted, by variable.
SNAPSHOT_ENV = "JWT_DECISION_SNAPSHOT_DIR"


def _snapshot_path(source: Source) -> str | None:
    directory = os.environ.get(SNAPSHOT_ENV)
    return os.path.join(directory, f"{source.variable}.json") if directory and source.is_file else None


def _snapshot(source: Source) -> tuple[bytes, Stamp] | None:
    """The document the workers accepted last, and the stamp of the file they read it from."""
    path = _snapshot_path(source)
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            stamp, _, data = handle.read().partition(b"\n")
        found = msgspec.json.decode(stamp)
    except (OSError, msgspec.DecodeError):  # none yet
        return None
    return data, tuple(found) if isinstance(found, list) else None  # type: ignore[return-value]


def _keep_snapshot(source: Source, data: bytes, stamp: Stamp) -> None:
    """Write the accepted document, after the stamp of the file it was read from (a line of JSON), for workers
    respawned later (atomically: a reader sees the old or the new)."""
    path = _snapshot_path(source)
    if path is None:
        return
    partial = f"{path}.{os.getpid()}"
    try:
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
            handle.write(msgspec.json.encode(stamp) + b"\n" + data)  # the profiles' secrets: for the service's user
        os.replace(partial, path)
    except OSError as exc:
        # No snapshot then, rather than an older one that would start a worker on an older document: a
        # respawned worker reads the file itself.
        log.warning("config_snapshot_failed", source=source.variable, error=exc.strerror)
        for leftover in (partial, path):
            try:
                os.remove(leftover)
            except OSError:
                pass


async def watch(documents: list[ReloadingDocument[Any]], interval: float) -> None:
    """Poll the files' stamps (cheap, works on every filesystem). When one changed, every document
    that changed or stands refused is read again, in order (the profiles before the authorizers): a document
    refused for naming what the other lacked is taken up when the other is fixed.

    A refused document also remembers the stamps of all the files as they were before the poll that refused it,
    and is read again once any of them differs. A reload may read the other file while it is being written (the
    profiles check the authorizers as they read now): refused for a half-written file, both documents stood
    refused with nothing left to change on disk, until the next edit (a test failed so, once in a while)."""
    while True:
        await asyncio.sleep(interval)  # first: a worker respawned from a snapshot polls when its siblings do
        stamps = _stamps(documents)
        if any(document.changed_on_disk() or (document.last_error is not None and document.refused_at != stamps)
               for document in documents):
            _reload_pass(documents, stamps, every=False)


def _stamps(documents: list[ReloadingDocument[Any]]) -> list[Stamp]:
    return [document.source.stamp() if document.source is not None else None for document in documents]


def _reload_pass(documents: list[ReloadingDocument[Any]], stamps: list[Stamp], *, every: bool) -> None:
    """Read again the documents changed or refused (`every`: all of them, for a SIGHUP), and remember the stamps
    a refused one was refused at (see `watch`)."""
    reads = [document.reads for document in documents]
    for document, before in zip(documents, reads):
        if every:  # a SIGHUP reads even a file whose stamps did not change, but not one refused at these stamps
            due = document.last_error is None or document.refused_at != stamps  # (a poll saw it first and said so)
        else:
            due = document.changed_on_disk() or document.last_error is not None
        # One read a pass: the profiles' reload reads a changed authorizers file itself, and reading it again
        # logged its refusal twice (found by a review).
        if document.reads == before and due:
            document.reload()
        # Also after a SIGHUP: without it, the next poll read a file refused by the SIGHUP again, and logged its
        # refusal a second time (found by a review).
        document.refused_at = stamps if document.last_error is not None else None


def install_sighup(documents: list[ReloadingDocument[Any]]) -> None:
    """SIGHUP reloads every file-backed document (validate first, swap atomically)."""
    try:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: _reload_pass(documents, _stamps(documents), every=True))
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests), or no signals
        pass
