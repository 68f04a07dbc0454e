"""The hot routes' common case answered straight from ASGI: `POST /v1/validate/jwt`, `POST /v1/authorize` and the
forward-auth `GET`, by the same functions their controllers call.

Litestar's request and response handling costs about 70 µs a request on this machine (the empty Litestar route,
called in process), fifteen times a cached validation. This layer sits inside `Observe` (every answer is still
counted and logged) and in front of Litestar. It takes a request only when nothing about it needs the framework:
the exact method and route, a Host the router accepts, a JSON content type, a declared length within
MAX_BODY_BYTES, a body that decodes into the route's Struct, an accepted API key when API_KEYS is set, and an
answer the route gives without refusing. Everything else goes to Litestar unchanged (a body already read is
replayed), so that refusals have one implementation; an exception (a bug) is answered as Litestar's handler
answers one, without running the request twice. A test sends the same requests both ways and compares the
answers. Two methods Litestar would refuse are handed to a route's GET handler here too: forward-auth's
(Envoy sends any, PROPFIND included) and HEAD (the GET answer without its content).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec

from app.api.authorize import ORIGINAL_METHOD, OTHER_METHODS, PREFIX, AuthorizeRequest, decide, forward
from app.api.validation import ValidateRequest, validate
from app.authorizers import Authorizers
from app.observability import ApiKeys, routed_path
from app.problems import BODY_TIMED_OUT, INTERNAL, PROBLEM_JSON, ApiError, log_unexpected
from app.token import nested_too_deeply
from app.verifier import Verifier

try:  # the router's own test, so both paths refuse the same hosts
    from litestar._asgi.utils import is_valid_host
except ImportError:  # a private name of Litestar's: should it go, every request with a Host takes Litestar's path
    def is_valid_host(host: bytes) -> bool:
        return False

VALIDATE = "/v1/validate/jwt"
AUTHORIZE = "/v1/authorize"
JSON_TYPES = frozenset({b"application/json", b"application/json; charset=utf-8"})
_encode = msgspec.json.Encoder().encode
_validate_request = msgspec.json.Decoder(ValidateRequest).decode
_authorize_request = msgspec.json.Decoder(AuthorizeRequest).decode


def _header_lines(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """Response headers as Litestar encodes them: names lower-cased, Latin-1."""
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


async def _answer(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None,
                  media_type: bytes = b"application/json") -> None:
    lines = [*(headers or ()), (b"content-type", media_type), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": lines})
    await send({"type": "http.response.body", "body": body})


def _bodied(message: Any) -> Any:
    """An `http.request` message with its `body`, which the ASGI spec makes optional (default b""): Litestar reads
    `message["body"]`, and answered 500 without it (found by a review)."""
    if message.get("type") == "http.request" and "body" not in message:
        return {**message, "body": b""}
    return message


class BodyDeadlines:
    """READ_TIMEOUT_SECONDS: a request's body must arrive within that time of the request's start, or its read says
    the client left and the scope is marked, answered 408 (app.problems). Nothing bounded a body that stopped
    arriving, and such requests held every place granian gives a worker's requests (its backlog shared among the
    workers): /healthz timed out until the clients let go (found by a review). One watcher for every read in progress (`watch`, a lifespan
    task): `asyncio.timeout` around each read cost ~6 µs a request."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.reading: dict[Any, tuple[float, Any]] = {}  # task -> (deadline, scope), while it awaits a message

    def receive(self, receive: Any, scope: Any) -> Any:
        """`receive` whose messages are `_bodied`, within the deadline."""
        deadline, reading = time.monotonic() + self.seconds, self.reading

        async def read() -> Any:
            if scope.get(BODY_TIMED_OUT):
                return _LEFT
            task = asyncio.current_task()
            reading[task] = (deadline, scope)
            try:
                message = await receive()
            except asyncio.CancelledError:
                if scope.get(BODY_TIMED_OUT) and task is not None and task.uncancel() == 0:  # ours alone
                    return _LEFT
                raise
            finally:
                reading.pop(task, None)
            return _bodied(message)
        return read

    async def watch(self) -> None:
        """Cancel the reads past their deadline, checked every quarter of the timeout (at most every second)."""
        period = min(1.0, self.seconds / 4)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for task, (deadline, scope) in list(self.reading.items()):
                if deadline <= now and not scope.get(BODY_TIMED_OUT):
                    scope[BODY_TIMED_OUT] = True
                    task.cancel()


