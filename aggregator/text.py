"""Human-readable text: message text, one-line previews, ``agg replay --format text``, times, and text
measured in terminal columns (CJK characters take two)."""

from __future__ import annotations

import functools
import re
import unicodedata
from datetime import UTC, datetime
from typing import Any

PREVIEW_CHARS = 200
"""Characters of message text kept as a preview (``current.json``, ``--format text``)."""

_SPACE = re.compile(r"\s+")


def clean(text: str) -> str:
    """``text`` safe to encode as UTF-8 (lone surrogates become U+FFFD)."""
    return text.encode("utf-8", "replace").decode("utf-8") if not text.isascii() else text


def _block_text(block: Any) -> str:
    if isinstance(block, str):
        return block
    if not isinstance(block, dict):
        return ""
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        return text if isinstance(text, str) else ""
    if kind == "tool_use":
        return f"[tool_use {block.get('name', '?')}]"
    if kind == "tool_result":
        inner = block.get("content")
        body = inner if isinstance(inner, str) else " ".join(_block_text(b) for b in inner or [] if b)
        return f"[tool_result] {body}".strip()
    if kind == "thinking":
        return "[thinking]"
    return f"[{kind}]" if isinstance(kind, str) else ""


def message_text(obj: dict[str, Any]) -> str:
    """The text of a user/assistant record's ``message.content`` (blocks joined by spaces)."""
    msg = obj.get("message")
    content = msg.get("content") if isinstance(msg, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(t for t in (_block_text(b) for b in content) if t)
    return ""


def preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    """``text`` on one line, whitespace collapsed, cut to ``limit`` characters with ``…``."""
    one = _SPACE.sub(" ", text[: limit * 4]).strip()
    return clean(one if len(one) <= limit else one[: limit - 1] + "…")


def render(obj: Any, env: dict[str, Any]) -> str:
    """One line for ``agg replay --format text``."""
    ts = env.get("ts") or "-"
    kind = env.get("type") or "?"
    if isinstance(obj, dict) and kind in ("user", "assistant"):
        body = message_text(obj)
    elif isinstance(obj, dict):
        detail = obj.get("subtype") or obj.get("operation") or obj.get("summary") or obj.get("content") or ""
        body = detail if isinstance(detail, str) else ""
    else:
        body = ""
    agent = f" [{env['agent']}]" if env.get("agent") else ""
    return f"{ts:<24} {kind:<10}{agent} {preview(body, 300)}".rstrip()


def iso_ms(ms: int | None) -> str | None:
    """ISO-8601 UTC text of epoch milliseconds, as Claude Code writes times (None stays None)."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_iso() -> str:
    """The current time as :func:`iso_ms` text."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@functools.lru_cache(maxsize=4096)
def _char_width(ch: str) -> int:
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def display_width(text: str) -> int:
    """Columns ``text`` takes on a terminal (wide CJK characters 2, combining marks 0)."""
    if text.isascii():
        return len(text)
    return sum(_char_width(ch) for ch in text)


def cut_width(text: str, width: int, tail: str = "…") -> str:
    """``text`` cut to at most ``width`` columns, ending in ``tail`` if it was cut."""
    if display_width(text) <= width:
        return text
    room = width - display_width(tail)
    out, used = [], 0
    for ch in text:
        w = _char_width(ch)
        if used + w > room:
            break
        out.append(ch)
        used += w
    return "".join(out) + tail


def cut_left(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` columns by dropping its start (``…/the/end`` of a path)."""
    if display_width(text) <= width:
        return text
    return "…" + cut_width(text[::-1], width - 1, "")[::-1]


def pad_width(text: str, width: int, right: bool = False) -> str:
    """``text`` cut or padded with spaces to exactly ``width`` columns (``right``: aligned right)."""
    text = cut_width(text, width)
    pad = " " * (width - display_width(text))
    return pad + text if right else text + pad


def wrap_width(line: str, width: int) -> list[str]:
    """One line of text wrapped at spaces (or anywhere, for long words and CJK) to ``width`` columns."""
    if display_width(line) <= width:
        return [line]
    out: list[str] = []
    cur, used = "", 0
    for word in re.split(r"(\s+)", line):
        w = display_width(word)
        if used + w <= width:
            cur, used = cur + word, used + w
            continue
        if cur.strip():
            out.append(cur.rstrip())
        cur, used = "", 0
        if word.isspace():
            continue
        while display_width(word) > width:
            head = cut_width(word, width, "") or word[0]
            out.append(head)
            word = word[len(head) :]
        cur, used = word, display_width(word)
    if cur.strip():
        out.append(cur.rstrip())
    return out or [""]
