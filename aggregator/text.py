"""Human-readable text: message text, one-line previews, ``agg replay --format text``, times."""

from __future__ import annotations

import re
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
