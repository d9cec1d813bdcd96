"""A conversation's messages (:mod:`aggregator.transcript`) as a terminal transcript, Markdown or HTML.

The terminal form wraps text to the width, shows each tool call on one line (name and main
argument) and each tool result folded to its first lines, marks subagent threads with a bar and a
label, and uses colour only when asked to (the caller knows whether it writes to a terminal).

The HTML form is one self-contained file: inline CSS, no script, no fetch (its Content-Security-
Policy forbids both, so even a mistake could not load or run anything), tool results folded in
``<details>``. Every piece of transcript text goes through :func:`html.escape`: a message holding
``<script>`` or ``<img onerror=…>`` shows those characters and runs nothing
(``tests/browser/test_export.py``).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from typing import Any

from aggregator.text import cut_width, preview, wrap_width
from aggregator.transcript import Block, Message

RESULT_LINES = 3
"""Lines of a tool result the terminal shows."""

MARKDOWN_RESULT_LINES = 20
"""Lines of a tool result a Markdown export shows."""

HTML_RESULT_CHARS = 20_000
"""Characters of a tool result an HTML export keeps (inside a folded ``<details>``)."""

_ANSI = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
}
_ROLE_STYLE = {"user": ("cyan", "bold"), "assistant": ("green", "bold"), "agg": ("magenta", "bold")}
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f\x9b]")


def _plain(text: str) -> str:
    """Text safe to print on a terminal: no control characters (escape sequences) of its own."""
    return _CONTROL.sub("", text.replace("\t", "    ").replace("\r", ""))


def first_line(text: str, default: str = "") -> str:
    """The first line of ``text`` that is not blank (``default`` when there is none): what a folded
    tool result shows."""
    return next((ln for ln in text.splitlines() if ln.strip()), default)


def _when(ts: str | None) -> str:
    """``YYYY-MM-DD HH:MM`` (UTC) of a record time."""
    return f"{ts[:10]} {ts[11:16]}" if ts and len(ts) >= 16 else (ts or "")


def _label(m: Message) -> str:
    parts = [m.role + (" (injected)" if m.meta else "")]
    if m.ts:
        parts.append(_when(m.ts))
    if m.model:
        parts.append(m.model)
    return " · ".join(parts)


class Terminal:
    """Renders messages for a terminal ``width`` columns wide, with ANSI colour if ``color``."""

    def __init__(self, width: int = 100, color: bool = False) -> None:
        self.width = max(40, width)
        self.color = color

    def style(self, text: str, *styles: str) -> str:
        if not self.color or not styles:
            return text
        codes = ";".join(_ANSI[s] for s in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"

    def header(self, head: dict[str, Any]) -> list[str]:
        title = head.get("title") or "(untitled)"
        out = [self.style(cut_width(_plain(title), self.width), "bold")]
        facts = [head["key"], head.get("project_path") or head.get("project") or ""]
        if head.get("first_ts"):
            facts.append(f"{_when(head['first_ts'])} → {_when(head.get('last_ts'))} UTC")
        facts.append(f"{head.get('messages', 0)} messages")
        out += [self.style(line, "dim") for line in wrap_width(" · ".join(f for f in facts if f), self.width)]
        if head.get("summary"):
            out += [self.style(line, "magenta") for line in self._wrap("agg summary: " + head["summary"], self.width)]
        return [*out, ""]

    def messages(self, msgs: Iterable[Message]) -> Iterable[str]:
        """The lines of the transcript (without newlines)."""
        agent: str | None = None
        last_role = ""
        for m in msgs:
            if m.agent != agent:
                if m.agent:
                    label = f"subagent {m.agent}" + (f": {m.agent_label}" if m.agent_label else "")
                    yield self.style(cut_width(f"┌─ {label}", self.width), "yellow")
                elif agent:
                    yield self.style("└─ back to the main conversation", "yellow")
                agent, last_role = m.agent, ""
            bar = self.style("│ ", "yellow") if m.agent else ""
            inner = self.width - (2 if m.agent else 0)
            # A tool's result hangs under its call; the assistant's next step goes on under one heading.
            heading = m.role not in ("tool", last_role) or m.meta
            if m.role != "tool" and last_role:
                yield bar.rstrip()
            for line in self._message(m, inner, heading):
                yield bar + line
            last_role = m.role if m.role != "tool" else last_role

    def _message(self, m: Message, width: int, heading: bool) -> Iterable[str]:
        if m.role == "compact":
            yield self.style(f"── {m.blocks[0].text} ({_when(m.ts)}) ──", "dim")
            return
        if heading:
            styles = ("dim",) if m.meta or m.role == "title" else _ROLE_STYLE.get(m.role, ("bold",))
            yield self.style(cut_width(_label(m), width), *styles)
        for b in m.blocks:
            yield from self._block(b, width, dim=m.meta)

    def _block(self, b: Block, width: int, dim: bool) -> Iterable[str]:
        if b.kind == "text":
            for line in self._wrap(b.text, width):
                yield self.style(line, "dim") if dim else line
        elif b.kind == "thinking":
            for line in self._wrap("(thinking) " + b.text, width):
                yield self.style(line, "dim")
        elif b.kind == "tool_use":
            name = _plain(b.name or "?")
            line = cut_width(f"  ⏺ {name} {_plain(b.text)}".rstrip(), width)
            head = f"  ⏺ {name}"
            yield self.style(head, "blue", "bold") + line[len(head) :] if line.startswith(head) else line
        elif b.kind == "tool_result":
            lines = [ln for ln in _plain(b.text).splitlines() if ln.strip()] or ["(no output)"]
            shown = lines[:RESULT_LINES]
            for i, line in enumerate(shown):
                lead = "    ↳ " if i == 0 else "      "
                text = cut_width(lead + line, width)
                yield self.style(text, "red" if b.error else "dim")
            if len(lines) > len(shown):
                yield self.style(f"      … {len(lines) - len(shown)} more lines", "dim")
        elif b.kind == "image":
            yield self.style("  [image]", "dim")

    @staticmethod
    def _wrap(text: str, width: int) -> list[str]:
        out: list[str] = []
        for line in _plain(text).split("\n"):
            out += wrap_width(line, width)
        while out and not out[-1].strip():
            out.pop()
        return out


# --- Markdown ---------------------------------------------------------------------------------------------
def _fence(text: str) -> str:
    """A code fence longer than any run of backticks in ``text``."""
    longest = max((len(r) for r in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _code_span(text: str) -> str:
    text = text.replace("\n", " ")
    ticks = "`" * (max((len(r) for r in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def markdown(head: dict[str, Any], msgs: Iterable[Message]) -> str:
    """The conversation as a Markdown document."""
    out = [f"# {(head.get('title') or '(untitled)').strip()}", ""]
    out.append(f"- conversation: `{head['key']}`")
    if head.get("project_path") or head.get("project"):
        out.append(f"- project: `{head.get('project_path') or head.get('project')}`")
    if head.get("first_ts"):
        out.append(f"- from {head['first_ts']} to {head.get('last_ts')}")
    out.append(f"- {head.get('messages', 0)} messages")
    if head.get("summary"):
        out += ["", f"> agg summary: {head['summary']}"]
    out.append("")
    for m in msgs:
        who = f" · subagent {m.agent}" + (f" ({m.agent_label})" if m.agent_label else "") if m.agent else ""
        if m.role == "compact":
            out += ["---", f"*{m.blocks[0].text} ({m.ts})*", ""]
            continue
        if m.role != "tool":
            out += [f"## {_label(m)}{who}", ""]
        for b in m.blocks:
            out += _md_block(b)
    return "\n".join(out).rstrip() + "\n"


def _md_block(b: Block) -> list[str]:
    if b.kind == "text":
        return [b.text.rstrip(), ""]
    if b.kind == "thinking":
        return ["> " + b.text.rstrip().replace("\n", "\n> "), ""]
    if b.kind == "tool_use":
        return [f"**{b.name}** {_code_span(b.text)}" if b.text else f"**{b.name}**", ""]
    if b.kind == "tool_result":
        lines = b.text.rstrip().split("\n")
        shown = "\n".join(lines[:MARKDOWN_RESULT_LINES])
        more = len(lines) - MARKDOWN_RESULT_LINES
        fence = _fence(shown)
        out = [f"{fence}text", shown, fence]
        if more > 0:
            out.append(f"*… {more} more lines*")
        return [*out, ""]
    return ["*[image]*", ""]


# --- HTML --------------------------------------------------------------------------------------------------
_CSS = """
body{font:15px/1.45 system-ui,-apple-system,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}
body{color:#1d1d1f;background:#fff}
h1{font-size:1.4rem;margin-bottom:.2rem} .facts{color:#666;font-size:.85rem;margin:0 0 1rem}
.msg{margin:1rem 0;padding:.5rem .8rem;border-radius:6px;background:#f6f6f8}
.msg.user{background:#eef5ff} .msg.assistant{background:#f3faf2} .msg.agg,.summary{background:#f8f0fb}
.msg.tool{background:transparent;padding:0 .8rem;margin:.2rem 0} .msg.meta{opacity:.65}
.role{font-weight:600;font-size:.85rem;color:#444} .role .when{font-weight:400;color:#777}
.text{white-space:pre-wrap;word-wrap:break-word} .thinking{white-space:pre-wrap;color:#777;font-style:italic}
.call{font-family:ui-monospace,monospace;font-size:.85rem;margin:.2rem 0} .call b{color:#2456a6}
details{margin:.2rem 0 .2rem 1rem;font-size:.85rem}
summary{cursor:pointer;color:#555;font-family:ui-monospace,monospace}
details pre{white-space:pre-wrap;word-wrap:break-word;background:#fafafa;border:1px solid #eee;padding:.4rem}
.error summary{color:#b00} .agent{border-left:3px solid #e0b000;padding-left:.6rem;margin-left:.2rem}
.agent-label{color:#9a7800;font-size:.8rem} .compact{text-align:center;color:#888;font-size:.8rem}
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def html_page(head: dict[str, Any], msgs: Iterable[Message]) -> str:
    """The conversation as one self-contained HTML page (see the module docstring)."""
    title = head.get("title") or "(untitled)"
    facts = [head["key"], head.get("project_path") or head.get("project") or ""]
    if head.get("first_ts"):
        facts.append(f"{head['first_ts']} → {head.get('last_ts')}")
    facts.append(f"{head.get('messages', 0)} messages")
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="facts">{" · ".join(_e(f) for f in facts if f)}</p>',
    ]
    if head.get("summary"):
        summary = _e(head["summary"])
        out.append(
            f'<div class="msg summary"><div class="role">agg summary</div><div class="text">{summary}</div></div>'
        )
    agent: str | None = None
    for m in msgs:
        if m.agent != agent:
            if agent:
                out.append("</div>")
            if m.agent:
                label = f"subagent {m.agent}" + (f": {m.agent_label}" if m.agent_label else "")
                out.append(f'<div class="agent"><div class="agent-label">{_e(label)}</div>')
            agent = m.agent
        out.append(_html_message(m))
    if agent:
        out.append("</div>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _html_message(m: Message) -> str:
    if m.role == "compact":
        return f'<div class="compact">— {_e(m.blocks[0].text)} ({_e(m.ts or "")}) —</div>'
    cls = f"msg {m.role}" + (" meta" if m.meta else "")
    parts = [f'<div class="{_e(cls)}" id="{_e(m.id)}">']
    if m.role != "tool":
        when = f' <span class="when">{_e(_when(m.ts))}{" · " + _e(m.model) if m.model else ""}</span>'
        parts.append(f'<div class="role">{_e(m.role)}{" (injected)" if m.meta else ""}{when}</div>')
    for b in m.blocks:
        if b.kind == "text":
            parts.append(f'<div class="text">{_e(b.text)}</div>')
        elif b.kind == "thinking":
            parts.append(f'<div class="thinking">{_e(b.text)}</div>')
        elif b.kind == "tool_use":
            parts.append(f'<div class="call">⏺ <b>{_e(b.name or "?")}</b> {_e(b.text)}</div>')
        elif b.kind == "tool_result":
            first = first_line(b.text, "(no output)")
            body = b.text[:HTML_RESULT_CHARS] + ("\n…" if len(b.text) > HTML_RESULT_CHARS else "")
            err = ' class="error"' if b.error else ""
            parts.append(
                f"<details{err}><summary>↳ {_e(cut_width(first, 120))}</summary><pre>{_e(body)}</pre></details>"
            )
        elif b.kind == "image":
            parts.append('<div class="call">[image]</div>')
    parts.append("</div>")
    return "".join(parts)


# --- one line per event (agg tail --format text) -------------------------------------------------------
def message_preview(m: Message | None, limit: int = 200) -> str:
    """A message on one line: its text, tool calls as ``⏺ Name argument``, results as ``↳ first line``."""
    if m is None:
        return ""
    parts = []
    for b in m.blocks:
        if b.kind == "text":
            parts.append(b.text)
        elif b.kind == "thinking":
            parts.append("(thinking)")
        elif b.kind == "tool_use":
            parts.append(f"⏺ {b.name} {b.text}".rstrip())
        elif b.kind == "tool_result":
            parts.append(f"↳ {first_line(b.text)}".rstrip())
        else:
            parts.append(f"[{b.kind}]")
    return preview(_plain(" ".join(parts)), limit)


def envelope_line(env: dict[str, Any], m: Message | None, width: int = 160) -> str:
    """``seq time conv role [agent] preview`` for one event envelope and its message (None if it
    has no text to show: progress, snapshots…)."""
    ts = env.get("ts") or ""
    when = ts[11:19] if len(ts) >= 19 else "--:--:--"
    role = m.role if m is not None else str(env.get("type") or "?")
    if env.get("revision"):
        role += " (revised)"
    agent = f" [{env['agent']}]" if env.get("agent") else ""
    head = f"{env.get('seq')} {when} {str(env.get('conv'))[:8]} {role}{agent}"
    return cut_width(f"{head}  {message_preview(m)}".rstrip(), width)
