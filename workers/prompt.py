"""The default turn's prompt and answer format (shared by the turn and the offline provider)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from aggregator import defaults
from aggregator.text import preview

SYSTEM = (
    "You keep a short title and a rolling summary of a conversation between a user and an AI coding "
    "assistant. You get the previous title and summary (if any) and the newest messages. Answer with "
    'one JSON object and nothing else: {"title": "<at most 8 words>", "summary": "<at most 120 words: '
    'what the user is after, what has been done, what is still open>"}. Keep the previous title unless '
    "the topic clearly changed; fold the new messages into the previous summary. Messages marked "
    "[context] are tool results, command output and notices: text the user did not type."
)

CONTEXT = "context"
"""Role of a user message the user did not type (see :attr:`workers.history.Message.typed`)."""

_HEAD_TITLE = "Previous title: "
_HEAD_SUMMARY = "Previous summary: "
_HEAD_MESSAGES = "New messages (oldest first):"
_NONE = "(none)"
_MESSAGE = re.compile(r"^\[(user|assistant|context)\] ", re.ASCII)


def one_line(text: str) -> str:
    return " ".join(text.split())


def build(title: str, summary: str, messages: Sequence[tuple[str, str]]) -> str:
    """The user message of the default turn: previous state, then the new messages, oldest first.

    A message is ``[role] text`` (role ``user``, ``assistant`` or :data:`CONTEXT`); its further
    lines are indented by two spaces.
    """
    lines = [
        _HEAD_TITLE + (one_line(title) or _NONE),
        _HEAD_SUMMARY + (one_line(summary) or _NONE),
        _HEAD_MESSAGES,
    ]
    for role, text in messages:
        body = text.strip().splitlines() or [""]
        lines.append(f"[{role}] {body[0]}")
        lines += ["  " + line for line in body[1:]]
    return "\n".join(lines)


def parse(user: str) -> tuple[str, str, list[tuple[str, str]]] | None:
    """``(title, summary, messages)`` of a prompt made by :func:`build`, or None."""
    lines = user.split("\n")
    if len(lines) < 3 or not lines[0].startswith(_HEAD_TITLE) or not lines[1].startswith(_HEAD_SUMMARY):
        return None
    if lines[2] != _HEAD_MESSAGES:
        return None
    title = lines[0][len(_HEAD_TITLE) :]
    summary = lines[1][len(_HEAD_SUMMARY) :]
    messages: list[tuple[str, list[str]]] = []
    for line in lines[3:]:
        m = _MESSAGE.match(line)
        if m:
            messages.append((m.group(1), [line[m.end() :]]))
        elif messages:
            messages[-1][1].append(line[2:] if line.startswith("  ") else line)
    return (
        "" if title == _NONE else title,
        "" if summary == _NONE else summary,
        [(role, "\n".join(body)) for role, body in messages],
    )


def answer(title: str, summary: str) -> str:
    """The JSON answer the default turn asks for."""
    return json.dumps({"title": title, "summary": summary}, ensure_ascii=False)


def parse_answer(text: str, previous_title: str) -> tuple[str, str]:
    """``(title, summary)`` from a model's answer: the JSON object asked for, else the prose
    (as the summary, keeping the previous title)."""
    obj: object = None
    for candidate in (text, text[text.find("{") : text.rfind("}") + 1]):
        try:
            obj = json.loads(candidate)
            break
        except ValueError:
            continue
    if isinstance(obj, dict):
        title, summary = obj.get("title"), obj.get("summary")
        if isinstance(summary, str):
            t = title if isinstance(title, str) and title.strip() else previous_title
            return _title(t), _summary(summary)
    first = text.strip().splitlines()[0] if text.strip() else ""
    return _title(previous_title or first), _summary(text)


def _title(text: str) -> str:
    return preview(text.strip().strip('"'), defaults.TURN_TITLE_MAX_CHARS)


def _summary(text: str) -> str:
    return preview(text, defaults.TURN_SUMMARY_MAX_CHARS)
