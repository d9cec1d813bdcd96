"""An independent reading of transcript files by DESIGN §3's rules, for tests to compare against.

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
    """The session a file belongs to, from its place in the tree (DESIGN §3)."""
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
