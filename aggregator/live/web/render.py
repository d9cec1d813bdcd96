"""A transcript record as HTML for the conversation page: every piece of transcript text escaped.

Message text is rendered as markdown by markdown-it-py with raw HTML *off* (a ``<script>`` in a
message comes out as the text ``&lt;script&gt;``), images off (a page never fetches a URL a
transcript names) and markdown-it's link check on (no ``javascript:`` links). Everything else
— tool inputs and results, system lines, unknown records — is escaped text. Tool calls, tool
results, thinking and injected context are folded (``<details>``); consecutive records of one
subagent are folded into one thread.

Switch-over note: issue 10 (``agg show`` / ``agg export --format html``) brings its own renderer;
:func:`render_events` is the one entry point the pages use, so it can be replaced by that one if
its output fits a page (one element per event, ``id="e-<seq>"``).
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

_MD = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable(
    ["table", "strikethrough"]
)
_MD.disable("image")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

HIDDEN_TYPES = frozenset(
    {"progress", "file-history-snapshot", "queue-operation", "attachment", "last-prompt", "permission-mode"}
)
"""Record types not shown unless asked (``?all=1``): bookkeeping rather than conversation."""

_TOOL_KEYS = ("command", "file_path", "path", "pattern", "url", "query", "description", "prompt", "skill")
"""Input fields that best say what a tool call does, in order of preference (its folded line)."""


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


def _block_text(block: Any) -> str:
    if isinstance(block, str):
        return block
    if isinstance(block, dict):
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            return str(block["text"])
        if block.get("type") == "image":
            return "[image]"
    return ""


def _result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(t for t in (_block_text(b) for b in content) if t)
    return "" if content is None else _dump(content)


def tool_line(name: str, inp: Any) -> str:
    """What a tool call does, on one line (its command, file, pattern, …)."""
    if isinstance(inp, dict):
        for key in _TOOL_KEYS:
            v = inp.get(key)
            if isinstance(v, str) and v.strip():
                return v.strip().splitlines()[0][:160]
    return ""


def _tool_use(block: dict[str, Any]) -> str:
    name = str(block.get("name") or "tool")
    inp = block.get("input")
    line = tool_line(name, inp)
    return (
        f'<details class="tool"><summary><span class="tag">{e(name)}</span> <code>{e(line)}</code></summary>'
        f"{plain(_dump(inp))}</details>"
    )


def _tool_result(block: dict[str, Any]) -> str:
    text = _result_text(block.get("content"))
    error = block.get("is_error") is True
    lines = text.count("\n") + 1 if text else 0
    first = text.strip().splitlines()[0][:160] if text.strip() else "(empty)"
    cls = "tool result error" if error else "tool result"
    label = "error" if error else f"result · {lines} line{'s' if lines != 1 else ''}"
    return (
        f'<details class="{cls}"><summary><span class="tag">{e(label)}</span> <code>{e(first)}</code></summary>'
        f"{plain(text)}</details>"
    )


def _block(block: Any) -> str:
    if isinstance(block, str):
        return markdown(block)
    if not isinstance(block, dict):
        return ""
    kind = block.get("type")
    if kind == "text":
        return markdown(str(block.get("text") or ""))
    if kind == "tool_use":
        return _tool_use(block)
    if kind == "tool_result":
        return _tool_result(block)
    if kind in ("thinking", "redacted_thinking"):
        text = block.get("thinking")
        body = markdown(text) if isinstance(text, str) and text else "<p>(redacted)</p>"
        return f'<details class="thinking"><summary><span class="tag">thinking</span></summary>{body}</details>'
    if kind == "image":
        source = block.get("source")
        media = source.get("media_type") if isinstance(source, dict) else None
        return f'<p class="note">[image{", " + e(media) if media else ""} — not shown]</p>'
    return f'<details class="tool"><summary><span class="tag">{e(kind)}</span></summary>{plain(_dump(block))}</details>'


def _content(content: Any) -> str:
    if isinstance(content, str):
        return markdown(content)
    if isinstance(content, list):
        return "".join(_block(b) for b in content)
    return ""


def _only_tool_results(content: Any) -> bool:
    return (
        isinstance(content, list)
        and bool(content)
        and all(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)
    )


def _head(label: str, ts: str | None, extra: str = "") -> str:
    return f'<header><span class="role">{e(label)}</span>{extra}{time_tag(ts)}</header>'


def _message(rec: dict[str, Any], kind: str, ts: str | None) -> tuple[str, str]:
    msg = rec.get("message")
    content = msg.get("content") if isinstance(msg, dict) else None
    if kind == "assistant":
        model = msg.get("model") if isinstance(msg, dict) else None
        extra = f'<span class="model">{e(model)}</span>' if isinstance(model, str) else ""
        return "assistant", _head("assistant", ts, extra) + _content(content)
    if _only_tool_results(content):
        return "user tool", _head("tool result", ts) + _content(content)
    body = _content(content)
    if rec.get("isCompactSummary") is True:
        return "user meta", _head("compaction summary", ts) + f"<details><summary>the summary</summary>{body}</details>"
    if rec.get("isMeta") is True:
        return "user meta", _head(
            "injected", ts
        ) + f"<details><summary>context added by Claude Code</summary>{body}</details>"
    return "user", _head("user", ts) + body


def _system(rec: dict[str, Any], ts: str | None) -> str:
    sub = rec.get("subtype")
    if sub == "compact_boundary":
        meta = rec.get("compactMetadata")
        detail = ""
        if isinstance(meta, dict):
            detail = f" ({e(meta.get('trigger', '?'))}, {e(meta.get('preTokens', '?'))} tokens before)"
        return f'<p class="divider">conversation compacted{detail} {time_tag(ts)}</p>'
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
    """Records other than messages: (css class, inner HTML)."""
    r = rec if isinstance(rec, dict) else {}
    if kind == "system":
        return "system", _system(r, ts)
    if kind == "summary":
        return "summary", _head("summary", ts) + markdown(str(r.get("summary") or ""))
    if kind in ("custom-title", "ai-title"):
        title = r.get("customTitle") if kind == "custom-title" else r.get("aiTitle")
        return "system", _head(kind, ts) + f"<p>{e(title or '')}</p>"
    if kind == "agg-turn":
        return "summary agg", _turn(r, ts)
    if kind == "agent-meta":
        meta = r.get("meta")
        meta = meta if isinstance(meta, dict) else {}
        detail = " · ".join(str(x) for x in (meta.get("agentType"), meta.get("description")) if x)
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
    if kind in ("user", "assistant") and isinstance(rec, dict):
        cls, inner = _message(rec, kind, ts)
    else:
        cls, inner = _other(rec, kind, ts)
    return (
        f'<article class="ev {cls}" id="e-{item.seq}" data-seq="{item.seq}" data-id="{e(env.get("id", ""))}">'
        f"{inner}</article>"
    )


def thread_of(item: Item) -> str | None:
    """The subagent thread an event belongs to: its agent id, ``sidechain`` for 1.0.x inline ones."""
    agent = item.env.get("agent")
    if agent:
        return str(agent)
    if isinstance(item.record, dict) and item.record.get("isSidechain") is True:
        return "sidechain"
    return None


def render_events(items: Sequence[Item], agents: dict[str, dict[str, Any]] | None = None) -> str:
    """Events in order; each run of consecutive events of one subagent folded into a thread.

    ``agents``: subagent id → ``{"type", "description"}`` (the conversation's ``subagents``).
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
        info = agents.get(thread, {})
        what = " · ".join(str(x) for x in (info.get("type"), info.get("description")) if x)
        label = "subagent" if thread == "sidechain" else f"subagent {thread}"
        n = j - i
        out.append(
            f'<details class="thread" data-agent="{e(thread)}"><summary><span class="tag">{e(label)}</span> '
            f'{e(what)} <span class="count">{n} event{"s" if n != 1 else ""}</span></summary>'
            + "".join(render_event(it) for it in items[i:j])
            + "</details>"
        )
        i = j
    return "".join(out)
