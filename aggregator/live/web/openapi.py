"""The OpenAPI 3.1 description of ``agg serve``'s JSON API (served at ``/api/openapi.json``).

Hand-written beside the routes it describes; ``tests/store/test_web_api.py`` checks that it is a
valid OpenAPI document, that it describes every ``/api/`` route, and that real answers match its
schemas.
"""

from __future__ import annotations

from typing import Any

from aggregator.fts import ROLES
from aggregator.projections import TOKEN_FIELDS, USAGE_FIELDS
from aggregator.usage import BY_CHOICES

_INT = {"type": "integer"}
_STR = {"type": "string"}
_NSTR = {"type": ["string", "null"]}
_COST = {"type": ["number", "null"], "description": "US dollars; null when the price is not known"}


def _obj(props: dict[str, Any], required: list[str] | None = None, extra: bool = False) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": list(props) if required is None else required,
        "additionalProperties": extra,
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _ok(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "200": {"description": description, "content": {"application/json": {"schema": schema}}},
        "400": {"description": "a bad parameter", "content": {"application/json": {"schema": _ref("Error")}}},
        "401": {"description": "no valid token", "content": {"application/json": {"schema": _ref("Error")}}},
        "503": {"description": "Redis cannot be reached", "content": {"application/json": {"schema": _ref("Error")}}},
    }


_USAGE = _obj({f: _INT for f in USAGE_FIELDS})
_CONVERSATION = _obj(
    {
        "key": _STR,
        "project": _NSTR,
        "title": _NSTR,
        "summary": _NSTR,
        "first_ts": _NSTR,
        "last_ts": _NSTR,
        "events": _INT,
        "messages": _INT,
        "usage": _USAGE,
        "responses": _INT,
        "active": {"type": "boolean"},
        "subagents": {
            "type": "array",
            "items": _obj({"id": _STR, "type": _NSTR, "description": _NSTR}),
        },
        "resumed_from": {"type": "array", "items": _STR},
        "compacted_from": {"type": "array", "items": _STR},
        "forked_from": {"type": "array", "items": _STR},
        "cost_usd": _COST,
        "project_path": {"type": ["string", "null"], "description": "the project's directory, when known"},
    },
)
_EVENT = _obj(
    {
        "seq": _INT,
        "id": _STR,
        "type": _NSTR,
        "ts": _NSTR,
        "agent": _NSTR,
        "record": {"description": "the event's newest line as stored (JSON), or its text if it is not JSON"},
    }
)
_HIT = _obj(
    {
        "conv": _STR,
        "project": _NSTR,
        "project_path": _NSTR,
        "title": _NSTR,
        "seq": _INT,
        "id": _STR,
        "role": {"type": "string", "enum": list(ROLES)},
        "agent": {"type": ["string", "null"], "description": "the subagent whose text it is"},
        "ts": _NSTR,
        "snippet": {"type": "string", "description": "text around the matches, each between ⟦ and ⟧"},
    }
)
_ROW_COUNTS = {f: _INT for f in (*TOKEN_FIELDS, "responses", "total")}
_USAGE_ROW = _obj(
    {
        "key": _NSTR,
        **_ROW_COUNTS,
        "project": _NSTR,
        "project_path": {"type": ["string", "null"], "description": "the project's directory, when known"},
        "title": _NSTR,
        "cost_usd": _COST,
    },
    required=["key", *_ROW_COUNTS, "cost_usd"],
)
_ENVELOPE = _obj(
    {
        "seq": _INT,
        "conv": _STR,
        "conv_seq": _INT,
        "id": _STR,
        "type": _NSTR,
        "ts": _NSTR,
        "agent": _NSTR,
        "revision": {"type": "boolean"},
    },
    required=["seq", "conv", "conv_seq", "id", "type", "revision"],
    extra=True,
)

SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": _STR}),
    "Conversation": _CONVERSATION,
    "ConversationList": _obj(
        {
            "conversations": {"type": "array", "items": _ref("Conversation")},
            "total": _INT,
            "unpriced": {"type": "array", "items": _STR, "description": "models without a price"},
        }
    ),
    "Event": _EVENT,
    "ConversationPage": _obj(
        {
            "conversation": _ref("Conversation"),
            "events": {"type": "array", "items": _ref("Event")},
            "more_before": {"type": "boolean"},
            "more_after": {"type": "boolean"},
        }
    ),
    "SearchHit": _HIT,
    "SearchResult": _obj(
        {
            "query": _STR,
            "total": {"type": "integer", "description": "texts matching, all of them"},
            "took_ms": {"type": "number"},
            "hits": {"type": "array", "items": _ref("SearchHit")},
        }
    ),
    "UsageRow": _USAGE_ROW,
    "UsageReport": _obj(
        {
            "by": {"type": "string", "enum": list(BY_CHOICES)},
            "seq": _INT,
            "rows": {"type": "array", "items": _ref("UsageRow")},
            "total": _obj({**_ROW_COUNTS, "cost_usd": _COST}),
            "since": {"type": ["string", "null"], "description": "first UTC day covered (YYYY-MM-DD)"},
            "until": {"type": ["string", "null"], "description": "last UTC day covered (YYYY-MM-DD)"},
            "prices": _obj(
                {"date": _STR, "unpriced": {"type": "array", "items": _STR}},
                extra=True,
            ),
            "complete": {"type": "boolean", "description": "every response's usage is counted"},
        }
    ),
    "Status": _obj(
        {
            "redis": _obj({"url": _STR, "ok": {"type": "boolean"}}, extra=True),
            "watcher": {"type": "object"},
            "writer": {"type": "object"},
            "seq": _INT,
            "events": _INT,
            "conversations": _INT,
            "rejected": _INT,
            "lag_bytes": _INT,
            "turns": {"type": "object"},
        },
        required=["redis", "watcher", "writer"],
        extra=True,
    ),
    "Rejects": _obj(
        {
            "rejects": {
                "type": "array",
                "items": _obj(
                    {
                        "file": _STR,
                        "offset": _INT,
                        "bytes": _INT,
                        "reason": _STR,
                        "prefix": _STR,
                        "host": _STR,
                        "at": _STR,
                    },
                    required=["file", "offset", "reason", "prefix", "at"],
                    extra=True,
                ),
            },
            "rejected": {"type": "integer", "description": "lines rejected in all"},
            "kept": {"type": "integer", "description": "rejection records kept (the newest 10,000)"},
        }
    ),
    "Envelope": _ENVELOPE,
}

_KEY = {
    "name": "key",
    "in": "path",
    "required": True,
    "schema": _STR,
    "description": "a conversation key (or a unique prefix)",
}
_WINDOW = [
    _q("before", {"type": "integer", "minimum": 1}, "events before this seq (default: the newest)"),
    _q("after", {"type": "integer", "minimum": 0}, "events after this seq"),
    _q("at", {"type": "integer", "minimum": 1}, "events from this seq on, with a few before it"),
    _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "events per page (default 100)"),
    _q("all", {"type": "string", "enum": ["0", "1"]}, "1: bookkeeping records too (progress, snapshots, …)"),
]


