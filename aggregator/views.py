"""Read models built from the projections: what ``current.json`` and ``agg status`` show.

Nothing here scans files or the whole log: conversations come from their projection hashes,
recent messages from the recent-messages projection plus one body fetch per message shown.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import orjson

from aggregator.config import active_minutes as active_minutes_setting
from aggregator.parse import loads
from aggregator.projections import USAGE_FIELDS
from aggregator.store import Store
from aggregator.text import iso_ms, message_text, preview

LINK_KINDS = {"resumed": "resumed_from", "compacted": "compacted_from", "forked": "forked_from"}
"""``from.<kind>.<conv>`` projection fields → the view's list of conversation keys."""


def _int(fields: dict[bytes, bytes], name: str) -> int:
    raw = fields.get(name.encode())
    return int(raw) if raw is not None else 0


def _text(fields: dict[bytes, bytes], name: str) -> str | None:
    raw = fields.get(name.encode())
    return raw.decode() if raw is not None else None


def _subagents(fields: dict[bytes, bytes]) -> list[dict[str, Any]]:
    out = []
    for k, v in sorted(fields.items()):
        if k.startswith(b"agent."):
            kind, description = orjson.loads(v) if v else (None, None)
            out.append({"id": k[6:].decode(), "type": kind, "description": description})
    return out


def _links(fields: dict[bytes, bytes]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {name: [] for name in LINK_KINDS.values()}
    for k in sorted(fields):
        if k.startswith(b"from."):
            kind, _, conv = k[5:].decode().partition(".")
            if kind in LINK_KINDS:
                out[LINK_KINDS[kind]].append(conv)
    return out


def is_active(last_ms: int | None, now_ms: int, active_minutes: float) -> bool:
    """Whether a conversation whose newest record is at ``last_ms`` is active at ``now_ms``: a
    record at most ``active_minutes`` old."""
    return last_ms is not None and now_ms - last_ms <= active_minutes * 60_000


def conversation_view(
    conv: str, fields: dict[bytes, bytes], *, now_ms: int, active_minutes: float | None = None
) -> dict[str, Any]:
    """One conversation as ``current.json`` lists it (docs/design.md §5), from its projection hash.

    ``title`` is the first title source the conversation has (:mod:`aggregator.titles`); ``active``
    means a record at most ``active_minutes`` old (default: :func:`aggregator.config.active_minutes`).
    """
    minutes = active_minutes_setting() if active_minutes is None else active_minutes
    last_ms = _int(fields, "last_ms") if b"last_ms" in fields else None
    return {
        "key": conv,
        "project": _text(fields, "project"),
        "title": _text(fields, "title"),
        "summary": _text(fields, "summary"),
        "first_ts": iso_ms(_int(fields, "first_ms")) if b"first_ms" in fields else None,
        "last_ts": iso_ms(last_ms),
        "events": _int(fields, "events"),
        "messages": _int(fields, "messages"),
        "usage": {f: _int(fields, f"usage_{f}") for f in USAGE_FIELDS},
        "responses": _int(fields, "usage_responses"),
        "active": is_active(last_ms, now_ms, minutes),
        "subagents": _subagents(fields),
        **_links(fields),
    }


def conversation_views(
    store: Store,
    convs: Iterable[str] | None = None,
    *,
    now_ms: int | None = None,
    active_minutes: float | None = None,
) -> list[dict[str, Any]]:
    """Conversations (all, or ``convs``) that have at least one user or assistant message."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    active_minutes = active_minutes_setting() if active_minutes is None else active_minutes
    chosen = store.conversations() if convs is None else list(convs)
    return [
        conversation_view(conv, fields, now_ms=now_ms, active_minutes=active_minutes)
        for conv, fields in store.projections(chosen)
        if _int(fields, "messages") > 0
    ]


Previews = dict[tuple[str, str, str], dict[str, Any]]
"""Messages built earlier, by ``(conv, id, digest of the version previewed)``."""


def recent_messages(store: Store, limit: int = 1000, known: Previews | None = None) -> list[dict[str, Any]]:
    """The ``limit`` most recent user/assistant messages, oldest first, with text previews.

    Each: ``seq``, ``conv``, ``id``, ``role``, ``ts``, ``preview`` (of the newest revision).
    With ``known`` (the writer's incremental path), a message whose newest version is the one
    it was built from is reused as it is — a revision gives it a new digest, so it is rebuilt —
    and only the other messages' bodies are fetched; ``known`` is then replaced by the messages
    returned. The log is not read: which versions are newest is the store's ``cur`` index.
    """
    recent = store.recent_messages(limit)
    refs = [(m.conv, m.id) for m in recent]
    if known is None:
        digests: list[str | None] = [None] * len(refs)
        bodies = dict(zip(refs, store.newest_bodies(refs), strict=True))
    else:
        digests = store.newest_digests(refs)
        wanted = [(c, d) for (c, i), d in zip(refs, digests, strict=True) if d and (c, i, d) not in known]
        by_digest = dict(zip(wanted, store.bodies(wanted), strict=True))
        bodies = {(c, i): by_digest.get((c, d)) if d else None for (c, i), d in zip(refs, digests, strict=True)}
    out = []
    built: Previews = {}
    for m, digest in zip(recent, digests, strict=True):
        kept = known.get((m.conv, m.id, digest)) if known is not None and digest else None
        if kept is not None:
            out.append(kept)
            built[(m.conv, m.id, digest or "")] = kept
            continue
        raw = bodies[(m.conv, m.id)]
        try:
            text = message_text(loads(raw)) if raw is not None else ""
        except ValueError:
            text = ""
        out.append(
            {
                "seq": m.seq,
                "conv": m.conv,
                "id": m.id,
                "role": m.role,
                "ts": iso_ms(m.tms) if m.tms else None,
                "preview": preview(text),
            }
        )
        if digest:
            built[(m.conv, m.id, digest)] = out[-1]
    if known is not None:
        known.clear()
        known.update(built)
    return out
