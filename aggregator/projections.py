"""Projections: what is derived from the event log, kept up to date incrementally, rebuildable.

The projector reads the global log from its checkpoint (``agg:proj:seq``) onwards — by seq,
never by rescanning files — folds the entries into per-conversation deltas, and applies them with
the :data:`~aggregator.scripts.PROJECT` script, which moves the checkpoint by compare-and-set in
the same atomic step. Several projectors may run at once (watcher, writer, ``agg ingest``): a
step that lost the race is simply recomputed from the new checkpoint.

Every update is order-insensitive within a step (sums, min, max, first-wins by seq), so applying
the log in steps of any size gives the same result; ``agg replay --rebuild`` drops the
projections and applies the whole log again, re-deriving each entry's facts from its stored
bytes, and the two digests match (``tests/test_projections_real.py``).

Per conversation (``agg:{c:K}:proj``): ``project``, ``events``, ``messages``, ``revisions``,
``entries``, ``first_ms``, ``last_ms``. Across conversations: ``agg:proj:recent``, the
:data:`RECENT_KEEP` most recent user/assistant messages by record time (ties by seq).
"""

from __future__ import annotations

import hashlib
import secrets
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from aggregator import defaults, scripts
from aggregator.errors import StoreError
from aggregator.parse import MESSAGE_TYPES, facts, loads
from aggregator.store import LogEntry, Store

REBUILD_LOCK_TTL_MS = 10 * 60 * 1000
"""A rebuild holds the projection lock this long per step at most (a crashed rebuild's lock lapses)."""

RECENT_KEEP = 1000
"""Messages kept in the recent-messages projection (``current.json`` shows at most this many)."""


@dataclass
class Delta:
    """Changes to one projection key (a conversation's hash, or a global key) from a run of entries."""

    incr: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    mins: dict[str, int] = field(default_factory=dict)
    maxs: dict[str, int] = field(default_factory=dict)
    setnx: dict[str, str] = field(default_factory=dict)
    zadds: list[tuple[int, bytes]] = field(default_factory=list)
    keep: int = 0

    def lo(self, name: str, value: int) -> None:
        if name not in self.mins or value < self.mins[name]:
            self.mins[name] = value

    def hi(self, name: str, value: int) -> None:
        if name not in self.maxs or value > self.maxs[name]:
            self.maxs[name] = value

    def zadd(self, score: int, member: bytes) -> None:
        self.zadds.append((score, member))

    def ops(self) -> list[tuple[str, Any, Any]]:
        out: list[tuple[str, Any, Any]] = [("incr", f, v) for f, v in self.incr.items() if v]
        out += [("min", f, v) for f, v in self.mins.items()]
        out += [("max", f, v) for f, v in self.maxs.items()]
        out += [("setnx", f, v) for f, v in self.setnx.items()]
        out += [("zadd", score, member) for score, member in self.zadds]
        if self.keep:
            out.append(("zkeep", "", self.keep))
        return out


def recent_member(seq: int, conv: str, eid: str, role: str) -> bytes:
    """Member of the recent-messages zset: sorts by seq among equal times."""
    return b"%015d " % seq + orjson.dumps([conv, eid, role])


def parse_recent_member(member: bytes) -> tuple[int, str, str, str]:
    """``(seq, conv, id, role)`` of a recent-messages member."""
    seq, rest = member.split(b" ", 1)
    conv, eid, role = orjson.loads(rest)
    return int(seq), conv, eid, role


def fold(
    deltas: dict[str, Delta],
    glob: dict[str, Delta],
    seq: int,
    env: dict[str, Any],
    fx: dict[str, Any],
    project: str,
) -> None:
    """Fold one log entry (its envelope and facts) into per-conversation and global deltas.

    ``glob`` maps global projection key names to their deltas.
    """
    conv = env["conv"]
    d = deltas.setdefault(conv, Delta())
    d.setnx.setdefault("project", project)
    d.incr["entries"] += 1
    if env["revision"]:
        d.incr["revisions"] += 1
    else:
        d.incr["events"] += 1
        if env["type"] in MESSAGE_TYPES:
            d.incr["messages"] += 1
            recent = glob.setdefault("recent", Delta(keep=RECENT_KEEP))
            tms0 = fx.get("tms")
            recent.zadd(tms0 if isinstance(tms0, int) else 0, recent_member(seq, conv, env["id"], env["type"]))
    tms = fx.get("tms")
    if isinstance(tms, int):
        d.lo("first_ms", tms)
        d.hi("last_ms", tms)