def openapi() -> dict[str, Any]:
    """The OpenAPI document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "agg serve",
            "version": "1",
            "description": "Read-only JSON API over agg's record of Claude Code conversations (docs/design.md §9).",
        },
        "servers": [{"url": "/"}],
        "security": [{"cookie": []}, {"bearer": []}, {"query": []}],
        "paths": {
            "/api/conversations": {
                "get": {
                    "summary": "Conversations, newest activity first (agg list --json)",
                    "operationId": "listConversations",
                    "parameters": [
                        _q("project", _STR, "only this project (its path, directory name, or part of either)"),
                        _q("active", {"type": "string", "enum": ["0", "1"]}, "1: only active conversations"),
                        _q("since", _STR, "only those active since this date (as agg list --since takes it)"),
                        _q("limit", {"type": "integer", "minimum": 1}, "at most this many"),
                        _q("offset", {"type": "integer", "minimum": 0}, "skip this many"),
                    ],
                    "responses": _ok(_ref("ConversationList"), "the conversations"),
                }
            },
            "/api/conversations/{key}": {
                "get": {
                    "summary": "One conversation (as agg list --json lists it) and a page of its events",
                    "operationId": "getConversation",
                    "parameters": [_KEY, *_WINDOW],
                    "responses": {
                        **_ok(_ref("ConversationPage"), "the conversation"),
                        "404": {
                            "description": "no such conversation",
                            "content": {"application/json": {"schema": _ref("Error")}},
                        },
                    },
                }
            },
            "/api/search": {
                "get": {
                    "summary": "Messages matching a query (agg search --json)",
                    "operationId": "search",
                    "parameters": [
                        _q("q", _STR, 'words, "phrases", prefix* (a query without a word: 400)'),
                        _q("project", _STR, "only this project (its path, directory name, or part of either)"),
                        _q("conversation", _STR, "only this conversation (a key or a unique prefix)"),
                        _q("role", {"type": "string", "enum": list(ROLES)}, "only texts of this role"),
                        _q("since", _STR, "only texts of records at or after this date (as agg search --since)"),
                        _q("until", _STR, "only texts of records up to this date (a whole day: its end)"),
                        _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "at most this many (20)"),
                    ],
                    "responses": _ok(_ref("SearchResult"), "the hits, best (BM25) first, newest among equals"),
                }
            },
            "/api/usage": {
                "get": {
                    "summary": "Token usage by conversation, project, model or day (agg usage --json)",
                    "operationId": "usage",
                    "parameters": [
                        _q("by", {"type": "string", "enum": list(BY_CHOICES)}, "default: conversation"),
                        _q("since", _STR, "from this UTC day (a date as agg usage --since takes it)"),
                        _q("until", _STR, "up to this UTC day"),
                    ],
                    "responses": _ok(_ref("UsageReport"), "the table and the total"),
                }
            },
            "/api/status": {
                "get": {
                    "summary": "Health and figures (agg status --json)",
                    "operationId": "status",
                    "responses": {
                        "200": {
                            "description": "the status",
                            "content": {"application/json": {"schema": _ref("Status")}},
                        },
                        "401": {
                            "description": "no valid token",
                            "content": {"application/json": {"schema": _ref("Error")}},
                        },
                        "503": {
                            "description": "Redis cannot be reached: what the service's state files say",
                            "content": {"application/json": {"schema": _ref("Status")}},
                        },
                    },
                }
            },
            "/api/rejects": {
                "get": {
                    "summary": "The newest rejected lines, with file and offset (agg rejects --json)",
                    "operationId": "rejects",
                    "parameters": [_q("limit", {"type": "integer", "minimum": 0, "maximum": 10000}, "default 50")],
                    "responses": _ok(_ref("Rejects"), "the rejected lines, newest first"),
                }
            },
            "/api/events": {
                "get": {
                    "summary": "Every event envelope once, in seq order, live (server-sent events)",
                    "description": (
                        "Each event's `id` is its seq and its `data` an Envelope. After a dropped connection, "
                        "reconnect with `Last-Event-ID` (browsers do it by themselves): the stream resumes after "
                        "that seq with no gap and no duplicate, also across a Redis restart."
                    ),
                    "operationId": "events",
                    "parameters": [
                        {
                            "name": "Last-Event-ID",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 0},
                            "description": "resume after this seq",
                        },
                        _q("since", {"type": "integer", "minimum": 0}, "start after this seq (0: from the first)"),
                        _q("conversation", _STR, "only this conversation's events"),
                    ],
                    "responses": {
                        "200": {
                            "description": "an endless stream of envelopes",
                            "content": {"text/event-stream": {"schema": _ref("Envelope")}},
                        },
                        "400": {"description": "a bad seq", "content": {"application/json": {"schema": _ref("Error")}}},
                        "401": {
                            "description": "no valid token",
                            "content": {"application/json": {"schema": _ref("Error")}},
                        },
                    },
                }
            },
            "/api/openapi.json": {
                "get": {
                    "summary": "This description",
                    "operationId": "openapi",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "cookie": {"type": "apiKey", "in": "cookie", "name": "agg_token_<port>"},
                "bearer": {"type": "http", "scheme": "bearer"},
                "query": {"type": "apiKey", "in": "query", "name": "token"},
            },
        },
    }
