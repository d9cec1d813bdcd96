"""What a turn reads: a conversation's entries after the last turn, newest first, within a budget.

The conversation's timeline (``agg:{c:K}:tl``) indexes the log batches holding its entries, so a
turn reads only its own conversation's batches, from the newest back to the last seq the previous
turn saw — and stops early once the prompt budget is full: a first turn on a conversation of ten
thousand events reads its last few batches, not all of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from aggregator.parse import MESSAGE_TYPES, loads
from aggregator.store import LogEntry, Store
from aggregator.text import message_text

TURN_TYPE = "agg-turn"
"""``type`` of the records turns append (never read back as conversation content)."""

BATCHES_PER_READ = 16
TOOL_RESULT_MAX_CHARS = 200


@dataclass
class Message:
    """A user or assistant message as a turn sees it."""

    seq: int
    role: str
    text: str
    ts: str | None
    typed: bool = False
    """True for a user message the user typed: a real prompt or a slash command, as the title
    rule judges it (:func:`aggregator.titles.prompt_candidate`) — not a tool result, a command's
    output or caveat, a notification or anything else Claude Code writes as ``user``."""


@dataclass
class History:
    """The new part of a conversation (entries with seq > ``after_seq``), turn events excluded."""

    after_seq: int
    upto_seq: int = 0
    """Newest seq seen (0: nothing new)."""
    newest_ms: int | None = None
    """Newest record time among the entries read (None if none had one)."""
    entries: int = 0
    """New entries read (all of them unless the budget filled first)."""
    messages: list[Message] = field(default_factory=list)
    """User/assistant messages of the main thread (subagents' only if the main thread has none),
    oldest first, the newest ones kept within the budget."""
    project: str = ""
    truncated: bool = False
    """True if older new messages did not fit the budget."""


def _newest_first(store: Store, conv: str, after_seq: int) -> Iterator[tuple[LogEntry, dict[str, Any]]]:
    """``(entry, envelope)`` of the conversation's entries with seq > ``after_seq``, newest first."""
    before: int | None = None
    while True:
        firsts = store.timeline_before(conv, before, BATCHES_PER_READ)
        if not firsts:
            return
        for first, entries in zip(firsts, store.batches_at(firsts), strict=True):
            for entry in reversed(entries):
                if entry.seq <= after_seq:
                    return
                env = entry.env()
                if env["conv"] == conv:
                    yield entry, env
            if first <= after_seq:
                return
        if len(firsts) < BATCHES_PER_READ:
            return
        before = firsts[-1]


@dataclass
class _Picker:
    """Fills the budget with message texts, newest first, fetching bodies in small batches."""

    store: Store
    conv: str
    budget_chars: int
    message_max_chars: int
    picked: list[Message] = field(default_factory=list)
    pending: list[tuple[LogEntry, dict[str, Any]]] = field(default_factory=list)
    used: int = 0
    full: bool = False

    def add(self, entry: LogEntry, env: dict[str, Any]) -> None:
        self.pending.append((entry, env))
        if len(self.pending) >= 32:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        bodies = self.store.bodies([(self.conv, e.digest) for e, _ in self.pending])
        for (entry, env), body in zip(self.pending, bodies, strict=True):
            text = _text(body, self.message_max_chars)
            if not text:
                continue
            if self.used + len(text) > self.budget_chars:
                if self.picked:
                    self.full = True
                    break
                text = text[: max(1, self.budget_chars)]
            self.used += len(text)
            fx = orjson.loads(entry.facts)  # the ingest parser's judgement of the record: p / c
            typed = env["type"] == "user" and ("p" in fx or "c" in fx)
            self.picked.append(Message(entry.seq, env["type"], text, env["ts"], typed))
        self.pending.clear()


def read_new(store: Store, conv: str, after_seq: int, *, budget_chars: int, message_max_chars: int) -> History:
    """The conversation's entries after ``after_seq``, newest messages first into the budget."""
    h = History(after_seq)
    picker = _Picker(store, conv, budget_chars, message_max_chars)
    # subagents' messages are used only when the main thread has none (e.g. its file is gone)
    fallback = _Picker(store, conv, budget_chars, message_max_chars)
    seen_ids: set[str] = set()
    for entry, env in _newest_first(store, conv, after_seq):
        if env["type"] == TURN_TYPE:
            continue
        h.entries += 1
        if not h.upto_seq:
            h.upto_seq = entry.seq
            h.project = entry.project
        if h.newest_ms is None:
            tms = orjson.loads(entry.facts).get("tms")
            h.newest_ms = tms if isinstance(tms, int) else None
        # a revision is newer than its original: keep the newest version of each message only;
        # subagents' messages are left out (their outcome reaches the main thread as a tool result)
        if env["type"] in MESSAGE_TYPES and env["id"] not in seen_ids:
            seen_ids.add(env["id"])
            if env["agent"] is None:
                picker.add(entry, env)
                if picker.full:
                    break
            elif len(fallback.pending) < 64:
                fallback.pending.append((entry, env))
    picker.flush()
    if not picker.picked:
        fallback.flush()
        picker = fallback
    h.truncated = picker.full
    h.messages = picker.picked[::-1]
    return h


def _text(body: bytes | None, limit: int) -> str:
    if body is None:
        return ""
    try:
        obj = loads(body)
    except ValueError:
        return ""
    if not isinstance(obj, dict):
        return ""
    text = message_text(obj).strip()
    if text.startswith("[tool_result]"):
        limit = min(limit, TOOL_RESULT_MAX_CHARS)
    return text if len(text) <= limit else text[: limit - 1] + "…"
