"""The app factory: settings in, a Litestar app out, with one lifespan opening and closing shared resources."""

from __future__ import annotations

import asyncio
import gc
import logging.config
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Callable

import httpx
from litestar import Litestar, Router
from litestar.openapi import OpenAPIConfig

from app import openapi
from app.api import ApiRequest, route_handlers
from app.api.authorize import dependencies as authorize_dependencies
from app.api.fastpath import BodyDeadlines, FastPath
from app.api.operations import ApiKeyGate
from app.api.presets import dependencies as presets_dependencies
from app.api.validation import dependencies
from app.authorizers import Authorizer, Authorizers
from app.config import ReloadingDocument, Source, Stamp, install_sighup, json_path, watch
from app.jwks import KeySetCache
from app.keys import KeySet
from app.observability import (ApiKeys, Observe, configure_logging, declare_rate_limited, flush_metrics,
                               flush_metrics_periodically, observe_validation, record_cache_lookup,
                               record_key_set_fetch, stdlib_logging)
from app.presets import load_presets
from app.problems import EXCEPTION_HANDLERS
from app.ratelimit import Budgets
from app.profiles import Profiles, load_profiles
from app.settings import Settings, load_settings
from app.verifier import Verifier

VERSION = "1.0.0"
ROOT = Path(__file__).resolve().parent.parent
PRESETS_DIR = ROOT / "presets"


def _source(variable: str, value: str | None) -> Source | None:
    return Source(variable, value) if value else None


def create_app(settings: Settings | None = None, *, clock: Callable[[], float] = time.time,
               http_client: httpx.AsyncClient | None = None) -> Litestar:
    """Build the app. Configuration documents are loaded and validated here: a bad one raises ConfigError."""
    settings = settings or load_settings()
    verifier = Verifier(max_token_bytes=settings.max_token_bytes, cache_size=settings.verified_token_cache_size,
                        allowlist=settings.jwks_uri_allowlist, clock=clock)

    def key_set_changed(uri: str, old: KeySet | None, new: KeySet) -> None:
        # Verdicts cached under the old set must not outlive it (a removed key stops validating at once).
        if old is not None:
            verifier.cache.forget_version(old.version)

    def key_set_fetched(uri: str, outcome: str) -> None:
        record_key_set_fetch(uri, outcome, uri in keys.configured())

    configure_logging(settings.log_level, settings.log_format)
    keys = KeySetCache(settings, client=http_client, clock=clock, on_change=key_set_changed,
                       on_fetch=key_set_fetched)
    verifier.keys = keys
    verifier.on_result = observe_validation
    verifier.cache.on_lookup = record_cache_lookup
    presets = load_presets(PRESETS_DIR)

    def profiles_changed(old: Profiles, new: Profiles) -> None:
        verifier.profiles = new.policies
        # Key sets an authorizer's own policy names stay, whatever the profiles say.
        keys.forget(old.jwks_uris() - new.jwks_uris() - authorizers.jwks_uris(),
                    old.discovery_issuers() - new.discovery_issuers() - authorizers.discovery_issuers(),
                    new.jwks_uris() | authorizers.jwks_uris())
        keys.prefetch(sorted(new.jwks_uris()), sorted(new.discovery_issuers()))
        # The authorizers follow at once: exactly the document profiles_agree checked when both files changed (a
        # profile renamed), else a reload when they were refused for naming a profile that only now exists.
        document = authorizers.document
        if staged:
            document.adopt(*staged.pop())
        elif document.last_error is not None or document.changed_on_disk():
            document.reload()

    staged: list[tuple[bytes, Stamp, dict[str, Authorizer]]] = []

    def profiles_agree(new: Profiles) -> list[tuple[str, str]]:
        # A profile an authorizer names may not go first: its decisions would all be keys_unavailable while
        # /readyz says ready. Startup refuses the same pair of files. Both files may be changing together (a
        # profile renamed): then the authorizers as their file reads now decide, if they load with the new
        # profiles; profiles_changed applies that very document right after.
        staged.clear()
        dangling = _dangling(authorizers.document.value, new)
        if not dangling:
            return []
        following = authorizers.on_disk(lambda profile_id: profile_id in new.policies)
        if following is not None:
            staged.append(following)
            return []
        source = authorizers.document.source
        remedy = ("change the authorizers with it" if source is not None and source.is_file
                  else "AUTHORIZERS_JSON is inline JSON, which only a restart changes")
        return [(json_path(authorizer.profile_id or ""), f"removed, but authorizer {authorizer.id!r} in "
                 "AUTHORIZERS_JSON names it as its issuer_profile_id (and the authorizers, as they read now, do "
                 f"not load with these profiles): {remedy}")
                for authorizer in dangling]

    profiles: ReloadingDocument[Profiles] = ReloadingDocument(
        _source("ISSUER_PROFILES_JSON", settings.issuer_profiles_json),
        lambda data, label: load_profiles(data, label, presets), Profiles(), on_change=profiles_changed,
        agrees=profiles_agree)
    verifier.profiles = profiles.value.policies
    documents: list[ReloadingDocument[Any]] = [profiles]
    # After the profiles: an authorizer's issuer_profile_id must name a loaded profile (resolved per request).
    def authorizers_changed(old: set[str], new: set[str], old_issuers: set[str], new_issuers: set[str]) -> None:
        # Key sets the profiles name stay, whatever the authorizers say.
        keys.forget(old - new - profiles.value.jwks_uris(),
                    old_issuers - new_issuers - profiles.value.discovery_issuers(), new | profiles.value.jwks_uris())
        keys.prefetch(sorted(new), sorted(new_issuers))
        declare_rate_limited(authorizers.rate_limited())
        if profiles.last_error is not None:  # refused while the authorizers named a profile it drops
            profiles.reload()

    authorizers = Authorizers(_source("AUTHORIZERS_JSON", settings.authorizers_json), verifier=verifier,
                              budgets=Budgets(settings.rate_limit_storage), on_change=authorizers_changed)
    documents.append(authorizers.document)
    declare_rate_limited(authorizers.rate_limited())

    deadlines = BodyDeadlines(settings.read_timeout_seconds)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        keys.prefetch(sorted(profiles.value.jwks_uris() | authorizers.jwks_uris()),
                      sorted(profiles.value.discovery_issuers() | authorizers.discovery_issuers()))
        files = [document for document in documents if document.source is not None and document.source.is_file]
        tasks = [asyncio.ensure_future(watch(files, settings.config_poll_seconds))] if files else []
        tasks.append(asyncio.ensure_future(flush_metrics_periodically()))
        tasks.append(asyncio.ensure_future(keys.maintain()))
        tasks.append(asyncio.ensure_future(deadlines.watch()))
        install_sighup(files)  # the documents the poll watches: both remember the same files' stamps
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            flush_metrics()
            await keys.aclose()
            await authorizers.budgets.aclose()

    api_keys = ApiKeys(settings.api_keys)
    app = Litestar(
        route_handlers=[*route_handlers(), *openapi.routes()],
        request_class=ApiRequest,
        dependencies={**dependencies(verifier), **authorize_dependencies(authorizers), **presets_dependencies(presets)},
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        request_max_body_size=settings.max_body_bytes,
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(title="JWT validation and authorization decisions", version=VERSION,
                                     openapi_router=Router("/_schema", route_handlers=[], include_in_schema=False,
                                                           after_request=openapi.schema_not_found_as_problem),
                                     render_plugins=[openapi.DocumentPlugin(path=["/litestar.json", "/openapi.json"])],
                                     description=openapi.DESCRIPTION, use_handler_docstrings=False),
        debug=False,
        logging_config=None,  # Litestar's would replace the root logger's handler with plain text on stderr
    )
    # Outside routing and exception handling, so every answer (404, 413 and 401 included) is counted and logged;
    # inside that, the hot routes' common case without Litestar's request and response handling.
    handler = ApiKeyGate(app.asgi_handler, api_keys) if api_keys else app.asgi_handler
    app.asgi_handler = Observe(FastPath(handler, verifier, authorizers, api_keys, settings.max_body_bytes,
                                        deadlines), app.routes)
    app.state.settings = settings
    app.state.verifier = verifier
    app.state.key_sets = keys
    app.state.profiles = profiles
    app.state.documents = documents
    app.state.authorizers = authorizers
    app.state.rate_limit_state = authorizers.budgets.state
    return app


