"""A conversation's events as HTML for the conversation page, on :mod:`aggregator.transcript`'s model.

What an event says is decided where ``agg show`` and ``agg export`` decide it: a user or assistant
line, a title or a compaction is the :class:`~aggregator.transcript.Message` that
:func:`~aggregator.transcript.message_of` makes of it (its role — a user's words, the assistant's, tool
results, injected context —, its blocks with each tool call's main argument and each result's text,
its subagent), bookkeeping records are :data:`~aggregator.transcript.HIDDEN_TYPES`, and a folded
tool result shows :func:`~aggregator.render.first_line`. This module lays that out for a live page:
one ``<article id="e-<seq>">`` per stored event (so the page can append, page and land on one),
message text as markdown, tool calls, results, thinking and injected context folded, each run of a
subagent's events folded into one thread. Records that make no message (system lines, agg's turns,
subagent metadata, pull-request links, anything else) are laid out by :func:`_other`.

Every piece of transcript text is escaped: markdown is rendered by markdown-it-py with raw HTML *off*
(a ``<script>`` in a message comes out as the text ``&lt;script&gt;``), images off (a page never
fetches a URL a transcript names) and markdown-it's link check on (no ``javascript:`` links); the
rest goes through :func:`e` (``tests/browser/test_pages.py::test_hostile_transcript_text_runs_nothing``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

import orjson
from markdown_it import MarkdownIt

from aggregator import defaults
from aggregator.render import first_line
from aggregator.text import cut_width
from aggregator.transcript import Block, Message, agent_label, agent_of, message_of

_MD = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable(
    ["table", "strikethrough"]
)
_MD.disable("image")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_SUMMARY_WIDTH = 160
"""Columns of a folded block's one-line summary."""


@dataclass(frozen=True, slots=True)
class Item:
    """One event to show: its log ``seq`` (of the first version), envelope and newest record."""

    seq: int
    env: dict[str, Any]
    record: Any


def e(text: object) -> str:
    """``text`` escaped for HTML text and attribute values."""
    return escape(str(text), quote=True)


