"""The Starlette application of ``agg serve``: pages, fragments, the JSON API, static files.

================================== ==================================================================
route                              what
================================== ==================================================================
``/``                              conversations, newest activity first (``?project=``, ``?active=1``,
                                   ``?offset=``)
``/conversations/<key>``           one conversation (``?before=SEQ``, ``?after=SEQ``, ``?at=SEQ``,
                                   ``?all=1`` for bookkeeping records too)
``/search?q=…``                    ``agg search`` (``&project=``, ``&role=``, ``&conversation=``,
                                   ``&since=``, ``&until=``)
``/usage``, ``/status``            usage charts and tables; the service's health
``/api/conversations``             ``agg list --json`` (``?project``, ``?active``, ``?since``,
                                   ``?limit``, ``?offset``)
``/api/conversations/<key>``       the conversation (as ``agg list --json`` lists it) and a page of
                                   its events (records as stored)
``/api/search``                    ``agg search --json`` (``?q``, ``?project``, ``?conversation``,
                                   ``?role``, ``?since``, ``?until``, ``?limit``)
``/api/usage?by=…``                ``agg usage --json`` (``?since``, ``?until``)
``/api/status``                    ``agg status --json``
``/api/rejects``                   ``agg rejects --json``
``/api/events``                    envelopes as server-sent events (``Last-Event-ID`` / ``?since=``,
                                   ``?conversation=``)
``/api/openapi.json``              the API's OpenAPI description
``/fragments/…``                   HTML pieces the page script fetches to update a page live
================================== ==================================================================

Handlers are plain functions (Starlette runs them on its thread pool: redis-py blocks); only the
event stream is asynchronous. Parameters mean what the command's options mean (dates as
``--since`` / ``--until`` take them, ``project`` as ``--project``). Errors become one line: 400 for
bad parameters (a search query without a word), 404 for an unknown conversation, 503 while Redis
cannot be reached.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson
import redis
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from aggregator import defaults
from aggregator.config import Settings
from aggregator.connection import Connection, as_agg_error
from aggregator.dates import parse_when
from aggregator.errors import AggError, ConfigError, NotFound
from aggregator.fts import ROLES
from aggregator.live.subscribe import parse_position
from aggregator.live.web import pages
from aggregator.live.web.data import WebData
from aggregator.live.web.events import envelopes
from aggregator.live.web.openapi import openapi
from aggregator.live.web.security import Guard
from aggregator.projects import matches
from aggregator.search import search
from aggregator.usage import BY_CHOICES

log = logging.getLogger("agg.serve")

STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}


class JSON(Response):
    """A JSON answer (orjson)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    url: str


def load_assets() -> dict[str, Asset]:
    """The shipped static files, each with a URL that changes with its content (cached for a day)."""
    out = {}
    for f in resources.files("aggregator.live.web").joinpath("static").iterdir():
        suffix = "." + f.name.rsplit(".", 1)[-1]
        if suffix in STATIC_TYPES:
            body = f.read_bytes()
            tag = hashlib.sha256(body).hexdigest()[:12]
            out[f.name] = Asset(body, STATIC_TYPES[suffix], f"/static/{f.name}?v={tag}")
    return out


def _int(request: Request, name: str, *, low: int = 0, high: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw[:40]!r}") from None
    if value < low or (high is not None and value > high):
        raise ConfigError(f"{name} must be between {low} and {high if high is not None else 'any'}")
    return value


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "") in ("1", "true", "yes", "on")


