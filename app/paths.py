"""Request-target normalisation before rule matching (RFC 3986 section 6.2.2), refusing what proxies disagree on.

A rule written for `/v1/organisations/acme` must see the path the upstream will serve, whatever spelling the
client chose: dot segments are removed, percent-encoded characters a path may hold as themselves are decoded,
repeated slashes merge. Spellings whose meaning differs between servers (an encoded slash or backslash, a NUL, a
backslash) are refused outright rather than guessed at.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

# The characters a normalised path holds as themselves: printable ASCII but for the path's structure (`/` the
# separator, `?` the query, `%` an escape) and what is refused anyway (`#`, `;`, `\`). The escape of any of them is
# decoded, so that every path an application serves has one spelling: applications decode every escape before
# routing (WSGI's PATH_INFO, ASGI's `path`, Go's URL.Path, servlet paths), so a deny rule on
# `^/users/@me/secret$` must hold for `/users/%40me/secret`, and one on `^/a\|b$` for `/a%7Cb` (RFC 3986 6.2.2.2
# decodes only the unreserved characters; the others were bypasses, found by a review). Escapes of the rest
# (`%3F`, `%23`, `%25`, `%20`) stay escaped, in upper case; `%2F`, `%5C`, `%3B` and control characters are refused.
DECODED = frozenset(map(chr, range(0x21, 0x7F))) - frozenset("/?#%;\\")
_SPELLED = re.compile(r"[^!-~]|[/?#%;\\]")  # a character a variable's value cannot hold as itself in a path
PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
SLASHES = re.compile(r"/{2,}")
# %2F and %5C are slashes some upstreams decode before routing; %00 ends strings in C, and the escape of any other
# control character has no single meaning either: Python's `$` matches before a final newline, so Starlette and
# FastAPI serve `/admin%0A` as `/admin` while `^/admin$` does not match it (found by a review). Raw spaces and
# control characters (never in a request target; a space is what two joined X-Forwarded-Uri values look like),
# `#` and a malformed `%` have no single meaning either. `;` starts path parameters that Tomcat, Jetty and Spring strip
# from each segment before routing (`/admin;x/users` is served as `/admin/users`, `/a/..;/admin` as `/admin`),
# so it and its escape are refused too, as Spring Security's StrictHttpFirewall does. All are refused.
_REFUSED = re.compile(r"%(?:2f|5c|3b|[01][0-9a-f]|7f)|\\|[\x00-\x20\x7f#;]|%(?![0-9A-Fa-f]{2})", re.IGNORECASE)


# Every text _REFUSED finds holds one of these (none has another case): most paths are refused or not without it.
_SUSPECT = re.compile(r"[%\\#;\x00-\x20\x7f]")


class PathRejected(ValueError):
    """The path cannot be matched safely (reason `path_rejected`)."""


# RFC 3986 6.2.2.1/6.2.2.2: decode what a path holds as itself (DECODED), upper-case the hex digits of the rest.
_ESCAPED = {f"{byte:02X}".lower() if case else f"{byte:02X}": chr(byte) if chr(byte) in DECODED else f"%{byte:02X}"
            for byte in range(0x100) for case in (False, True)}
_ESCAPED.update({f"{byte:02x}"[0] + f"{byte:02X}"[1]: _ESCAPED[f"{byte:02X}"] for byte in range(0x100)})
_ESCAPED.update({f"{byte:02X}"[0] + f"{byte:02x}"[1]: _ESCAPED[f"{byte:02X}"] for byte in range(0x100)})
# An escape that normalisation changes: lower-case hex, or a printable ASCII character's (most of which decode).
# A path without one (the percent-encoded UTF-8 of a non-ASCII path) is left as it is, without a call per escape.
_CHANGED_ESCAPE = re.compile(r"%(?:[2-7][0-9A-Fa-f]|[0-9A-Fa-f][a-f]|[a-f][0-9A-Fa-f])")


def _decode(match: re.Match[str]) -> str:
    return _ESCAPED[match.group(1)]


_HIGH_ESCAPES = {byte: f"%{byte:02X}" for byte in range(0x80, 0x100)}
_SPELL_ESCAPES = {byte: f"%{byte:02X}" for byte in range(0x100) if chr(byte) not in DECODED}


def percent_encode_non_ascii(text: str, encoding: str = "utf-8") -> str:
    """Non-ASCII characters as upper-case %XX escapes of their bytes in `encoding`: the one spelling rules see
    (RFC 3987 section 3.1 maps an IRI to a URI this way), so `/café` and `/caf%C3%A9` are one path. `latin-1`
    turns text read from raw header bytes back into those bytes. Raises UnicodeEncodeError for a lone surrogate."""
    if text.isascii():
        return text
    # Byte by byte through a table, in C: a 64 KiB path of emoji took 65 ms character by character, before any
    # token was looked at (found by a review).
    return text.encode(encoding).decode("latin-1").translate(_HIGH_ESCAPES)


def spell_as_path(text: str, slash: bool = False, merge: bool = False) -> str:
    """`text` (a variable's value) as a normalised path spells it: DECODED characters as themselves, every other
    character as the upper-case %XX escapes of its UTF-8 bytes (`a b?` as `a%20b%3F`, `é` as `%C3%A9`). A `/` too,
    as `%2F`, which no normalised path holds (`path_spellings` refuses it), so the value stands for text within one
    segment, unless `slash` keeps it (app.rules.in_path says when). `merge`, for a match that stops a request: the
    value is read as path segments are, slashes merged and dot segments removed, a slash at either end kept
    (`x//y` and `x/./y` never matched, so a deny on them never denied; found by two reviews); "" when nothing is
    left (`/`, `./`). Where a match lets a request through, `x//y` stays what no path holds."""
    if _SPELLED.search(text) is None:
        return text
    spelled = text.encode("utf-8", "surrogatepass").decode("latin-1").translate(_SPELL_ESCAPES)
    if not slash:
        return spelled
    kept = spelled.replace("%2F", "/")
    if not merge:
        return kept
    merged = SLASHES.sub("/", kept)
    core = remove_dot_segments("/" + merged.strip("/")).strip("/")
    return ("/" if merged[:1] == "/" else "") + core + ("/" if merged[-1:] == "/" else "") if core else ""


def spelled_as_itself(text: str) -> bool:
    """Whether `spell_as_path(text)` is `text`."""
    return _SPELLED.search(text) is None


def trailing_twin(path: str) -> str | None:
    """The path's other spelling for frameworks that serve both with one handler (Litestar, Express, Spring MVC 5
    by default): without its trailing slash, or with one; None for the root."""
    if path == "/":
        return None
    return path[:-1] if path.endswith("/") else path + "/"


def remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, "Remove Dot Segments", for an absolute path."""
    output: list[str] = []
    segments = path.split("/")[1:]
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                output.append("")
        elif segment == "..":
            if output:
                output.pop()
            if last:
                output.append("")
        else:
            output.append(segment)
    return "/" + "/".join(output)


