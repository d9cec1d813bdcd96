"""A conversation as messages people read: what ``agg show``, ``agg export``, ``agg mcp`` (and later
``agg serve``) render, built from the stored events in conversation order (newest revisions).

A :class:`Message` has a role — ``user``, ``assistant``, ``tool`` (tool results), ``title``
(Claude Code's summary/title records), ``agg`` (agg's own title and summary), ``compact`` (where
Claude Code compacted the conversation) — and blocks: ``text``, ``thinking``, ``tool_use`` (the tool's
name and its main argument: the Bash command, the file path…), ``tool_result`` (its text, and
whether it is an error), ``image``. The lines of one API response (one content block per line)
become one message. Subagent messages carry their agent id and, from its ``.meta.json``, a label.
Progress, snapshot, queue and hook records are left out. Everything is JSON-able
(:meth:`Message.as_dict`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import PurePath
from typing import Any

from aggregator.errors import NotFound
from aggregator.fts import result_text
from aggregator.parse import loads
from aggregator.projections import Projector
from aggregator.projects import project_paths
from aggregator.store import Store
from aggregator.text import preview
from aggregator.views import conversation_view

MAIN_ARGUMENT = {
    "Bash": ("command",),
    "Read": ("file_path",),
    "Write": ("file_path",),
    "Edit": ("file_path",),
    "MultiEdit": ("file_path",),
    "NotebookEdit": ("notebook_path",),
    "NotebookRead": ("notebook_path",),
    "Glob": ("pattern", "path"),
    "Grep": ("pattern", "path"),
    "LS": ("path",),
    "WebFetch": ("url",),
    "WebSearch": ("query",),
    "Task": ("description", "subagent_type"),
    "Agent": ("description", "subagent_type"),
    "Skill": ("skill",),
    "SlashCommand": ("command",),
    "BashOutput": ("bash_id",),
    "KillShell": ("shell_id",),
}
"""The input fields that say what a tool call did, per tool (others: the first short string)."""

HIDDEN_TYPES = frozenset(
    {"progress", "file-history-snapshot", "queue-operation", "attachment", "last-prompt", "permission-mode"}
)
"""Bookkeeping record types: never a message (``agg serve``'s conversation page shows them only
when asked, ``?all=1``, and pages past them by their envelope's type alone)."""


@dataclass
class Block:
    """One piece of a message."""

    kind: str
    """``text`` · ``thinking`` · ``tool_use`` · ``tool_result`` · ``image``."""
    text: str = ""
    """The text (for ``tool_use``: the main argument; for ``tool_result``: the result's text)."""
    name: str | None = None
    """The tool's name (``tool_use``)."""
    tool_id: str | None = None
    """The ``tool_use`` id (also on the matching ``tool_result``)."""
    error: bool = False
    """A ``tool_result`` that reported an error."""


@dataclass
class Message:
    """One message (or one API response) of a conversation."""

    id: str
    role: str
    ts: str | None
    blocks: list[Block] = field(default_factory=list)
    agent: str | None = None
    """The subagent it belongs to (None: the main thread)."""
    agent_label: str | None = None
    """The subagent's type and task, from its ``.meta.json`` (when agg has it)."""
    model: str | None = None
    meta: bool = False
    """Text Claude Code injected (``isMeta``: reminders, caveats, expanded commands), not typed."""
    ids: list[str] = field(default_factory=list)
    """The event ids it was made from (several lines of one API response)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def conversation_key(store: Store, name: str) -> str:
    """The conversation ``name`` means: a key, a unique prefix of one, or a transcript's file name or
    path (``…/<session>.jsonl``). Raises :class:`NotFound` naming the candidates when ambiguous."""
    if name.endswith(".jsonl"):
        name = PurePath(name).name.removesuffix(".jsonl")
    try:
        return store.resolve_conversation(name)
    except NotFound as e:
        matches = [c for c in store.conversations() if name and c.startswith(name)]
        if len(matches) > 1:
            shown = ", ".join(matches[:5]) + (", …" if len(matches) > 5 else "")
            raise NotFound(f"{name!r} matches {len(matches)} conversations ({shown}); give more of the key") from e
        raise


def _main_argument(name: str, args: Any) -> str:
    if not isinstance(args, dict):
        return ""
    keys = MAIN_ARGUMENT.get(name)
    if keys:
        vals = [str(args[k]) for k in keys if isinstance(args.get(k), str | int | float) and str(args[k])]
        if vals:
            return vals[0] + (f" ({', '.join(vals[1:])})" if len(vals) > 1 else "")
    if name == "TodoWrite" and isinstance(args.get("todos"), list):
        return f"{len(args['todos'])} todos"
    for v in args.values():
        if isinstance(v, str) and v:
            return v
    return ""


def _blocks(content: Any) -> list[Block]:
    if isinstance(content, str):
        return [Block("text", content)] if content else []
    out: list[Block] = []
    for b in content if isinstance(content, list) else []:
        if not isinstance(b, dict):
            continue
        kind = b.get("type")
        if kind == "text" and isinstance(b.get("text"), str):
            out.append(Block("text", b["text"]))
        elif kind == "thinking" and isinstance(b.get("thinking"), str) and b["thinking"].strip():
            out.append(Block("thinking", b["thinking"]))
        elif kind == "tool_use":
            name = b["name"] if isinstance(b.get("name"), str) else "?"
            tid = b.get("id") if isinstance(b.get("id"), str) else None
            out.append(Block("tool_use", preview(_main_argument(name, b.get("input")), 300), name=name, tool_id=tid))
        elif kind == "tool_result":
            tid = b.get("tool_use_id") if isinstance(b.get("tool_use_id"), str) else None
            out.append(
                Block("tool_result", result_text(b.get("content")), tool_id=tid, error=b.get("is_error") is True)
            )
        elif kind == "image":
            out.append(Block("image"))
    return out


def message_of(eid: str, obj: Any) -> Message | None:
    """The message one stored record makes on its own (None for records with nothing to read)."""
    return _message(eid, obj) if isinstance(obj, dict) else None


def agent_of(obj: Any) -> str | None:
    """The subagent a record belongs to: its ``agentId``, ``sidechain`` for Claude Code 1.0.x's
    inline ones (``isSidechain``), None for the main thread."""
    if not isinstance(obj, dict):
        return None
    agent = obj.get("agentId")
    if isinstance(agent, str):
        return agent
    return "sidechain" if obj.get("isSidechain") is True else None


def agent_label(sub: dict[str, Any]) -> str:
    """How a subagent is named beside its thread: ``type · description`` (a conversation view's
    ``subagents`` entry; empty when neither is known)."""
    return " · ".join(str(x) for x in (sub.get("type"), sub.get("description")) if x)


def _message(eid: str, obj: dict[str, Any]) -> Message | None:
    kind = obj.get("type")
    if kind in HIDDEN_TYPES:
        return None
    ts = obj.get("timestamp") if isinstance(obj.get("timestamp"), str) else None
    agent = agent_of(obj)
    msg = obj.get("message")
    if kind in ("user", "assistant") and isinstance(msg, dict):
        blocks = _blocks(msg.get("content"))
        if not blocks:
            return None
        role = kind
        if kind == "user" and all(b.kind == "tool_result" for b in blocks):
            role = "tool"
        model = msg.get("model") if kind == "assistant" and isinstance(msg.get("model"), str) else None
        meta = bool(obj.get("isMeta") or obj.get("isCompactSummary"))
        return Message(eid, role, ts, blocks, agent=agent, model=model, meta=meta, ids=[eid])
    text = None
    role = "title"
    if kind == "summary":
        text = obj.get("summary")
    elif kind == "custom-title":
        text = obj.get("customTitle")
    elif kind == "ai-title":
        text = obj.get("aiTitle")
    elif kind == "agg-turn" and isinstance(obj.get("turn"), dict) and obj["turn"].get("kind") == "summary":
        turn = obj["turn"]
        parts = [f"{k}: {turn[k]}" for k in ("title", "summary") if isinstance(turn.get(k), str) and turn[k]]
        text, role = "\n".join(parts), "agg"
    elif kind == "system" and obj.get("subtype") == "compact_boundary":
        text, role = "conversation compacted", "compact"
    if not isinstance(text, str) or not text:
        return None
    return Message(eid, role, ts, [Block("text", text)], agent=agent, ids=[eid])


def messages(store: Store, conv: str) -> Iterator[Message]:
    """The conversation's messages in order (see the module docstring)."""
    labels = _agent_labels(store, conv)
    pending: Message | None = None
    pending_mid: str | None = None
    for eid, raw in store.replay(conv):
        try:
            obj = loads(raw)
        except ValueError:
            continue
        if not isinstance(obj, dict):
            continue
        m = _message(eid, obj)
        if m is None:
            continue
        m.agent_label = labels.get(m.agent or "")
        mid = obj["message"].get("id") if m.role == "assistant" else None
        if pending is not None and mid is not None and mid == pending_mid and m.agent == pending.agent:
            pending.blocks += m.blocks  # the next content block of the same API response
            pending.ids.append(eid)
            continue
        if pending is not None:
            yield pending
        pending, pending_mid = m, mid if isinstance(mid, str) else None
    if pending is not None:
        yield pending


def _agent_labels(store: Store, conv: str) -> dict[str, str]:
    fields = store.projection(conv)
    out = {}
    for sub in conversation_view(conv, fields, now_ms=0, active_minutes=0)["subagents"]:
        label = agent_label(sub)
        if label:
            out[sub["id"]] = label
    return out


def header(store: Store, conv: str) -> dict[str, Any]:
    """The conversation's projection (as ``agg list`` shows it) with its readable ``project_path``."""
    Projector(store).catch_up()
    fields = store.projection(conv)
    view = conversation_view(conv, fields, now_ms=0, active_minutes=0)
    view.pop("active")
    view["project_path"] = project_paths(store, [conv]).get(view["project"] or "")
    return view
