"""An independent reading of transcript files by docs/design.md §3's rules, for tests to compare against.

Written against the design text only — stdlib ``json``, its own file walk — sharing no code with
``aggregator`` so that a mistake in the product is not repeated here.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _no_constants(name: str) -> Any:
    raise ValueError(name)


def _finite(text: str) -> float:
    v = float(text)
    if math.isinf(v):
        raise ValueError(text)
    return v


def _depth(obj: Any) -> int:
    if isinstance(obj, dict):
        return 1 + max((_depth(v) for v in obj.values()), default=0)
    if isinstance(obj, list):
        return 1 + max((_depth(v) for v in obj), default=0)
    return 0


def _ok_id(v: Any) -> bool:
    return (
        isinstance(v, str) and 0 < len(v) <= 256 and v.isprintable() and not any(0xD800 <= ord(c) <= 0xDFFF for c in v)
    )


def session_of(path: Path) -> str | None:
    """The session a file belongs to, from its place in the tree (docs/design.md §3)."""
    parts = path.parts
    if "subagents" in parts[:-1]:
        i = len(parts) - 1 - list(reversed(parts[:-1])).index("subagents") - 1
        return parts[i - 1]
    stem = path.name[: -len(".jsonl")]
    return None if stem.startswith("agent-") else stem


def transcripts(root: Path) -> list[Path]:
    out = []
    for p in sorted(root.rglob("*.jsonl")):
        if "subagents" in p.parts and not p.name.startswith("agent-"):
            continue
        out.append(p)
    return out


@dataclass
class Expected:
    events: int = 0
    duplicates: int = 0
    revisions: int = 0
    rejected: int = 0
    lines: int = 0
    conversations: set[str] = field(default_factory=set)
    # (conv, id) -> list of versions' bytes, in order
    versions: dict[tuple[str, str], list[bytes]] = field(default_factory=dict)
    # conv -> event ids in order of first appearance
    order: dict[str, list[str]] = field(default_factory=dict)


def read(paths: list[Path]) -> Expected:
    """Expected store contents after ingesting ``paths`` in this order."""
    exp = Expected()
    for path in paths:
        file_session = session_of(path)
        data = path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        for raw in complete.split(b"\n")[:-1]:
            if not raw.strip():
                continue
            exp.lines += 1
            try:
                obj = json.loads(raw.decode("utf-8"), parse_constant=_no_constants, parse_float=_finite)
                if _depth(obj) > 1000:
                    raise ValueError("deep")
            except (ValueError, UnicodeDecodeError, RecursionError):
                exp.rejected += 1
                continue
            if not isinstance(obj, dict):
                exp.rejected += 1
                continue
            sid = obj.get("sessionId")
            conv = sid if _ok_id(sid) else file_session
            if conv is None:
                exp.rejected += 1
                continue
            conv = os.fsencode(conv).decode("utf-8", "backslashreplace")
            uid = obj.get("uuid")
            eid = uid if _ok_id(uid) else "h:" + hashlib.sha256(raw).hexdigest()[:32]
            seen = exp.versions.get((conv, eid))
            if seen is None:
                exp.versions[(conv, eid)] = [raw]
                exp.order.setdefault(conv, []).append(eid)
                exp.events += 1
                if obj.get("type") in ("user", "assistant"):
                    exp.conversations.add(conv)
            elif raw in seen:
                exp.duplicates += 1
            else:
                seen.append(raw)
                exp.revisions += 1
    return exp


# --- usage (docs/design.md §6), computed from the files alone --------------------------------------------
USAGE_NAMES = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
USAGE_OUT = ("input", "output", "cache_read", "cache_creation")


def project_of(path: Path) -> str:
    """The project directory a transcript sits in (the directory under ``projects/``)."""
    parts = path.parts
    if "subagents" in parts[:-1]:
        i = len(parts) - 1 - list(reversed(parts[:-1])).index("subagents") - 1
        return parts[i - 2]
    return path.parent.name


def _tokens(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return 0
    if isinstance(v, float) and not v.is_integer():
        return 0
    return max(0, int(v))


def _utc_day(ts: Any) -> str:
    from datetime import UTC, datetime

    if not isinstance(ts, str):
        return ""
    try:
        d = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return ""
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.astimezone(UTC).date().isoformat()


@dataclass
class UsageTable:
    """Expected usage: sums per conversation / project / model / day and in total."""

    by: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)


def usage(paths: list[Path]) -> UsageTable:
    """Usage by docs/design.md §6 after ingesting ``paths`` in this order: each (message.id, requestId)
    once — a missing requestId is its own value — with each field's largest value, toward the
    conversation/project/model/day where the response was first seen; ``<synthetic>`` skipped;
    only top-level assistant records (never copies inside ``progress``)."""
    responses: dict[tuple[Any, ...], dict[str, Any]] = {}
    for path in paths:
        file_session = session_of(path)
        project = project_of(path)
        data = path.read_bytes()
        for raw in data[: data.rfind(b"\n") + 1].split(b"\n")[:-1]:
            try:
                obj = json.loads(raw.decode("utf-8"), parse_constant=_no_constants, parse_float=_finite)
            except (ValueError, UnicodeDecodeError, RecursionError):
                continue
            if not isinstance(obj, dict) or obj.get("type") != "assistant":
                continue
            sid = obj.get("sessionId")
            conv = sid if _ok_id(sid) else file_session
            msg = obj.get("message")
            if conv is None or not isinstance(msg, dict) or not isinstance(msg.get("usage"), dict):
                continue
            if msg.get("model") == "<synthetic>":
                continue
            mid = msg.get("id") if _ok_id(msg.get("id")) else None
            rid = obj.get("requestId") if _ok_id(obj.get("requestId")) else None
            if mid is None:
                uid = obj.get("uuid")
                key: tuple[Any, ...] = ("event", conv, uid if _ok_id(uid) else hashlib.sha256(raw).hexdigest()[:32])
            else:
                key = ("response", mid, rid)
            got = [_tokens(msg["usage"].get(n)) for n in USAGE_NAMES]
            if key not in responses:
                model = msg.get("model")
                responses[key] = {
                    "conversation": conv,
                    "project": project,
                    "model": model if isinstance(model, str) else "",
                    "day": _utc_day(obj.get("timestamp")),
                    "max": [0, 0, 0, 0],
                }
            r = responses[key]
            r["max"] = [max(a, b) for a, b in zip(r["max"], got, strict=True)]
    table = UsageTable(by={d: {} for d in ("conversation", "project", "model", "day")})
    table.total = dict.fromkeys((*USAGE_OUT, "responses"), 0)
    for r in responses.values():
        for dim, sums in table.by.items():
            row = sums.setdefault(r[dim], dict.fromkeys((*USAGE_OUT, "responses"), 0))
            for name, v in zip(USAGE_OUT, r["max"], strict=True):
                row[name] += v
            row["responses"] += 1
        for name, v in zip(USAGE_OUT, r["max"], strict=True):
            table.total[name] += v
        table.total["responses"] += 1
    return table


# --- search (docs/design.md §9), decided from the files alone ---------------------------------------------
_CJK = (
    (0x3040, 0x30FF),  # hiragana, katakana
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),  # ideographs
    (0xF900, 0xFAFF),
    (0xAC00, 0xD7AF),  # hangul syllables
    (0xFF66, 0xFF9F),  # half-width katakana
    (0x20000, 0x2FA1F),
)


def _is_cjk(ch: str) -> bool:
    return any(lo <= ord(ch) <= hi for lo, hi in _CJK)


def words(text: str) -> list[str]:
    """The words of ``text`` as the search contract defines them: runs of letters and digits, each
    CJK character a word of its own, compared case-insensitively."""
    out: list[str] = []
    cur: list[str] = []
    for ch in text:
        if _is_cjk(ch):
            if cur:
                out.append("".join(cur).casefold())
                cur = []
            out.append(ch)
        elif ch.isalnum():
            cur.append(ch)
        elif cur:
            out.append("".join(cur).casefold())
            cur = []
    if cur:
        out.append("".join(cur).casefold())
    return out


def holds_phrase(text: str, phrase: str) -> bool:
    """Whether the words of ``phrase`` appear in ``text`` one after the other."""
    want = words(phrase)
    have = words(text)
    return any(have[i : i + len(want)] == want for i in range(len(have) - len(want) + 1))


def message_texts(paths: list[Path]) -> dict[tuple[str, str], tuple[str, str]]:
    """(conversation, event id) → (role, text) of every user and assistant message, newest version:
    a user's string content or text blocks; the assistant's text and thinking blocks (tool calls,
    tool results and images are not message text)."""
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for (conv, eid), versions in read(paths).versions.items():
        obj = json.loads(versions[-1].decode("utf-8"))
        role = obj.get("type")
        msg = obj.get("message")
        if role not in ("user", "assistant") or not isinstance(msg, dict):
            continue
        content = msg.get("content")
        if isinstance(content, str):
            texts = [content]
        elif isinstance(content, list):
            texts = []
            for b in content:
                if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str):
                    texts.append(b["text"])
                elif isinstance(b, dict) and b.get("type") == "thinking" and isinstance(b.get("thinking"), str):
                    texts.append(b["thinking"])
        else:
            texts = []
        text = "\n".join(texts)
        if text.strip():
            out[(conv, eid)] = (role, text)
    return out