def _dangling(authorizers: dict[str, Authorizer], profiles: Profiles) -> list[Authorizer]:
    """The authorizers naming a profile that `profiles` does not have, by id."""
    return [authorizer for _, authorizer in sorted(authorizers.items())
            if authorizer.profile_id is not None and authorizer.profile_id not in profiles.policies]


def app_factory() -> Litestar:
    """Entry point for the ASGI server (`python -m app`), in each worker. What startup built (modules, the app,
    compiled policies and rules: ~80,000 objects) lives as long as the worker, so it is moved out of the garbage
    collector's sight: a full collection walked all of it, a pause of tens of milliseconds in the middle of
    serving (measured: p99 of cached validations 13-25 ms against 17-49 ms without, in alternated runs)."""
    app = create_app()
    # Standard-library records (a library's warning, asyncio's) as JSON lines too, however granian was started.
    logging.config.dictConfig(stdlib_logging(app.state.settings.log_level))
    logging.captureWarnings(True)  # warnings.warn(...) as log records, so as JSON lines too
    gc.freeze()
    return app


def check_config(settings: Settings) -> None:
    """Load every configuration document once before the server starts, so a bad one stops the process here
    with its source, JSON path and problem (workers would otherwise each fail on their own). A library's warning
    while loading (joserfc's on a 1024-bit RSA key) is a JSON line here too: it was plain text on stderr, and the
    workers, forked after, do not repeat it (found by a review)."""
    logging.config.dictConfig(stdlib_logging(settings.log_level))
    logging.captureWarnings(True)
    create_app(settings)