# In a query: `#` starts a fragment to upstreams (granian, urllib, WHATWG URL) but nginx and Caddy forward it in
# X-Forwarded-Uri, where it read as part of a name: `?debug#=1` got past a deny on `debug` (found by a review,
# behind both); a raw space or control character is never in a request target either (see _REFUSED).
_QUERY_REFUSED = re.compile(r"[\x00-\x20\x7f#]")


def split_target(target: str) -> tuple[str, str]:
    """`/a/b?x=1` -> (`/a/b`, `x=1`). Raises PathRejected for a query holding a raw `#`, space or control
    character."""
    path, _, query = target.partition("?")
    if query and _QUERY_REFUSED.search(query):
        raise PathRejected("the query contains a raw '#' (a fragment to some upstreams, part of a value to "
                           "others), space or control character")
    return path, query


def parse_query(query: str) -> tuple[tuple[str, str], ...]:
    """The query's (name, value) pairs, blank values kept: `urllib.parse.parse_qsl(query, keep_blank_values=True)`,
    which a query without `%` or `+` (nothing to decode) skips."""
    if "%" in query or "+" in query:
        return tuple(parse_qsl(query, keep_blank_values=True))
    pairs = []  # a loop, not nested generators: this runs for every decision
    for piece in query.split("&"):
        if piece:
            name, _, value = piece.partition("=")
            pairs.append((name, value))
    return tuple(pairs)


def normalise_path(path: str) -> str:
    """The path rules see: escapes of characters a path may hold as themselves decoded (DECODED), other escapes
    and non-ASCII characters as upper-case %XX (UTF-8), repeated slashes merged, dot segments removed.

    Raises PathRejected for an encoded slash, backslash, semicolon or control character (NUL included), a raw
    backslash, space, control character, `#` or `;`, a malformed percent escape, or a path not starting with `/`.
    """
    return path_spellings(path)[0]


def path_spellings(path: str) -> tuple[str, str | None]:
    """`normalise_path(path)` and, when removing dot segments changed it, the path without that step (escapes
    decoded, slashes merged, `.` and `..` kept as sent), else None.

    Upstreams disagree on dot segments: nginx's `proxy_pass` without a URI passes the target as sent, and
    Litestar, Starlette or Express route `/admin/../x` under `/admin/` where nginx or Go would serve `/x` (found
    by a review, end to end behind nginx). Rules see the normalised path; the other spelling may only add a deny
    (app.authorize). Raises PathRejected as normalise_path does."""
    if not path.startswith("/"):
        raise PathRejected("the path does not start with '/'")
    if not path.isascii():
        try:
            path = percent_encode_non_ascii(path)
        except UnicodeEncodeError:
            raise PathRejected("the path is not valid Unicode") from None
    if _SUSPECT.search(path) is not None and _REFUSED.search(path):
        raise PathRejected("the path contains an encoded slash, backslash or control character, a path parameter "
                           "(';'), or a character with no single meaning")
    if "%" not in path and "//" not in path and "/." not in path:
        return path, None  # nothing to decode, merge or remove (a dot segment always follows a slash)
    # Merge first, as nginx does (merge_slashes), so `/a//../b` means what the upstream serves.
    merged = SLASHES.sub("/", PERCENT.sub(_decode, path) if _CHANGED_ESCAPE.search(path) else path)
    normalised = SLASHES.sub("/", remove_dot_segments(merged))
    return normalised, merged if merged != normalised else None