def _text(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    return value if value else None


def _when(request: Request, name: str, *, end: bool = False) -> int | None:
    """A date parameter as ``--since`` (or with ``end``, ``--until``: a day's last millisecond) takes it."""
    text = _text(request, name)
    if text is None:
        return None
    try:
        return parse_when(text, end=end)
    except ConfigError as e:
        raise ConfigError(f"{name}: {e}") from None


class Web:
    """The routes, bound to one store (see the module docstring)."""

    def __init__(self, settings: Settings, conn: Connection) -> None:
        self.data = WebData(settings, conn)
        self.cluster = conn.cluster
        self.assets = load_assets()
        self.urls = {name: a.url for name, a in self.assets.items()}

    # --- helpers -------------------------------------------------------------------------------
    def page(self, name: str, title: str, body: str, request: Request, *, status: int = 200) -> HTMLResponse:
        q = request.query_params.get("q", "") if name == "search" else ""
        return HTMLResponse(pages.layout(name, title, body, assets=self.urls, query=q), status_code=status)

    def _window(self, request: Request, conv: str) -> tuple[Any, bool]:
        all_types = _flag(request, "all")
        limit = _int(request, "limit", low=1, high=1000) or defaults.WEB_PAGE_EVENTS
        before = _int(request, "before", low=1)
        after = _int(request, "after")
        around = _int(request, "at", low=1)
        window = self.data.events(conv, before=before, after=after, around=around, limit=limit, all_types=all_types)
        return window, all_types

    # --- pages ---------------------------------------------------------------------------------
    def conversations(self, request: Request) -> Response:
        project = _text(request, "project")
        active = _flag(request, "active")
        offset = _int(request, "offset") or 0
        limit = defaults.WEB_PAGE_CONVERSATIONS
        since = self.data.position()  # the page's events follow on from here: none is missed
        listing = self.data.conversations(project=project, active=active, limit=limit, offset=offset)
        body = pages.conversations_page(
            listing, self.data.projects(), project=project, active=active, offset=offset, limit=limit, since=since
        )
        return self.page("conversations", "Conversations", body, request)

    def conversation(self, request: Request) -> Response:
        key = self.data.key(request.path_params["key"])
        since, bucket = self.data.position(key), self.data.bucket_of(key)
        view = self.data.conversation(key)
        window, all_types = self._window(request, view["key"])
        tail = all(request.query_params.get(k) in (None, "") for k in ("before", "after", "at"))
        body = pages.conversation_page(view, window, all_types=all_types, tail=tail, since=since, bucket=bucket)
        return self.page("conversation", view.get("title") or view["key"], body, request)

    def search(self, request: Request) -> Response:
        query = request.query_params.get("q", "").strip()
        result: dict[str, Any] | str | None = None
        if query:
            try:
                result = self._search(request)
            except ConfigError as e:  # a query with no word in it: say so on the page
                result = str(e)
        return self.page("search", f"Search: {query}" if query else "Search", pages.search_page(result, query), request)

    def usage(self, request: Request) -> Response:
        reports = {by: self.data.usage(by) for by in ("day", "model", "project")}
        return self.page("usage", "Usage", pages.usage_page(reports), request)

    def status(self, request: Request) -> Response:
        return self.page("status", "Status", pages.status_page(self._status_fragment()), request)

    # --- fragments -----------------------------------------------------------------------------
    def row_fragment(self, request: Request) -> Response:
        view = self.data.conversation(request.path_params["key"])
        project = _text(request, "project")
        name = view["project"] or ""
        shown = view["messages"] > 0 and (project is None or matches(project, name, view["project_path"] or name))
        if not shown or (_flag(request, "active") and not view["active"]):
            return Response(status_code=204)  # not in this list
        return HTMLResponse(pages.conversation_row(view))

    def events_fragment(self, request: Request) -> Response:
        # What a live page fetches for each new line: events come from the log, not the projections.
        conv = self.data.key(request.path_params["key"])
        window, _ = self._window(request, conv)
        return HTMLResponse(pages.chunk(window, self.data.agents(conv)))

    def status_fragment(self, request: Request) -> Response:
        return HTMLResponse(self._status_fragment())

    def _status_fragment(self) -> str:
        try:
            return pages.status_fragment(self.data.status(), self.data.rejects())
        except redis.RedisError as e:
            return pages.status_fragment(self.data.status_without_redis(str(as_agg_error(e))), None)

    # --- API -----------------------------------------------------------------------------------
    def api_conversations(self, request: Request) -> Response:
        return JSON(
            self.data.conversations(
                project=_text(request, "project"),
                active=_flag(request, "active"),
                since_ms=_when(request, "since"),
                limit=_int(request, "limit", low=1),
                offset=_int(request, "offset") or 0,
            )
        )

    def api_conversation(self, request: Request) -> Response:
        view = self.data.conversation(request.path_params["key"])
        window, _ = self._window(request, view["key"])
        events = [
            {
                "seq": it.seq,
                "id": it.env.get("id"),
                "type": it.env.get("type"),
                "ts": it.env.get("ts"),
                "agent": it.env.get("agent"),
                "record": it.record,
            }
            for it in window.items
        ]
        return JSON(
            {"conversation": view, "events": events, "more_before": window.more_before, "more_after": window.more_after}
        )

    def _search(self, request: Request) -> dict[str, Any]:
        role = _text(request, "role")
        if role is not None and role not in ROLES:
            raise ConfigError(f"role must be one of {', '.join(ROLES)}")
        since, until = _when(request, "since"), _when(request, "until", end=True)
        limit = _int(request, "limit", low=1, high=1000) or defaults.SEARCH_LIMIT
        with self.data.search_index() as index:
            return search(
                self.data.buckets,
                index,
                request.query_params.get("q", ""),
                project=_text(request, "project"),
                conversation=_text(request, "conversation"),
                role=role,
                since_ms=since,
                until_ms=until,
                limit=limit,
            )

    def api_search(self, request: Request) -> Response:
        return JSON(self._search(request))

    def api_usage(self, request: Request) -> Response:
        by = request.query_params.get("by", "conversation")
        if by not in BY_CHOICES:
            raise ConfigError(f"by must be one of {', '.join(BY_CHOICES)}")
        return JSON(self.data.usage(by, _when(request, "since"), _when(request, "until", end=True)))

    def api_status(self, request: Request) -> Response:
        try:
            return JSON(self.data.status())
        except redis.RedisError as e:
            return JSON(self.data.status_without_redis(str(as_agg_error(e))), status_code=503)

    def api_rejects(self, request: Request) -> Response:
        return JSON(self.data.rejects(_int(request, "limit", high=10_000) or 50))

    async def api_events(self, request: Request) -> Response:
        header = request.headers.get("last-event-id")
        raw = header if header else request.query_params.get("since")
        since: int | str | None = None
        if raw not in (None, "") and self.cluster:
            try:
                parse_position(raw)  # a seq per bucket: the SSE ids of a cluster's stream
            except ConfigError as e:
                return JSON({"error": f"Last-Event-ID / since: {e}"}, status_code=400)
            since = raw
        elif raw not in (None, ""):
            try:
                since = int(raw)
            except ValueError:
                return JSON({"error": "Last-Event-ID / since must be a seq (a whole number)"}, status_code=400)
            if since < 0:
                return JSON({"error": "Last-Event-ID / since must not be negative"}, status_code=400)
        conversation = _text(request, "conversation")
        stream = envelopes(self.data.r, self.data.keys, since=since, conversation=conversation)
        return EventSourceResponse(stream, ping=defaults.WEB_SSE_PING_S, headers={"x-accel-buffering": "no"})

    def api_openapi(self, request: Request) -> Response:
        return JSON(openapi())

    def static(self, request: Request) -> Response:
        asset = self.assets.get(request.path_params["name"])
        if asset is None:
            return Response("not found", status_code=404, media_type="text/plain")
        return Response(asset.body, media_type=asset.media_type, headers={"cache-control": "private, max-age=86400"})

    # --- errors --------------------------------------------------------------------------------
    def error(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, NotFound):
            status = 404
        elif isinstance(exc, ConfigError):
            status = 400
        elif isinstance(exc, redis.RedisError):
            status = 503
        else:
            status = 500
        message = str(as_agg_error(exc))
        if status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, message)
        if request.url.path.startswith("/api/"):
            return JSON({"error": message}, status_code=status)
        if request.url.path.startswith("/fragments/"):
            return Response(message, status_code=status, media_type="text/plain")
        return self.page("error", str(status), pages.error_page(status, message), request, status=status)