class Projector:
    """Keeps the projections of one store up to date."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.keys = store.keys
        self._project = store.client.register_script(scripts.PROJECT)

    def global_key(self, name: str) -> str:
        """Redis key of a global projection (e.g. ``recent``)."""
        return {"recent": self.keys.recent}[name]

    def global_keys(self) -> list[str]:
        """Every global projection key (dropped by a rebuild, covered by the digest)."""
        return [self.keys.recent]

    def checkpoint(self) -> int:
        return int(self.store.client.get(self.keys.proj_seq) or 0)

    def catch_up(self, token: str = "", rederive: bool = False) -> int:
        """Apply every log entry past the checkpoint; returns how many were applied.

        Returns early (0) while a rebuild holds the lock and ``token`` is not the rebuild's.
        """
        applied = 0
        while True:
            cp = self.checkpoint()
            entries = list(self.store.entries_after(cp, cp + defaults.PROJECT_BATCH_ENTRIES))
            if not entries:
                # seq may jump past a whole step: after Redis lost writes, aggregator.seqfloor
                # raises the sequence (tests/test_live_faults.py::test_restore_from_older_copy).
                later = self.store.log_batches(cp, count=1)
                if not later:
                    return applied
                entries = list(self.store.entries_after(cp, later[0][0] + defaults.PROJECT_BATCH_ENTRIES - 1))
            pairs = self._rederive(entries) if rederive else ((e.env(), orjson.loads(e.facts)) for e in entries)
            deltas: dict[str, Delta] = {}
            glob: dict[str, Delta] = {}
            for entry, (env, fx) in zip(entries, pairs, strict=True):
                fold(deltas, glob, entry.seq, env, fx, entry.project)
            res = self._apply(cp, entries[-1].seq, token, deltas, glob)
            if token:
                self.store.client.pexpire(self.keys.proj_lock, REBUILD_LOCK_TTL_MS)
            if res == b"locked":
                return applied
            if res == b"ok":
                applied += len(entries)

    def _apply(self, cp: int, upto: int, token: str, deltas: dict[str, Delta], glob: dict[str, Delta]) -> bytes:
        keys = [self.keys.proj_seq, self.keys.proj_lock]
        args: list[Any] = [cp, upto, token]
        targets = [(self.keys.proj(conv), d) for conv, d in deltas.items()]
        targets += [(self.global_key(name), d) for name, d in glob.items()]
        for key, d in targets:
            ops = d.ops()
            keys.append(key)
            args.append(len(ops))
            for op in ops:
                args += op
        res = self._project(keys=keys, args=args)
        return bytes(res[0])

    def _rederive(self, entries: list[LogEntry]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """Envelopes with facts recomputed from the stored bytes (what a rebuild trusts)."""
        envs = [e.env() for e in entries]
        by_conv: dict[str, list[str]] = defaultdict(list)
        for env, e in zip(envs, entries, strict=True):
            by_conv[env["conv"]].append(e.digest)
        pipe = self.store.client.pipeline(transaction=False)
        for conv, digests in by_conv.items():
            pipe.hmget(self.keys.body(conv), digests)
        bodies: dict[tuple[str, str], bytes] = {}
        for (conv, digests), raws in zip(by_conv.items(), pipe.execute(), strict=True):
            bodies.update(((conv, dg), raw) for dg, raw in zip(digests, raws, strict=True))
        for env, e in zip(envs, entries, strict=True):
            yield env, facts(loads(bodies[(env["conv"], e.digest)]), e.file_agent or None)

    # --- rebuild and digest ------------------------------------------------------------------
    def rebuild(self) -> dict[str, Any]:
        """Drop every projection and recompute it from the log; returns counts and the digest."""
        r = self.store.client
        token = secrets.token_hex(8)
        if not r.set(self.keys.proj_lock, token, nx=True, px=REBUILD_LOCK_TTL_MS):
            raise StoreError("another rebuild is running (lock held); try again later")
        try:
            convs = self.store.conversations()
            for i in range(0, len(convs), 500):
                r.delete(*(self.keys.proj(c) for c in convs[i : i + 500]))
            r.delete(*self.global_keys())
            r.set(self.keys.proj_seq, 0)
            applied = self.catch_up(token=token, rederive=True)
        finally:
            # Release only our own lock (compare-and-delete).
            r.eval(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
                1,
                self.keys.proj_lock,
                token,
            )
        return {
            "rebuilt": ["conversations"],
            "entries": applied,
            "conversations": len(convs),
            "seq": self.checkpoint(),
            "digest": self.digest(),
        }

    def digest(self) -> str:
        """SHA-256 over every projection, canonically ordered (same events → same digest)."""
        h = hashlib.sha256()
        for conv, fields in self.conversation_projections(sorted(self.store.conversations())):
            h.update(orjson.dumps([conv, sorted((k.decode(), v.decode()) for k, v in fields.items())]))
        for key in self.global_keys():
            h.update(orjson.dumps([key, self._dump(key)]))
        return h.hexdigest()

    def _dump(self, key: str) -> Any:
        r: Any = self.store.client
        kind = r.type(key)
        if kind == b"zset":
            return [[m.decode(), s] for m, s in r.zrange(key, 0, -1, withscores=True)]
        if kind == b"hash":
            return sorted((k.decode(), v.decode()) for k, v in r.hgetall(key).items())
        return None

    def conversation_projections(self, convs: Iterable[str]) -> Iterator[tuple[str, dict[bytes, bytes]]]:
        """``(conv, projection hash)`` for each of ``convs``, fetched in pipelined chunks."""
        convs = list(convs)
        for i in range(0, len(convs), 500):
            chunk = convs[i : i + 500]
            pipe = self.store.client.pipeline(transaction=False)
            for c in chunk:
                pipe.hgetall(self.keys.proj(c))
            yield from zip(chunk, pipe.execute(), strict=True)
