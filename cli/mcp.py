"""``agg mcp``: the record as a read-only Model Context Protocol server over stdio (the official SDK).

Tools (each answers with one JSON object, as the matching command's ``--json`` does):

* ``search`` — full-text search (:func:`aggregator.search.search`);
* ``list_conversations`` — conversations newest first, with cost (:func:`aggregator.listing.conversations`);
* ``get_conversation`` — one conversation's messages, a page at a time
  (:func:`aggregator.transcript.messages`; tool results cut to :data:`RESULT_CHARS` characters);
* ``usage`` — tokens and cost by conversation, project, model, day, week or month
  (:func:`aggregator.usage.report`).

Nothing here writes to the record; answering catches the projections and this machine's search
index up, as the commands do. Add it to Claude Code with ``claude mcp add agg -- agg mcp``.
"""

from __future__ import annotations

import inspect
import itertools
import threading
from typing import Any

from aggregator.buckets import Buckets
from aggregator.dates import parse_when
from aggregator.errors import AggError, ConfigError
from aggregator.listing import conversations
from aggregator.projections import catch_up_all
from aggregator.search import search
from aggregator.searchindex import SearchIndex
from aggregator.transcript import header, messages
from aggregator.usage import BY_CHOICES, report
from cli.app import App

RESULT_CHARS = 2000
"""Characters of a tool result ``get_conversation`` returns (the rest is marked as cut)."""

PAGE_MAX = 200
"""Messages one ``get_conversation`` call returns at most."""

INSTRUCTIONS = (
    "agg keeps every Claude Code conversation of this machine (or of several sharing one store). "
    "Use search to find where something was discussed or done, get_conversation to read it, "
    "list_conversations for recent sessions, usage for tokens and cost."
)


def _when(value: str | None, end: bool = False) -> int | None:
    return None if not value else parse_when(value, end=end)


class Tools:
    """The tools' work, on one store (every bucket of a cluster store) and this machine's search index of it."""

    def __init__(self, buckets: Buckets, index: SearchIndex) -> None:
        self.buckets = buckets
        self.index = index

    def search(
        self,
        query: str,
        project: str | None = None,
        conversation: str | None = None,
        role: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 20,
    ) -> dict[str, Any]:
        """Full-text search over every conversation, best matches first.

        Words match whole, in any case; "quoted words" match as a phrase; word* as a prefix; CJK
        text by substring; all terms must match. role: user, assistant, tool, title or summary.
        since/until: YYYY-MM-DD (UTC) or an age such as 7d. Each hit names its conversation
        (conv), the event id, role, time and a snippet with matches between ⟦ and ⟧.
        """
        return search(
            self.buckets,
            self.index,
            query,
            project=project,
            conversation=conversation,
            role=role,
            since_ms=_when(since),
            until_ms=_when(until, end=True),
            limit=max(1, min(limit, 200)),
        )

    def list_conversations(
        self, project: str | None = None, active: bool = False, since: str | None = None, limit: int = 20
    ) -> dict[str, Any]:
        """Conversations, newest activity first: key, title, project, times, messages, tokens, cost_usd."""
        return conversations(
            self.buckets, project=project, active=active, since_ms=_when(since), limit=max(1, min(limit, 500))
        )

    def get_conversation(self, conversation: str, offset: int = 0, limit: int = 50) -> dict[str, Any]:
        """One conversation's messages in order, a page at a time (offset/limit; next_offset is
        null at the end). conversation: its key or a unique prefix. Tool calls show the tool and
        its main argument; tool results are cut to 2000 characters."""
        store, conv = self.buckets.find(conversation)
        start, size = max(0, offset), max(1, min(limit, PAGE_MAX))
        got = list(itertools.islice(messages(store, conv), start, start + size + 1))
        out = []
        for m in got[:size]:
            d = m.as_dict()
            for b in d["blocks"]:
                if b["kind"] == "tool_result" and len(b["text"]) > RESULT_CHARS:
                    b["text"] = b["text"][:RESULT_CHARS] + f"\n… (cut: {len(b['text']):,} characters)"
            out.append(d)
        return {
            "conversation": header(store, conv),
            "offset": start,
            "messages": out,
            "next_offset": start + size if len(got) > size else None,
        }

    def usage(self, by: str = "day", since: str | None = None, until: str | None = None) -> dict[str, Any]:
        """Tokens and cost (USD, offline list prices) by conversation, project, model, day, week or month."""
        if by not in BY_CHOICES:
            raise ConfigError(f"by must be one of {', '.join(BY_CHOICES)}")
        catch_up_all(self.buckets)
        return report(self.buckets, by, _when(since), _when(until, end=True))


TOOL_NAMES = ("search", "list_conversations", "get_conversation", "usage")


def serve(app: App) -> None:
    """Run the MCP server on stdin/stdout until the client closes it."""
    try:
        from mcp.server.mcpserver import MCPServer
        from mcp.server.mcpserver.exceptions import ToolError
        from mcp_types import ToolAnnotations
    except ImportError:
        raise ConfigError("agg mcp needs the MCP SDK: pip install -c constraints.txt '.[mcp]'") from None

    buckets = app.buckets()
    tools = Tools(buckets, SearchIndex.open_all(buckets, app.settings.data_dir))
    server = MCPServer("agg", instructions=INSTRUCTIONS)
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)
    lock = threading.Lock()

    def register(name: str) -> None:
        method = getattr(tools, name)

        def call(*args: Any, **kwargs: Any) -> dict[str, Any]:
            try:
                with lock:  # one call at a time: the tools share one Redis client and index file
                    result: dict[str, Any] = method(*args, **kwargs)
            except AggError as e:  # a bad query, an unknown conversation: said to the client, not fatal
                raise ToolError(str(e)) from None
            return result

        call.__signature__ = inspect.signature(method)  # type: ignore[attr-defined]
        call.__annotations__ = dict(method.__annotations__)
        server.tool(name=name, description=method.__doc__, annotations=read_only)(call)

    for name in TOOL_NAMES:
        register(name)
    server.run("stdio")