def build_app(settings: Settings, conn: Connection, *, token: str, allowed_hosts: frozenset[str], port: int) -> Any:
    """The whole ASGI application: the routes behind the :class:`~aggregator.live.web.security.Guard`."""
    web = Web(settings, conn)
    routes = [
        Route("/", web.conversations),
        Route("/conversations/{key}", web.conversation),
        Route("/search", web.search),
        Route("/usage", web.usage),
        Route("/status", web.status),
        Route("/fragments/conversation-row/{key}", web.row_fragment),
        Route("/fragments/events/{key}", web.events_fragment),
        Route("/fragments/status", web.status_fragment),
        Route("/api/conversations", web.api_conversations),
        Route("/api/conversations/{key}", web.api_conversation),
        Route("/api/search", web.api_search),
        Route("/api/usage", web.api_usage),
        Route("/api/status", web.api_status),
        Route("/api/rejects", web.api_rejects),
        Route("/api/events", web.api_events),
        Route("/api/openapi.json", web.api_openapi),
        Route("/static/{name}", web.static),
    ]
    handlers: dict[Any, Any] = {AggError: web.error, redis.RedisError: web.error}
    app = Starlette(routes=routes, exception_handlers=handlers)
    return Guard(app, token=token, allowed_hosts=allowed_hosts, port=port)
