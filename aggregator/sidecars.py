"""Subagent sidecars: ``<session>/subagents/agent-<id>.meta.json`` as events of their conversation.

Claude Code 2.1.x writes, next to a subagent's transcript, a small JSON object describing it
(``agentType``, ``description``, ``toolUseId``, sometimes ``spawnDepth`` or ``model``). It is not a
transcript line, but the subagent's type is part of the conversation projection, and projections
may only come from the event log (``agg replay --rebuild`` must reproduce them). So the sidecar's
content is stored *as an event*: whenever the tailer syncs a subagent transcript it also looks at
the sidecar, and if the sidecar is new or changed it commits one synthesized line::

    {"type":"agent-meta","uuid":"agent-meta-<agentId>","sessionId":<session>,"agentId":<agentId>,
     "meta":<the sidecar's JSON object>}

through the ordinary ingest path, under a cursor of its own (``kind`` ``sidecar``). The same
sidecar again is a duplicate; a changed one is a revision (same id, other bytes), so the newest
wins. A sidecar that is not a JSON object, or is larger than
:data:`~aggregator.defaults.MAX_SIDECAR_BYTES`, is recorded as a rejection with its path.
"""

from __future__ import annotations

import os
import secrets
import stat

from aggregator import defaults
from aggregator.errors import CursorConflict
from aggregator.layout import SUFFIX, SourceFile
from aggregator.parse import Event, Rejection, digest_of, dumps, loads, parse_line
from aggregator.store import CommitResult, Store

META_SUFFIX = ".meta.json"
EVENT_TYPE = "agent-meta"


def sidecar_of(sf: SourceFile) -> SourceFile | None:
    """The sidecar that may sit next to subagent transcript ``sf`` (None for other files)."""
    if sf.kind != "subagent" or not sf.agent or not sf.session or not sf.path.endswith(SUFFIX):
        return None
    return SourceFile(sf.path[: -len(SUFFIX)] + META_SUFFIX, sf.project, sf.session, sf.agent, "sidecar")


def sidecar_line(session: str, agent: str, meta: dict[str, object]) -> bytes:
    """The line stored for a sidecar's content (deterministic: same content, same bytes)."""
    return dumps(
        {"type": EVENT_TYPE, "uuid": f"{EVENT_TYPE}-{agent}", "sessionId": session, "agentId": agent, "meta": meta}
    )


class Sidecars:
    """Commits new or changed sidecars; remembers what it saw to skip unchanged ones without I/O."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._seen: dict[str, tuple[int, int, int, int]] = {}

    def sync(self, transcript: SourceFile) -> CommitResult | None:
        """Store the sidecar of ``transcript`` if it has one that is not stored yet."""
        sc = sidecar_of(transcript)
        if sc is None:
            return None
        try:
            st = os.stat(sc.path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        ident = (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)
        if self._seen.get(sc.path) == ident:
            return None
        (fid,), (cur,) = self.store.cursors_for([sc.path])
        if cur is not None and (cur.ino, cur.dev, cur.size, cur.mtime) == ident:
            self._seen[sc.path] = ident
            return None
        item = self._read(sc, st.st_size)
        if item is None:
            return None
        size = st.st_size
        cursor = self.store.cursor_fields(sc, st, off=size, size=size, mtime=st.st_mtime_ns, tok=secrets.token_hex(8))
        try:
            res = self.store.commit(sc, fid, cur.tok if cur else "", cursor, [item])
        except CursorConflict:
            # Race: another process committed this sidecar meanwhile; its line is the same event
            # (a duplicate if the content is the same), so there is nothing left to do.
            return None
        self._seen[sc.path] = ident
        return res

    def _read(self, sc: SourceFile, size: int) -> Event | Rejection | None:
        assert sc.session and sc.agent
        if size > defaults.MAX_SIDECAR_BYTES:
            reason = f"sidecar too large ({size} bytes > {defaults.MAX_SIDECAR_BYTES})"
            return Rejection(0, size, reason, digest_of(sc.path.encode("utf-8", "surrogateescape")), b"")
        try:
            with open(sc.path, "rb") as f:
                raw = f.read(defaults.MAX_SIDECAR_BYTES + 1)
        except OSError:
            return None
        try:
            obj = loads(raw)
        except ValueError as e:
            obj = e
        if not isinstance(obj, dict):
            why = str(obj) if isinstance(obj, ValueError) else f"not a JSON object ({type(obj).__name__})"
            return Rejection(0, len(raw), f"sidecar: {why}", digest_of(raw), raw[: defaults.REJECT_PREFIX_BYTES])
        parsed = parse_line(sidecar_line(sc.session, sc.agent, obj), 0, sc)
        assert isinstance(parsed, Event)
        return parsed