def cut(text: str, limit: int = defaults.WEB_TEXT_CHARS) -> str:
    """``text`` up to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n… ({len(text) - limit:,} more characters: the JSON API has them all)"


def markdown(text: str) -> str:
    """Markdown as HTML (raw HTML escaped, no images); very long text as escaped preformatted text."""
    if len(text) > defaults.WEB_MARKDOWN_CHARS:
        return f'<pre class="plain">{e(cut(text))}</pre>'
    return str(_MD.render(text))


def plain(text: str) -> str:
    """Preformatted, escaped text (ANSI colour codes removed), cut if long."""
    return f"<pre>{e(cut(_ANSI.sub('', text)))}</pre>"


def time_tag(ts: str | None) -> str:
    """A ``<time>`` element (the page's script shows it in local time)."""
    return f'<time datetime="{e(ts)}">{e(ts)}</time>' if ts else ""


def _dump(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()


def _fold(cls: str, tag: str, line: str, body: str) -> str:
    """A ``<details>``: a tag and a one-line summary, ``body`` one click away."""
    code = f" <code>{e(cut_width(line, _SUMMARY_WIDTH))}</code>" if line else ""
    return f'<details class="{cls}"><summary><span class="tag">{e(tag)}</span>{code}</summary>{body}</details>'


def _head(label: str, ts: str | None, extra: str = "") -> str:
    return f'<header><span class="role">{e(label)}</span>{extra}{time_tag(ts)}</header>'


# --- messages --------------------------------------------------------------------------------------
def _tool_inputs(rec: dict[str, Any]) -> dict[str, Any]:
    """Each tool call's whole input by its id (shown unfolded under the call's main argument)."""
    msg = rec.get("message")
    content = msg.get("content") if isinstance(msg, dict) else None
    blocks = content if isinstance(content, list) else []
    return {
        b["id"]: b.get("input")
        for b in blocks
        if isinstance(b, dict) and b.get("type") == "tool_use" and isinstance(b.get("id"), str)
    }


def _block(b: Block, inputs: dict[str, Any]) -> str:
    if b.kind == "text":
        return markdown(b.text)
    if b.kind == "thinking":
        return _fold("thinking", "thinking", "", markdown(b.text))
    if b.kind == "tool_use":
        body = plain(_dump(inputs[b.tool_id])) if b.tool_id in inputs else ""
        return _fold("tool", b.name or "tool", b.text, body)
    if b.kind == "tool_result":
        lines = b.text.count("\n") + 1 if b.text else 0
        label = "error" if b.error else f"result · {lines} line{'s' if lines != 1 else ''}"
        return _fold(
            "tool result error" if b.error else "tool result", label, first_line(b.text, "(empty)"), plain(b.text)
        )
    return '<p class="note">[image — not shown]</p>'


def _message(m: Message, rec: dict[str, Any]) -> tuple[str, str]:
    """A user or assistant message: (css class, inner HTML)."""
    inputs = _tool_inputs(rec)
    body = "".join(_block(b, inputs) for b in m.blocks)
    if m.role == "assistant":
        extra = f'<span class="model">{e(m.model)}</span>' if m.model else ""
        return "assistant", _head("assistant", m.ts, extra) + body
    if m.role == "tool":
        return "user tool", _head("tool result", m.ts) + body
    if m.meta:
        label, what = (
            ("compaction summary", "the summary")
            if rec.get("isCompactSummary") is True
            else ("injected", "context added by Claude Code")
        )
        return "user meta", _head(label, m.ts) + f"<details><summary>{what}</summary>{body}</details>"
    return "user", _head("user", m.ts) + body


def _compacted(rec: dict[str, Any], m: Message) -> str:
    meta = rec.get("compactMetadata")
    detail = ""
    if isinstance(meta, dict):
        detail = f" ({e(meta.get('trigger', '?'))}, {e(meta.get('preTokens', '?'))} tokens before)"
    return f'<p class="divider">{e(m.blocks[0].text)}{detail} {time_tag(m.ts)}</p>'


# --- records that make no message ------------------------------------------------------------------
def _system(rec: dict[str, Any], ts: str | None) -> str:
    sub = rec.get("subtype")
    if sub == "turn_duration" and isinstance(rec.get("durationMs"), int | float):
        return f'<p class="divider">turn took {rec["durationMs"] / 1000:.1f} s {time_tag(ts)}</p>'
    if sub == "stop_hook_summary":
        n = rec.get("hookCount")
        return f'<p class="divider">{e(n if n is not None else "?")} stop hooks ran {time_tag(ts)}</p>'
    content = rec.get("content")
    text = content if isinstance(content, str) else ("" if content is None else _dump(content))
    if not text and rec.get("error") is not None:
        text = _dump(rec.get("error"))
    label = f"system · {sub}" if isinstance(sub, str) else "system"
    return _head(label, ts) + (plain(text) if text else "")


def _turn(rec: dict[str, Any], ts: str | None) -> str:
    turn = rec.get("turn")
    turn = turn if isinstance(turn, dict) else {}
    kind = turn.get("kind", "turn")
    parts = [_head(f"agg {kind}", ts, f'<span class="model">{e(turn.get("model") or "")}</span>')]
    if isinstance(turn.get("title"), str):
        parts.append(f"<h3>{e(turn['title'])}</h3>")
    if isinstance(turn.get("summary"), str):
        parts.append(markdown(turn["summary"]))
    rest = {k: v for k, v in turn.items() if k not in ("kind", "title", "summary", "upto_seq", "provider", "model")}
    if rest:
        parts.append(f"<details><summary>details</summary>{plain(_dump(rest))}</details>")
    return "".join(parts)


def _link(url: Any, label: str) -> str:
    if isinstance(url, str) and url.startswith(("https://", "http://")):
        return f'<a href="{e(url)}" rel="noopener noreferrer">{e(label)}</a>'
    return e(label)


def _other(rec: Any, kind: str, ts: str | None) -> tuple[str, str]:
    """Records that make no message: (css class, inner HTML)."""
    r = rec if isinstance(rec, dict) else {}
    if kind == "system":
        return "system", _system(r, ts)
    if kind == "agg-turn":
        return "summary agg", _turn(r, ts)
    if kind == "agent-meta":
        meta = r.get("meta")
        detail = (
            agent_label({"type": meta.get("agentType"), "description": meta.get("description")})
            if isinstance(meta, dict)
            else ""
        )
        return "system", _head(f"subagent {r.get('agentId', '?')}", ts) + f"<p>{e(detail)}</p>"
    if kind == "pr-link":
        label = f"PR #{r.get('prNumber', '?')} {r.get('prRepository') or ''}".strip()
        return "system", _head("pull request", ts) + f"<p>{_link(r.get('prUrl'), label)}</p>"
    return "system raw", _head(
        kind or "record", ts
    ) + f"<details><summary>record</summary>{plain(_dump(rec))}</details>"


def render_event(item: Item) -> str:
    """One event as an ``<article id="e-<seq>">``."""
    env, rec = item.env, item.record
    kind = str(env.get("type") or "")
    ts = env.get("ts") if isinstance(env.get("ts"), str) else None
    m = message_of(str(env.get("id", "")), rec) if kind != "agg-turn" else None
    if m is None or not isinstance(rec, dict):
        cls, inner = _other(rec, kind, ts)
    elif m.role == "compact":
        cls, inner = "system", _compacted(rec, m)
    elif m.role == "title":
        cls, inner = ("summary" if kind == "summary" else "system"), _head(kind, ts) + f"<p>{e(m.blocks[0].text)}</p>"
    else:
        cls, inner = _message(m, rec)
    return (
        f'<article class="ev {cls}" id="e-{item.seq}" data-seq="{item.seq}" data-id="{e(env.get("id", ""))}">'
        f"{inner}</article>"
    )


def thread_of(item: Item) -> str | None:
    """The subagent thread an event belongs to: the envelope's agent (its file's), else the record's
    (:func:`~aggregator.transcript.agent_of`)."""
    agent = item.env.get("agent")
    return str(agent) if agent else agent_of(item.record)


def render_events(items: Sequence[Item], agents: dict[str, dict[str, Any]] | None = None) -> str:
    """Events in order; each run of consecutive events of one subagent folded into a thread.

    ``agents``: subagent id → the conversation view's ``subagents`` entry (``type``, ``description``).
    """
    agents = agents or {}
    out: list[str] = []
    i = 0
    while i < len(items):
        thread = thread_of(items[i])
        if thread is None:
            out.append(render_event(items[i]))
            i += 1
            continue
        j = i
        while j < len(items) and thread_of(items[j]) == thread:
            j += 1
        label = "subagent" if thread == "sidechain" else f"subagent {thread}"
        n = j - i
        out.append(
            f'<details class="thread" data-agent="{e(thread)}"><summary><span class="tag">{e(label)}</span> '
            f'{e(agent_label(agents.get(thread, {})))} <span class="count">{n} event{"s" if n != 1 else ""}</span>'
            "</summary>" + "".join(render_event(it) for it in items[i:j]) + "</details>"
        )
        i = j
    return "".join(out)
