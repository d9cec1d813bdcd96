"""Hand-made transcript records and files for tests (shapes as Claude Code writes them)."""

from __future__ import annotations

import json
import uuid as uuidlib
from pathlib import Path
from typing import Any

PROJECT = "-home-user-proj"


def uid(name: str) -> str:
    """A stable UUID for a readable name."""
    return str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, name))


def ts(minute: int, second: int = 0, day: int = 1) -> str:
    return f"2026-03-{day:02d}T10:{minute:02d}:{second:02d}.000Z"


def _record(session: str, name: str, rtype: str, msg: dict[str, Any], parent: str | None, at: str) -> dict[str, Any]:
    """The fields every user / assistant record of a main transcript carries."""
    return {
        "parentUuid": parent,
        "isSidechain": False,
        "userType": "external",
        "cwd": "/home/user/proj",
        "sessionId": session,
        "version": "2.1.39",
        "type": rtype,
        "message": msg,
        "uuid": uid(name),
        "timestamp": at,
    }


def user(
    session: str, name: str, content: Any, *, parent: str | None = None, at: str | None = None, **kw: Any
) -> dict[str, Any]:
    rec = _record(session, name, "user", {"role": "user", "content": content}, parent, at or ts(0))
    rec.update(kw)
    return rec


def assistant(
    session: str,
    name: str,
    mid: str | None,
    rid: str | None,
    usage: dict[str, int] | None,
    *,
    model: str = "claude-opus-4-6",
    parent: str | None = None,
    at: str | None = None,
    stop: str | None = None,
    **kw: Any,
) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "model": model,
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": f"reply {name}"}],
        "stop_reason": stop,
        "stop_sequence": None,
    }
    if mid is not None:
        msg["id"] = mid
    if usage is not None:
        msg["usage"] = usage
    rec = _record(session, name, "assistant", msg, parent, at or ts(1))
    if rid is not None:
        rec["requestId"] = rid
    rec.update(kw)
    return rec


def tokens(inp: int, out: int, cr: int = 0, cc: int = 0) -> dict[str, int]:
    return {
        "input_tokens": inp,
        "output_tokens": out,
        "cache_read_input_tokens": cr,
        "cache_creation_input_tokens": cc,
    }


def line(rec: dict[str, Any]) -> bytes:
    return json.dumps(rec, separators=(",", ":")).encode() + b"\n"


def write(path: Path, records: list[dict[str, Any]], *, append: bool = False) -> Path:
    """Write (or append) records as JSONL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab" if append else "wb") as f:
        for rec in records:
            f.write(line(rec))
    return path


def session_file(root: Path, session: str, project: str = PROJECT) -> Path:
    return root / project / f"{session}.jsonl"


def subagent_file(root: Path, session: str, agent: str, project: str = PROJECT) -> Path:
    return root / project / session / "subagents" / f"agent-{agent}.jsonl"