_LEFT = {"type": "http.disconnect"}


def _allowing_head(send: Any) -> Any:
    """`send` naming HEAD in an `Allow` that names GET: this layer answers HEAD on every GET route (`_head`), and
    Litestar's `Allow` left it out (found by a review)."""
    async def sending(message: Any) -> None:
        if message["type"] == "http.response.start":
            headers = message.get("headers") or []
            for index, (name, value) in enumerate(headers):
                methods = value.split(b", ") if name.lower() == b"allow" else []
                if b"GET" in methods and b"HEAD" not in methods:
                    methods.insert(methods.index(b"GET") + 1, b"HEAD")
                    message["headers"] = [*headers[:index], (name, b", ".join(methods)), *headers[index + 1:]]
        await send(message)
    return sending


def _replay(messages: list[Any], receive: Any) -> Any:
    """`receive` for Litestar after this layer has read the body: the messages read, then the connection's own."""
    pending = messages[::-1]

    async def again() -> Any:
        return pending.pop() if pending else await receive()
    return again


class FastPath:
    """ASGI layer in front of Litestar's handler (see the module's docstring)."""

    def __init__(self, app: Any, verifier: Verifier, authorizers: Authorizers, api_keys: ApiKeys,
                 max_body_bytes: int, deadlines: BodyDeadlines) -> None:
        self.app = app
        self.verifier = verifier
        self.authorizers = authorizers
        self.api_keys = api_keys
        self.max_body_bytes = max_body_bytes
        self.deadlines = deadlines

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            method, path = scope["method"], scope["path"]
            if method != "GET" and method != "HEAD":  # (a GET's or HEAD's body is never read)
                receive = self.deadlines.receive(receive, scope)
            root = scope.get("root_path")
            if root:  # the path as Litestar's router reads it (observability.routed_path; found by a review)
                path = path.split(root, 1)[-1]
            if method == "POST" and (path == VALIDATE or path == AUTHORIZE):
                receive = await self._post(scope, receive, send, path)
                if receive is None:
                    return
            elif path.startswith(PREFIX) and method not in OTHER_METHODS:
                if await self._forward(scope, send, path):
                    return
                if method != "GET":  # WebDAV, TRACE...: Litestar routes only the methods it knows
                    await self._as_get(scope, receive, send, **{ORIGINAL_METHOD: method})
                    return
            elif method == "HEAD" or (method != "GET" and method not in OTHER_METHODS):
                # Tested on the path Litestar routes: `//v1/forward-auth/x` reaches forward-auth too, and a HEAD
                # handed on as GET there was decided as GET (found by a review).
                if routed_path(scope).startswith(PREFIX):
                    if method != "HEAD":  # forward-auth decides HEAD as HEAD (its own route)
                        await self._as_get(scope, receive, send, **{ORIGINAL_METHOD: method})
                        return
                elif method == "HEAD":
                    await self._head(scope, receive, send)
                    return
            if method != "GET":  # a 405's or an OPTIONS answer's Allow
                send = _allowing_head(send)
        await self.app(scope, receive, send)

    async def _head(self, scope: Any, receive: Any, send: Any) -> None:
        """HEAD on any route: its GET answer without the content (RFC 9110 9.3.2), Content-Length kept. Litestar
        answers 405 to HEAD unless a route declares it, and monitors probe /healthz with HEAD."""
        async def headers_only(message: Any) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b""}
            await send(message)

        await self._as_get(scope, receive, headers_only)

    async def _as_get(self, scope: Any, receive: Any, send: Any, **extra: Any) -> None:
        """Hand a request to Litestar's GET handler of its route (a forward-auth request whose method Litestar
        cannot route keeps it for the decision in `extra`), and give the route Litestar matched back for the
        request's log line and metrics."""
        inner = {**scope, "method": "GET", **extra}
        try:
            await self.app(inner, receive, send)
        finally:
            if "path_template" in inner:
                scope["path_template"] = inner["path_template"]

    def _headers(self, scope: Any) -> tuple[bytes | None, bytes | None, bool]:
        """Content type, content length, and whether the request may take the fast path at all: no header given
        twice (left to Litestar), a Host Litestar's router accepts, the API key accepted when API_KEYS is set."""
        content_type = length = key = host = None
        repeated = False
        for name, value in scope["headers"]:
            if name == b"content-type":
                repeated |= content_type is not None
                content_type = value
            elif name == b"content-length":
                repeated |= length is not None
                length = value
            elif name == b"x-api-key":
                repeated |= key is not None
                key = value
            elif name == b"host" and host is None:
                host = value
        if repeated or (host is not None and not is_valid_host(host)):
            return None, None, False
        return content_type, length, not self.api_keys or (
            key is not None and self.api_keys.accepts(key.decode("latin-1")))

    async def _post(self, scope: Any, receive: Any, send: Any, path: str) -> Any:
        """Answer and return None, or return the `receive` Litestar must use."""
        content_type, length, key_ok = self._headers(scope)
        if not key_ok or content_type is None or content_type.lower() not in JSON_TYPES or length is None \
                or not length.isdigit() or len(length) > 12 or int(length) > self.max_body_bytes:
            return receive
        messages: list[Any] = []
        size = 0
        while True:
            message = _bodied(await receive())
            if message.get("body") or not message.get("more_body", False):  # empty chunks carry nothing to keep
                messages.append(message)
            if message["type"] != "http.request":  # the client went away: Litestar sees it the same way
                return _replay(messages, receive)
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                return _replay(messages, receive)
            if not message.get("more_body", False):
                break
        body = b"".join(message.get("body", b"") for message in messages)  # one piece: that piece, not a copy
        if nested_too_deeply(body):  # refused by Litestar's path (app.api.ApiRequest.json), as deep as it is
            return _replay(messages, receive)
        try:
            if path == VALIDATE:
                answer = _encode(await validate(self.verifier, _validate_request(body)))
            else:
                answer = _encode(await decide(self.authorizers, _authorize_request(body)))
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, ApiError):  # a refusal: Litestar answers it
            return _replay(messages, receive)
        except Exception as exc:  # noqa: BLE001 - a bug: answered as Litestar's handler answers one
            scope["path_template"] = path
            await _internal_error(scope, send, exc)
            return None
        scope["path_template"] = path
        await _answer(send, 200, answer)
        return None

    async def _forward(self, scope: Any, send: Any, path: str) -> bool:
        # Without raw_path, original_request would read scope["path"], which Litestar's router normalises first.
        authorizer_id, _, rest = path[len(PREFIX):].partition("/")
        if not scope.get("raw_path") or self.authorizers.get(authorizer_id) is None or not self._headers(scope)[2]:
            return False
        # The router's template: it merges slashes and drops a trailing one before matching.
        scope["path_template"] = f"{PREFIX}{{authorizer}}/{{path}}" if rest.strip("/") else f"{PREFIX}{{authorizer}}"
        try:
            status, headers, body = await forward(self.authorizers, authorizer_id, scope)
            lines = _header_lines(headers)
        except Exception as exc:  # noqa: BLE001 - a bug: answered as Litestar's handler answers one
            await _internal_error(scope, send, exc)
            return True
        await _answer(send, status, _encode(body), lines)
        return True


async def _internal_error(scope: Any, send: Any, exc: Exception) -> None:
    """What `app.problems.on_unexpected` answers, without running the request a second time through Litestar."""
    log_unexpected(exc, scope)
    await _answer(send, 500, _encode(INTERNAL), [(b"cache-control", b"no-store")], media_type=PROBLEM_JSON.encode())
