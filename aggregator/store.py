"""The event store: committing batches, reading cursors, the log, conversations and counts.

A batch is committed in two steps on one connection:

1. the lines' bytes are written with ``HSET <conv body> <digest> <bytes>`` — idempotent and
   content-addressed, so writing them again, or writing them and then crashing, changes nothing
   that is visible (a body nobody references is never read);
2. once Redis has acknowledged them, the :data:`~aggregator.scripts.INGEST` script, given only
   ids, digests and small metadata, dedupes, appends the entries, assigns ``seq``/``conv_seq``,
   advances the file cursor by compare-and-set, counts and publishes — atomically.

Keeping the bulk bytes out of the script is what lets ingest run near the speed of plain
pipelined writes (``scripts/bench_ingest.py``): Redis spends far more CPU per byte passed
through a Lua call than per byte of an ordinary HSET. :meth:`Store.commit` does one batch and
waits; ingest streams many through a :class:`CommitStream`, which keeps several in flight.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import hiredis
import orjson

from aggregator import defaults, scripts
from aggregator.errors import CursorConflict, NotFound, StoreReset
from aggregator.keys import Keys
from aggregator.layout import SourceFile, resolved
from aggregator.parse import Event, Rejection, dumps

if TYPE_CHECKING:  # imported where used: `agg status` and `agg usage` read a Store without redis-py
    import redis

    from aggregator.seqfloor import SeqFloor

STAT_FIELDS = ("events", "revisions", "duplicates", "rejected", "lines", "conversations", "batches", "forgotten")


FORGET_TYPE = "agg-forget"
"""Type of the log entry ``agg forget`` appends (:data:`~aggregator.scripts.FORGET`)."""

FORGET_DIGEST = "0" * 32
"""Digest of an ``agg-forget`` entry (it has no bytes), and of an entry a forget blanked."""

_GLOB = re.compile(r"[\\*?\[\]]")
"""Characters a ``MATCH`` pattern reads as wildcards (escaped to match themselves)."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """Committed position in one file, plus what identifies the file's content."""

    off: int = 0
    tok: str = ""
    ino: int = 0
    dev: int = 0
    size: int = 0
    mtime: int = 0
    fp: str = ""
    fplen: int = 0
    tfp: str = ""
    path: str = ""


@dataclass(frozen=True, slots=True)
class CommitResult:
    added: int
    revisions: int
    duplicates: int
    rejected: int
    first_seq: int
    last_seq: int
    forgotten: int = 0
    """Lines dropped because their conversation was forgotten at or after their time (``agg forget``)."""


@dataclass(slots=True)
class LogEntry:
    """One entry of the global log (the first version of an event, or a revision of it)."""

    seq: int
    envelope: bytes
    digest: str
    facts: bytes
    file: str
    project: str
    file_agent: str

    def env(self) -> dict[str, Any]:
        return dict(orjson.loads(self.envelope))

    @property
    def is_forget(self) -> bool:
        """An ``agg-forget`` entry: a conversation was forgotten here (no bytes, no facts)."""
        return self.digest == FORGET_DIGEST and b'"type":"agg-forget"' in self.envelope


@dataclass(frozen=True, slots=True)
class Forgotten:
    """What :meth:`Store.forget` removed of one conversation."""

    conv: str
    seq: int
    """The seq of its ``agg-forget`` log entry."""
    at_ms: int
    """The tombstone: lines dated at or before it are never stored again."""
    events: int
    revisions: int
    duplicates: int
    lines: int
    conversations: int
    """1 if it counted as a conversation (it had a user or assistant record), else 0."""
    batches_deleted: int
    batches_patched: int


@dataclass(frozen=True, slots=True)
class FileState:
    """What :meth:`Store.file_states` reads of one file's cursor."""

    fid: str
    host: str | None
    """The host that committed it (None if the cursor has none)."""
    path: str | None
    """The file's path as committed (None if the cursor has none)."""
    off: int


@dataclass(frozen=True, slots=True)
class RecentMessage:
    """One member of the recent-messages projection (``agg:proj:recent``)."""

    seq: int
    conv: str
    id: str
    role: str
    tms: int
    """Record time (ms; 0 if the record had none)."""


def recent_member(seq: int, conv: str, eid: str, role: str) -> bytes:
    """Member of the recent-messages zset: sorts by seq among equal times."""
    return b"%015d " % seq + orjson.dumps([conv, eid, role])


def parse_recent_member(member: bytes) -> tuple[int, str, str, str]:
    """``(seq, conv, id, role)`` of a recent-messages member."""
    seq, rest = member.split(b" ", 1)
    conv, eid, role = orjson.loads(rest)
    return int(seq), conv, eid, role


def newest_digest(versions: bytes | None) -> str | None:
    """The newest digest of an event's versions (its ``cur`` field: digests, newest last)."""
    return versions[-32:].decode() if versions else None


@dataclass
class Store:
    """agg's event store in one Redis database.

    Every module that reads what the store holds — events and their bytes, the log, timelines,
    cursors, counters, the projections' hashes — reads it through the methods here, which decode
    the formats :mod:`aggregator.keys` documents into typed values; only the projector and the
    turn workers read the keys they write themselves.
    """

    client: redis.Redis
    keys: Keys = field(default_factory=Keys)
    host: str = ""
    expect_id: str = ""
    """The store identity every commit expects (:meth:`identity`); "" = commits are not checked."""
    floor: SeqFloor | None = None
    """The highest seq of this store some commit of this process has handed out (``agg ingest`` on
    a Redis Cluster): every commit stream raises the store's ``seq`` to it before its first commit
    (:class:`CommitStream`), so a master that failed over to a replica lacking the last writes
    never hands a seq out twice. None: commits are not checked (a single Redis, where the
    long-running parts use the :class:`~aggregator.seqfloor.SeqFloor` connect hook)."""

    def __post_init__(self) -> None:
        # redis-py types replies for every client mode (str or bytes, RESP2 or RESP3); agg's
        # clients always return bytes over RESP2, so replies are handled untyped through `r`.
        self.r: Any = self.client
        self._ingest = self.client.register_script(scripts.INGEST)
        self._hmget_many = self.client.register_script(scripts.HMGET_MANY)
        self._adopt = self.client.register_script(scripts.CURSOR_ADOPT)
        self._forget = self.client.register_script(scripts.FORGET)
        self._segments: dict[str, tuple[bytes, list[tuple[int, dict[bytes, bytes]]]]] = {}

    def connection_pool(self) -> Any:
        """The connection pool of the server holding this store's keys: on a Redis Cluster, of
        the master serving their slot (every key of a store shares one hash tag)."""
        node_of = getattr(self.client, "get_node_from_key", None)
        if node_of is None:
            return self.client.connection_pool
        return self.r.get_redis_connection(node_of(self.keys.seq)).connection_pool

    # --- identity ----------------------------------------------------------------------------
    def identity(self) -> str:
        """The store's identity token, created on first use (``<ns>:store``).

        A long-running committer reads it once per connection and passes it with every commit
        (:attr:`expect_id`): a store that lost its keys without a reconnect (FLUSHALL, an empty
        backup restored) no longer has it, and the ingest script refuses the batch.
        """
        pipe = self.r.pipeline(transaction=False)
        pipe.set(self.keys.store_id, os.urandom(8).hex(), nx=True)
        pipe.get(self.keys.store_id)
        _, token = pipe.execute()
        return str(token.decode())

    def current_identity(self) -> str:
        """The identity token as it is now ("" if the store has none): for periodic checks."""
        raw = self.r.get(self.keys.store_id)
        return raw.decode() if raw else ""

    # --- cursors -----------------------------------------------------------------------------
    def file_id(self, path: str) -> str:
        """Id of the cursor of ``path`` on this host: of the file it names once every symlink is
        resolved, so that a file reachable under two spellings (a symlinked dir) has one cursor
        and is counted once (``tests/adversarial/test_files.py::test_a_file_reached_by_two_paths_counts_once``).
        The resolved path, not the device and inode: a file replaced by rename keeps its cursor,
        so the tailer still sees that it was replaced (another inode) and reconciles it."""
        return self._fid(resolved(path))

    def _fid(self, path: str) -> str:
        return hashlib.sha1(self.host.encode() + b"\0" + os.fsencode(path)).hexdigest()[:24]

    def cursors_for(self, paths: Sequence[str]) -> tuple[list[str], list[Cursor | None]]:
        """The cursor ids of ``paths`` and their cursors, in one round trip (two if some must move).

        A cursor stored under a path as spelled (before cursors were keyed by the resolved path)
        is moved to the resolved one the first time it is looked up, so the file is not read again.
        """
        fids = [self.file_id(p) for p in paths]
        curs = self.cursors(fids)
        moved = 0
        for i, (path, cur) in enumerate(zip(paths, curs, strict=True)):
            old = self._fid(path)
            if cur is None and old != fids[i]:
                call = scripts.cursor_adopt_call(
                    old_cursor=self.keys.file(old),
                    new_cursor=self.keys.file(fids[i]),
                    files=self.keys.files,
                    old_fid=old,
                    new_fid=fids[i],
                )
                moved += int(self._adopt(keys=call.keys, args=call.args))
        if moved:
            curs = self.cursors(fids)
        return fids, curs

    def cursors(self, fids: Sequence[str]) -> list[Cursor | None]:
        """The committed cursors of ``fids`` (None where a file has none), in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        for fid in fids:
            pipe.hgetall(self.keys.file(fid))
        return [_cursor(h) for h in pipe.execute()]

    def cursor(self, fid: str) -> Cursor | None:
        return self.cursors([fid])[0]

    def hmget_many(self, keys: Sequence[str], fields: Sequence[str], chunk: int = 1000) -> list[list[bytes | None]]:
        """``HMGET key *fields`` for each of ``keys``, a thousand hashes per round trip."""
        out: list[list[bytes | None]] = []
        m = len(fields)
        for i in range(0, len(keys), chunk):
            part = keys[i : i + chunk]
            call = scripts.hmget_many_call(hashes=part, fields=fields)
            flat = self._hmget_many(keys=call.keys, args=call.args)
            out += [flat[j * m : (j + 1) * m] for j in range(len(part))]
        return out

    # --- commit ------------------------------------------------------------------------------
    def cursor_fields(
        self,
        sf: SourceFile,
        st: os.stat_result,
        *,
        off: int,
        size: int,
        mtime: int,
        tok: str,
        fp: str = "",
        fplen: int = 0,
        tfp: str = "",
    ) -> dict[str, Any]:
        """A file's cursor hash as a commit writes it (see :mod:`aggregator.keys`): where reading
        stopped, the identity it was read under, and what the file is."""
        return {
            "off": off,
            "ino": st.st_ino,
            "dev": st.st_dev,
            "size": size,
            "mtime": mtime,
            "fp": fp,
            "fplen": fplen,
            "tfp": tfp,
            "path": os.fsencode(sf.path),
            "host": self.host,
            "conv": sf.session or "",
            "project": sf.project,
            "agent": sf.agent or "",
            "kind": sf.kind,
            "tok": tok,
        }

    def prepare(
        self,
        sf: SourceFile,
        fid: str,
        expected_tok: str,
        cursor: dict[str, Any],
        items: Iterable[Event | Rejection],
        chain: Chain | None = None,
    ) -> Batch:
        """Make ``items`` (in line order) and the cursor they lead to into a :class:`Batch`.

        ``cursor`` must include ``tok``, a token unique to this commit; the batch commits only if
        the file's cursor still holds ``expected_tok`` (see :meth:`commit`).
        """
        k = self.keys
        items = list(items)
        events: list[Event] = [it for it in items if type(it) is Event]
        rejections: list[tuple[str, bytes]] = []
        if len(events) != len(items):
            for it in items:
                if type(it) is Rejection:
                    rejections.append((f"{fid}:{it.digest}", self._rejection_record(sf, it)))
        convs = list(dict.fromkeys([e.conv for e in events]))
        if len(convs) <= 1:
            cis = ""
            bodies = [(k.body(c), {e.digest: e.raw for e in events}) for c in convs]
        else:
            index = {c: str(i) for i, c in enumerate(convs, 1)}
            cis = ",".join([index[e.conv] for e in events])
            per_conv: dict[str, dict[str, bytes]] = {c: {} for c in convs}
            for e in events:
                per_conv[e.conv][e.digest] = e.raw
            bodies = [(k.body(c), m) for c, m in per_conv.items()]
        call = scripts.ingest_call(
            seq=k.seq,
            log=k.log,
            stats=k.stats,
            cursor=k.file(fid),
            convs=k.convs,
            files=k.files,
            rejects=k.rejects,
            rejseen=k.rejects_seen,
            dirty=k.dirty,
            conv_keys=[key for c in convs for key in (k.cur(c), k.timeline(c), k.meta(c), k.body(c), k.forgot(c))],
            store=k.store_id,
            expected_tok=expected_tok,
            fid=fid,
            events_channel=k.events_channel,
            conv_channel_prefix=k.conv_channel(""),
            rejects_cap=defaults.REJECTS_KEPT,
            file=sf.display,
            project=sf.project,
            agent=sf.agent or "",
            lines=len(events),
            conv_index=cis,
            ids="\n".join([e.id for e in events]),
            digests="".join([e.digest for e in events]),
            msg_flags=b"".join([b"1" if e.is_msg else b"0" for e in events]),
            tails=b"\n".join([e.tail for e in events]),
            facts=b"\n".join([e.facts for e in events]),
            times=",".join(["" if e.tms is None else str(e.tms) for e in events]),
            conversations=[(c, dumps(c)) for c in convs],
            rejections=rejections,
            cursor_fields=list(cursor.items()),
            expect_id=self.expect_id,
        )
        size = sum(len(raw) for _, mapping in bodies for raw in mapping.values())
        return Batch(sf.display, bodies, call.keys, call.args, chain or Chain(), size, events=len(events))

    def commit(
        self, sf: SourceFile, fid: str, expected_tok: str, cursor: dict[str, Any], items: Iterable[Event | Rejection]
    ) -> CommitResult:
        """Store one batch of ``items`` (in line order) and move the cursor to ``cursor``.

        ``cursor`` must include ``tok``, a token unique to this commit; the next commit of this file
        expects it. Raises :class:`CursorConflict` if the cursor's token is no longer
        ``expected_tok``; then nothing was committed (bodies written in step 1 are harmless).
        """
        batch = self.prepare(sf, fid, expected_tok, cursor, items)
        if self.floor is not None:
            # Through a stream, which applies the floor on its connection before the commit.
            stream = self.stream()
            try:
                answered = stream.submit(batch) + stream.finish()
            finally:
                stream.close()
            result = answered[0][1]
            if result is None:
                raise CursorConflict(f"the cursor of {sf.display} moved under us")
            return result
        if batch.bodies:
            pipe = self.r.pipeline(transaction=False)
            for key, mapping in batch.bodies:
                pipe.hset(key, mapping=mapping)
            pipe.execute()
        return batch.result(self._ingest(keys=batch.keys, args=batch.args))

    def stream(self) -> CommitStream:
        """A :class:`CommitStream` on a connection of its own (call its ``close`` when done)."""
        return CommitStream(self)

    def _rejection_record(self, sf: SourceFile, r: Rejection) -> bytes:
        return dumps(
            {
                "file": sf.display,
                "offset": r.offset,
                "bytes": r.size,
                "reason": r.reason,
                "prefix": r.prefix.decode("utf-8", "backslashreplace"),
                "host": self.host,
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )

    # --- reading -----------------------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        raw = self.r.hgetall(self.keys.stats)
        out = {f: 0 for f in STAT_FIELDS}
        for key, value in raw.items():
            out[key.decode()] = int(value)
        return out

    def rejections(self, limit: int | None = None) -> tuple[list[dict[str, Any]], int]:
        """The kept rejection records (``file``, ``offset``, ``bytes``, ``reason``, ``prefix``,
        ``host``, ``at``), newest first, at most ``limit`` of them; and how many are kept
        (the newest :data:`~aggregator.defaults.REJECTS_KEPT`)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.lrange(self.keys.rejects, 0, -1 if limit is None else limit - 1)
        pipe.llen(self.keys.rejects)
        raw, kept = pipe.execute()
        return ([] if limit == 0 else [orjson.loads(x) for x in raw]), int(kept)

    def last_seq(self) -> int:
        return int(self.r.get(self.keys.seq) or 0)

    def conversations(self) -> list[str]:
        """Every conversation key, oldest activity first."""
        return [c.decode() for c in self.r.zrange(self.keys.convs, 0, -1)]

    def resolve_conversation(self, name: str) -> str:
        """``name`` if it is a conversation, else the one conversation it is a prefix of."""
        if self.r.zscore(self.keys.convs, name) is not None:
            return name
        matches = [c for c in self.conversations() if c.startswith(name)] if name else []
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise NotFound(f"{name!r} matches {len(matches)} conversations; give more of the key")
        raise NotFound(f"no conversation {name!r}")

    def forget(self, conv: str) -> Forgotten:
        """Remove ``conv``'s events, bodies and log content and leave its tombstone, in one
        atomic step (:data:`~aggregator.scripts.FORGET`); its projections go when the projector
        applies the ``agg-forget`` entry this appends (:mod:`aggregator.forget` does both).
        Raises :class:`NotFound` for a conversation the store does not hold."""
        while True:
            res = self._forget_once(conv)
            if res[0] == b"missing":
                raise NotFound(f"no conversation {conv!r}")
            # moved: a commit added a batch to its timeline meanwhile: read it again
            # (tests/store/test_forget.py::test_a_forget_whose_timeline_grew_meanwhile_reads_it_again)
            if res[0] != b"moved":
                return Forgotten(conv, *(int(x) for x in res[1:10]))

    def _forget_once(self, conv: str) -> Any:
        """One :data:`~aggregator.scripts.FORGET` call, for ``conv``'s timeline as read now."""
        k = self.keys
        firsts = [m.decode() for m in self.r.zrange(k.timeline(conv), 0, -1)]
        call = scripts.forget_call(
            seq=k.seq,
            log=k.log,
            stats=k.stats,
            convs=k.convs,
            dirty=k.dirty,
            due=k.turns_due,
            queued=k.turns_queued,
            running=k.turns_running,
            parked=k.turns_parked,
            patched=k.log_patched,
            cur=k.cur(conv),
            tl=k.timeline(conv),
            body=k.body(conv),
            meta=k.meta(conv),
            forgot=k.forgot(conv),
            turn=k.turn(conv),
            lease=k.lease(conv),
            chunks=k.chunks(conv),
            patches=[k.log_patch(first) for first in firsts],
            conv=conv,
            conv_json=dumps(conv),
            firsts=",".join(firsts),
            events_channel=k.events_channel,
            conv_channel=k.conv_channel(conv),
        )
        return self._forget(keys=call.keys, args=call.args)

    def forgotten_at(self, conv: str) -> int | None:
        """``conv``'s tombstone (ms), if it was ever forgotten."""
        raw = self.r.get(self.keys.forgot(conv))
        return int(raw) if raw is not None else None

    def replay(self, conv: str) -> Iterator[tuple[str, bytes]]:
        """``(id, newest bytes)`` of each event of ``conv``, in conversation order.

        The conversation's timeline indexes the log batches holding its entries; their first
        versions, in log order, are its events in order (revisions only change the bytes).
        """
        ids: list[str] = []
        sealed: dict[str, bytes] = {}  # read once, when a body is first found sealed
        timeline = [int(b) for b in self.r.zrange(self.keys.timeline(conv), 0, -1)]
        for at in range(0, len(timeline), defaults.REPLAY_CHUNK):
            for entries in self.batches_at(timeline[at : at + defaults.REPLAY_CHUNK]):
                for entry in entries:
                    env = entry.env()
                    if env["conv"] == conv and not env["revision"]:
                        ids.append(env["id"])
                if len(ids) >= defaults.REPLAY_CHUNK:
                    yield from self._replay_bodies(conv, ids, sealed)
                    ids = []
        yield from self._replay_bodies(conv, ids, sealed)

    def _replay_bodies(self, conv: str, ids: list[str], sealed: dict[str, bytes]) -> Iterator[tuple[str, bytes]]:
        if not ids:
            return
        versions = self.r.hmget(self.keys.cur(conv), ids)
        digests = [v[-32:].decode() for v in versions]
        bodies = self.r.hmget(self.keys.body(conv), digests)
        if any(raw is None and d not in sealed for d, raw in zip(digests, bodies, strict=True)):
            # Sealed since the chunks were last read (or never read yet): read them again.
            sealed.update(self.sealed_bodies(conv))
        bodies = [raw if raw is not None else sealed.get(d) for d, raw in zip(digests, bodies, strict=True)]
        yield from zip(ids, bodies, strict=True)

    def sealed_bodies(self, conv: str) -> dict[str, bytes]:
        """Every body of ``conv`` sealed into chunks (digest → line bytes), decompressed.

        Read after the raw hash, never before: the seal script adds a chunk and drops its raw
        fields at once, so a body missing from the first read is in a chunk at the second
        (``tests/store/test_compaction.py::test_readers_see_every_body_while_sealing_runs``).
        """
        blobs = self.r.hvals(self.keys.chunks(conv))
        if not blobs:
            return {}
        from aggregator.compaction import unpack_chunk  # zstd: only where something is sealed

        out: dict[str, bytes] = {}
        for blob in blobs:
            out.update(unpack_chunk(blob))
        return out

    # --- reading: events' bytes --------------------------------------------------------------
    def versions(self, refs: Sequence[tuple[str, str]]) -> list[list[str]]:
        """The digests of each ``(conversation, event id)``'s stored versions, oldest first
        ([] for an event the store does not hold), in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        for conv, eid in refs:
            pipe.hget(self.keys.cur(conv), eid)
        return [v.decode().split(",") if v else [] for v in pipe.execute()]

    def newest_digests(self, refs: Sequence[tuple[str, str]]) -> list[str | None]:
        """The newest digest of each ``(conversation, event id)`` (None for an event the store
        does not hold), in one round trip (one HMGET per conversation)."""
        by_conv: dict[str, list[str]] = {}
        for conv, eid in refs:
            by_conv.setdefault(conv, []).append(eid)
        pipe = self.r.pipeline(transaction=False)
        for conv, eids in by_conv.items():
            pipe.hmget(self.keys.cur(conv), eids)
        found: dict[tuple[str, str], str | None] = {}
        for (conv, eids), vs in zip(by_conv.items(), pipe.execute(), strict=True):
            found.update(((conv, eid), newest_digest(v)) for eid, v in zip(eids, vs, strict=True))
        return [found[ref] for ref in refs]

    def holds(self, refs: Sequence[tuple[str, str]]) -> list[bool]:
        """Whether the store holds each ``(conversation, event id)``, in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        for conv, eid in refs:
            pipe.hexists(self.keys.cur(conv), eid)
        return [bool(x) for x in pipe.execute()]

    def bodies(self, refs: Sequence[tuple[str, str]]) -> list[bytes | None]:
        """The stored line bytes of each ``(conversation, digest)`` (None where the store has
        none), in one round trip (one HMGET per conversation)."""
        by_conv: dict[str, list[str]] = {}
        for conv, digest in refs:
            by_conv.setdefault(conv, []).append(digest)
        pipe = self.r.pipeline(transaction=False)
        for conv, digests in by_conv.items():
            pipe.hmget(self.keys.body(conv), digests)
        found: dict[tuple[str, str], bytes | None] = {}
        for (conv, digests), raws in zip(by_conv.items(), pipe.execute(), strict=True):
            found.update(((conv, d), raw) for d, raw in zip(digests, raws, strict=True))
        return self._unseal(refs, found)

    def _unseal(
        self, refs: Sequence[tuple[str, str]], found: dict[tuple[str, str], bytes | None]
    ) -> list[bytes | None]:
        """``found``'s bodies for ``refs`` (``(conversation, digest)``), those missing from the raw
        hashes looked up in their conversations' chunks."""
        for conv in {conv for conv, d in refs if d and found.get((conv, d)) is None}:
            sealed = self.sealed_bodies(conv)
            for ref in refs:
                if ref[0] == conv and found.get(ref) is None and ref[1] in sealed:
                    found[ref] = sealed[ref[1]]
        return [found.get(ref) for ref in refs]

    def newest_bodies(self, refs: Sequence[tuple[str, str]]) -> list[bytes | None]:
        """The newest stored line bytes of each ``(conversation, event id)`` (None where the
        store has none, e.g. it lost them meanwhile to a FLUSHALL), in two round trips."""
        if not refs:
            return []
        pipe = self.r.pipeline(transaction=False)
        for conv, eid in refs:
            pipe.hget(self.keys.cur(conv), eid)
        versions = pipe.execute()
        digests = [(conv, v[-32:].decode() if v else "") for (conv, _), v in zip(refs, versions, strict=True)]
        pipe = self.r.pipeline(transaction=False)
        for conv, digest in digests:
            pipe.hget(self.keys.body(conv), digest)
        return self._unseal(digests, dict(zip(digests, pipe.execute(), strict=True)))

    # --- reading: timelines and log batches --------------------------------------------------
    # The log is three places, each batch in one of them (by its first seq): the stream
    # (<ns>:log), the batches a forget rewrote (patches: aggregator.scripts.FORGET moves a batch
    # from the stream to its patch hash in one step) and the archived segments (compaction moves
    # the stream's oldest batches there in one step: aggregator.scripts.LOG_ARCHIVE). Batches only
    # ever move from the stream, so every read reads the stream first and the others after: a
    # batch that moved in between is found where it went
    # (tests/store/test_log_archive.py::test_readers_see_every_batch_while_the_log_is_archived).
    def batches_at(self, firsts: Sequence[int]) -> list[list[LogEntry]]:
        """The entries of the log batches whose first seqs are ``firsts`` ([] for a batch the log
        does not hold), in one round trip (more for batches archived)."""
        return [
            list(split_batch(first, fields)) if fields else []
            for first, fields in zip(firsts, self._batch_fields(firsts), strict=True)
        ]

    def _batch_fields(self, firsts: Sequence[int]) -> list[dict[bytes, bytes] | None]:
        """The fields of the log batches starting at ``firsts`` (None: no such batch)."""
        pipe = self.r.pipeline(transaction=False)
        for first in firsts:
            pipe.xrange(self.keys.log, f"{first}-0", f"{first}-0")
            pipe.hgetall(self.keys.log_patch(first))
        res = pipe.execute()
        out: list[dict[bytes, bytes] | None] = []
        archived: dict[int, dict[bytes, bytes]] = {}  # each segment fetched once per call
        for i, first in enumerate(firsts):
            found, patch = res[2 * i], res[2 * i + 1]
            fields = found[0][1] if found else patch or None
            if fields is None:
                if first not in archived:
                    archived.update(self._segment_holding(first))
                fields = archived.get(first)
            out.append(fields)
        return out

    def timeline_before(self, conv: str, before: int | None, count: int) -> list[int]:
        """Up to ``count`` of ``conv``'s log batches (first seqs) below ``before`` (None: from the
        newest), newest first."""
        high = "+inf" if before is None else f"({before}"
        return [int(b) for b in self.r.zrevrangebyscore(self.keys.timeline(conv), high, "-inf", start=0, num=count)]

    def timeline_after(self, conv: str, after: int, count: int) -> list[int]:
        """Up to ``count`` of ``conv``'s log batches (first seqs) above ``after``, oldest first."""
        return [int(b) for b in self.r.zrangebyscore(self.keys.timeline(conv), f"({after}", "+inf", start=0, num=count)]

    def timeline_holding(self, conv: str, seq: int) -> int | None:
        """``conv``'s log batch that starts at or before ``seq`` (the one that may hold it), if any."""
        found = self.timeline_before(conv, seq + 1, 1)
        return found[0] if found else None

    def log_batches(self, after_seq: int, count: int = 100) -> list[tuple[int, dict[bytes, bytes]]]:
        """Raw log batches whose first seq is greater than ``after_seq`` (up to ``count``), in
        order, from the three places the log is kept (see above)."""
        out: list[tuple[int, dict[bytes, bytes]]] = []
        cursor: int | None = after_seq
        while cursor is not None and len(out) < count:
            part, cursor = self._log_pass(cursor, count - len(out))
            out += part
        return out

    def _log_pass(self, after_seq: int, count: int) -> tuple[list[tuple[int, dict[bytes, bytes]]], int | None]:
        """One read of the three places: batches after ``after_seq`` merged by first seq, and
        where the next pass starts (None: that was all there is up to ``count``). A place read in
        part — one segment of the archive, or a full read of the stream or the patch index —
        is complete only up to its last batch: the merge stops at the first such limit, and the
        next pass goes on from it."""
        pipe = self.r.pipeline(transaction=False)
        pipe.xrange(self.keys.log, f"{after_seq + 1}-0", "+", count=count)
        pipe.zrangebyscore(self.keys.log_patched, f"({after_seq}", "+inf", start=0, num=count)
        res, patched = pipe.execute()
        stream = [(int(i.split(b"-")[0]), f) for i, f in res]
        patches = self._patches([int(p) for p in patched])
        archived = self._archived_after(after_seq, count)
        limits = [int(patched[-1])] if len(patched) >= count else []
        if len(stream) >= count:
            limits.append(stream[-1][0])
        if archived:
            limits.append(archived[-1][0])
        limit = min(limits) if limits else None
        # a batch read twice (it moved between the reads) is one
        merged = dict(sorted([*archived, *patches, *stream], key=lambda b: b[0]))
        out = [(first, f) for first, f in merged.items() if limit is None or first <= limit]
        if len(out) > count:
            return out[:count], None
        return out, limit

    def _patches(self, firsts: Sequence[int]) -> list[tuple[int, dict[bytes, bytes]]]:
        """The log batches a forget rewrote, by first seq (see :data:`~aggregator.scripts.FORGET`)."""
        if not firsts:
            return []
        pipe = self.r.pipeline(transaction=False)
        for first in firsts:
            pipe.hgetall(self.keys.log_patch(first))
        return [(first, f) for first, f in zip(firsts, pipe.execute(), strict=True) if f]

    def _batch_at_or_before(self, seq: int) -> list[tuple[int, dict[bytes, bytes]]]:
        """The log batch with the greatest first seq at or below ``seq`` ([] if none)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.xrevrange(self.keys.log, f"{seq}-0", "-", count=1)
        pipe.zrevrangebyscore(self.keys.log_patched, seq, "-inf", start=0, num=1)
        back, patched = pipe.execute()
        found = [(int(i.split(b"-")[0]), f) for i, f in back]
        found += self._patches([int(p) for p in patched])
        found += [b for b in self._segment_holding(seq) if b[0] <= seq][-1:]
        return sorted(found, key=lambda b: b[0])[-1:]

    def entries_after(self, after_seq: int, upto_seq: int | None = None) -> Iterator[LogEntry]:
        """Every log entry with ``after_seq < seq <= upto_seq`` (to the end if None), in order."""
        # The batch that holds after_seq + 1 may have started earlier: look one batch back.
        batches = self._batch_at_or_before(after_seq) if after_seq > 0 else []
        cursor = after_seq
        while True:
            for first, fields in batches:
                for entry in split_batch(first, fields):
                    if upto_seq is not None and entry.seq > upto_seq:
                        return
                    if entry.seq > after_seq:
                        cursor = entry.seq
                        yield entry
                cursor = max(cursor, first)
            batches = self.log_batches(cursor, count=50)
            if not batches:
                return

    def conversation_entries(self, conv: str, after_seq: int, upto_seq: int | None = None) -> Iterator[LogEntry]:
        """The log entries of ``conv`` with ``after_seq < seq <= upto_seq``, in order.

        Reads only the log batches the conversation's timeline points at (not the whole log).
        """
        k = self.keys
        back = self.r.zrevrangebyscore(k.timeline(conv), after_seq, "-inf", start=0, num=1) if after_seq > 0 else []
        batches = [int(b) for b in back]
        low = f"({after_seq}"
        while True:
            for first, entries in zip(batches, self.batches_at(batches), strict=True):
                if upto_seq is not None and first > upto_seq:
                    return
                for entry in entries:
                    in_range = after_seq < entry.seq and (upto_seq is None or entry.seq <= upto_seq)
                    if in_range and entry.env()["conv"] == conv:
                        yield entry
            if batches:
                low = f"({max(batches)}"
            batches = [int(b) for b in self.r.zrangebyscore(k.timeline(conv), low, "+inf", start=0, num=100)]
            if not batches:
                return

    # --- reading: the log's archived segments (written by aggregator.compaction) ---------------
    def _segment_holding(self, seq: int) -> list[tuple[int, dict[bytes, bytes]]]:
        """The archived segment whose batches start at or before ``seq`` and include it if any
        does (the one starting last at or before it); [] if none."""
        found = self.r.zrevrangebyscore(self.keys.log_segments, seq, "-inf", start=0, num=1)
        return self._segment(found[0].decode()) if found else []

    def _archived_after(self, after_seq: int, count: int) -> list[tuple[int, dict[bytes, bytes]]]:
        """Up to ``count`` archived batches whose first seq is above ``after_seq``, in order, from
        one segment: the first, from the one that may hold ``after_seq`` on, that holds any (a
        forget may have emptied a segment's end; the next call reads the next segment)."""
        k = self.keys.log_segments
        start = self.r.zrevrangebyscore(k, after_seq, "-inf", start=0, num=1)
        low = int(start[0].split(b":")[0]) if start else f"({after_seq}"
        for member in self.r.zrangebyscore(k, low, "+inf"):
            if int(member.split(b":")[1]) > after_seq:
                later = [b for b in self._segment(member.decode()) if b[0] > after_seq]
                if later:
                    return later[:count]
        return []

    def _segment(self, member: str) -> list[tuple[int, dict[bytes, bytes]]]:
        """One archived segment's batches (``member`` = ``<first>:<last>``; [] if a forget removed
        it), decompressed once per blob: a reader going through a segment a few batches at a time
        reads it again and again. The blob is fetched each time and compared, so a segment a
        forget rewrote, or a store flushed and filled again, never answers from an old copy."""
        blob = self.r.hget(self.keys.log_archive, member.split(":")[0])
        if blob is None:
            return []
        cached = self._segments.get(member)
        if cached is not None and cached[0] == blob:
            return cached[1]
        from aggregator.compaction import unpack_segment  # zstd: only where the log was archived

        batches = unpack_segment(blob)
        if len(self._segments) >= 4:
            self._segments.clear()
        self._segments[member] = (blob, batches)
        return batches

    # --- reading: projections (written by aggregator.projections) ----------------------------
    def projections_seq(self) -> int:
        """The last seq applied to the projections (their checkpoint)."""
        return int(self.r.get(self.keys.proj_seq) or 0)

    def projection(self, conv: str) -> dict[bytes, bytes]:
        """``conv``'s projection hash, as :func:`aggregator.views.conversation_view` reads it."""
        return dict(self.r.hgetall(self.keys.proj(conv)))

    def projections(self, convs: Iterable[str]) -> Iterator[tuple[str, dict[bytes, bytes]]]:
        """``(conv, projection hash)`` for each of ``convs``, fetched in pipelined chunks."""
        convs = list(convs)
        for i in range(0, len(convs), 500):
            chunk = convs[i : i + 500]
            pipe = self.r.pipeline(transaction=False)
            for c in chunk:
                pipe.hgetall(self.keys.proj(c))
            yield from zip(chunk, pipe.execute(), strict=True)

    def projection_fields(self, convs: Sequence[str], fields: Sequence[str]) -> list[list[str | None]]:
        """The named fields of each of ``convs``' projections (None where unset), a thousand
        conversations per round trip."""
        rows = self.hmget_many([self.keys.proj(c) for c in convs], fields)
        return [[v.decode() if v is not None else None for v in row] for row in rows]

    def projects(self) -> list[str]:
        """Every project name the projections have seen, sorted."""
        return sorted(p.decode() for p in self.r.smembers(self.keys.projects))

    def recent_messages(self, limit: int | None = None) -> list[RecentMessage]:
        """The newest ``limit`` members of the recent-messages projection (None: all), oldest first."""
        if limit is not None and limit <= 0:
            return []
        rows = self.r.zrange(self.keys.recent, 0 if limit is None else -limit, -1, withscores=True)
        return [RecentMessage(*parse_recent_member(m), int(score)) for m, score in rows]

    def usage_total(self) -> dict[str, int]:
        """The usage totals (``agg:proj:usage:total``): every field as a number."""
        return {k.decode(): int(v) for k, v in self.r.hgetall(self.keys.usage_total).items()}

    def usage_tally(self, tally: str) -> dict[bytes, int]:
        """One usage tally's entries (JSON field → count; see :mod:`aggregator.keys`)."""
        return {f: int(v) for f, v in self.r.hgetall(self.keys.usage_tally(tally)).items()}

    def usage_tally_of(self, tally: str, who: str) -> dict[bytes, int]:
        """The entries of one conversation (or project) in a usage tally: a scan that sends back
        only the fields starting ``["<who>",`` (the wildcards ``*?[]\\`` of ``who`` escaped)."""
        prefix = orjson.dumps([who])[:-1].decode() + ","
        match = _GLOB.sub(r"\\\g<0>", prefix) + "*"
        key = self.keys.usage_tally(tally)
        return {f: int(v) for f, v in self.r.hscan_iter(key, match=match, count=defaults.USAGE_SCAN_COUNT)}

    # --- reading: files and the live parts ----------------------------------------------------
    def file_states(self) -> list[FileState]:
        """Every cursor's host, path and offset, by file id (one script call per 1,000 files)."""
        fids = sorted(f.decode() for f in self.r.smembers(self.keys.files))
        rows = self.hmget_many([self.keys.file(f) for f in fids], ["host", "path", "off"])
        return [
            FileState(
                fid,
                h.decode() if h is not None else None,
                os.fsdecode(path) if path is not None else None,
                int(off or 0),
            )
            for fid, (h, path, off) in zip(fids, rows, strict=True)
        ]

    def snapshot_record(self) -> dict[str, str]:
        """What the writer recorded of its last ``current.json`` ({} if none): ``at_ms``,
        ``seq``, ``path``, ``host``, ``conversations``, ``messages``."""
        return {k.decode(): v.decode() for k, v in self.r.hgetall(self.keys.snapshot).items()}

    def head(self, conv: str | None) -> tuple[int, int, int | None]:
        """``(global seq, newest seq of conv, its conv_seq)`` read atomically (MULTI); without a
        conversation, ``(seq, seq, None)``."""
        k = self.keys
        pipe = self.r.pipeline(transaction=True)
        pipe.get(k.seq)
        if conv is None:
            (seq,) = pipe.execute()
            return int(seq or 0), int(seq or 0), None
        pipe.zscore(k.convs, conv)
        pipe.hget(k.meta(conv), "n")
        seq, conv_seq, n = pipe.execute()
        return int(seq or 0), int(conv_seq or 0), int(n or 0)


@dataclass(slots=True)
class Chain:
    """The batches of one pass over one file, each expecting the cursor token the previous wrote."""

    lost: bool = False
    """A batch lost the compare-and-set (another ingester moved the cursor): the rest are dropped."""


@dataclass(slots=True)
class Batch:
    """One batch ready to store: its body writes and the ingest script's keys and arguments."""

    display: str
    bodies: list[tuple[str, dict[str, bytes]]]
    """(body hash key, {digest: line bytes}) per conversation: step 1, before the script."""
    keys: list[str]
    args: list[Any]
    """The script's ARGV (``args[0]`` is the expected cursor token)."""
    chain: Chain
    size: int
    """Bytes of line data the batch sends."""
    note: Any = None
    """Whatever the caller wants back with the batch's result."""
    acked: bool = False
    """Redis acknowledged the body writes: the script may go."""
    events: int = 0
    """Events the batch carries: at most this many seqs are handed out by its script."""

    def result(self, res: list[Any]) -> CommitResult:
        if res[0] == b"conflict":
            raise CursorConflict(f"the cursor of {self.display} moved under us")
        if res[0] == b"storegone":
            raise StoreReset("the store lost its keys (FLUSHALL, or an empty backup restored)")
        return CommitResult(*(int(x) for x in res[1:8]))


Answered = list[tuple[Batch, CommitResult | None]]
"""Batches whose fate is known: their result, or None if not committed (their chain lost)."""


class CommitStream:
    """Commits batches (of one file or many) as one stream, overlapping Redis' work with the caller's.

    One connection, no thread: :meth:`submit` sends a batch's body writes and returns without
    waiting; replies are read as they are needed, and each batch's script call is sent as soon as
    its bodies are acknowledged — so Redis stores earlier batches while the caller parses later
    ones. (A committer *thread* was slower: its socket calls hand the GIL back and forth with the
    parsing thread, each hand-off waiting for the switch interval.)

    Up to :data:`~aggregator.defaults.INGEST_IN_FLIGHT_BATCHES` batches (and about
    :data:`~aggregator.defaults.INGEST_IN_FLIGHT_BYTES` of them) are in flight, and scripts go out
    in submission order (so ``seq`` follows it, as if files were committed one after the other).
    Each batch of a pass expects the cursor token the previous one writes, so once one loses the
    compare-and-set none after it can commit; the stream then drops the rest of its
    :class:`Chain` without sending them (``tests/store/test_commit_stream.py``).

    Not thread-safe. :meth:`close` must be called (it returns or drops the connection).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.pool = store.connection_pool()
        self.conn: Any = None
        # Sent, replies not read yet, in send order: ("bodies", batch, replies) or ("script", batch, 1).
        self.sent: deque[tuple[str, Batch, int]] = deque()
        self.waiting: deque[Batch] = deque()  # submitted, script not sent yet, in submission order
        self.in_flight = 0  # batches submitted and not answered
        self.in_flight_bytes = 0
        self.answered: Answered = []
        self.unanswered_seqs = 0
        """Seqs the scripts sent and not answered yet may have handed out."""

    def _connection(self) -> Any:
        if self.conn is None:
            self.conn = self.pool.get_connection()
            # A send buffer that holds a batch or two lets send() return at once while Redis is
            # still busy with earlier ones. Best effort: the kernel caps it (wmem_max).
            sock = getattr(self.conn, "_sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, defaults.INGEST_SEND_BUFFER_BYTES)
            if self.store.floor is not None:
                self._apply_floor(self.conn, self.store.floor)
        return self.conn

    def _apply_floor(self, conn: Any, floor: SeqFloor) -> None:
        """Raise the store's ``seq`` to ``floor`` on ``conn`` and wait for the answer, before
        anything is committed through it: every commit of the stream then runs on a server that
        knows the floor (one that lost it since also lost this connection). An error (the slot
        moved, the node is a replica) is raised: nothing was committed, the caller retries."""
        k = self.store.keys
        call = scripts.seq_floor_call(seq=k.seq, stats=k.stats, floor=floor.value)
        conn.send_packed_command([pack(("EVAL", call.script, len(call.keys), *call.keys, *call.args))])
        res = conn.read_response()
        floor.observe(int(res[1]))

    def _send(self, packed: list[bytes]) -> None:
        if packed:
            self._connection().send_packed_command(packed, check_health=False)

    @staticmethod
    def _script(batch: Batch) -> bytes:
        # EVAL with the script's text, not EVALSHA: a Redis that forgot the script (restart,
        # failover, SCRIPT FLUSH) cannot refuse one call and run the next one already sent behind
        # it, which would commit batches out of order (seq would not follow the order of reading;
        # tests/store/test_commit_stream.py::test_script_forgotten_mid_stream_changes_nothing). Redis
        # finds the compiled script by the text's SHA-1: ~10 KB hashed and sent per batch.
        return pack(("EVAL", scripts.INGEST, len(batch.keys), *batch.keys, *batch.args))

    def submit(self, batch: Batch) -> Answered:
        """Send ``batch``'s bodies; returns the batches answered since the last call.

        A batch is answered with its :class:`CommitResult`, or None if it was not committed (its
        chain lost the compare-and-set).
        """
        size = batch.size
        while self.in_flight and (
            self.in_flight >= defaults.INGEST_IN_FLIGHT_BATCHES
            or self.in_flight_bytes + size > defaults.INGEST_IN_FLIGHT_BYTES
        ):
            self._read_one()
        self.in_flight += 1
        self.in_flight_bytes += size
        self.waiting.append(batch)
        if batch.bodies:
            self._send([_hset(key, mapping) for key, mapping in batch.bodies])
            self.sent.append(("bodies", batch, len(batch.bodies)))
        else:
            batch.acked = True
            self._send_ready()
        # Take what is already answered, without waiting: results flow back as Redis goes.
        while self.sent and self.conn.can_read(timeout=0):
            self._read_one()
        return self._take()

    def finish(self) -> Answered:
        """Commit everything submitted; returns the batches answered since the last call."""
        while self.sent or self.waiting:
            if self.sent:
                self._read_one()
            else:
                self._send_ready()
        return self._take()

    def _take(self) -> Answered:
        out, self.answered = self.answered, []
        return out

    def _done(self, batch: Batch, result: CommitResult | None) -> None:
        self.in_flight -= 1
        self.in_flight_bytes -= batch.size
        self.answered.append((batch, result))

    def _send_ready(self) -> None:
        """Send the scripts of the oldest waiting batches whose bodies are acknowledged."""
        packed: list[bytes] = []
        waiting = self.waiting
        while waiting and waiting[0].acked:
            batch = waiting.popleft()
            if batch.chain.lost:
                self._done(batch, None)
            else:
                packed.append(self._script(batch))
                self.sent.append(("script", batch, 1))
                self.unanswered_seqs += batch.events
        self._send(packed)

    def _read_one(self) -> None:
        """Read the replies of the oldest command sent, and act on them."""
        import redis  # loaded already: the commit stream's connection is redis-py's

        kind, batch, replies = self.sent.popleft()
        conn = self.conn
        error: redis.ResponseError | None = None
        reply: Any = None
        for _ in range(replies):
            try:
                reply = conn.read_response()
            except redis.ResponseError as e:
                error = error or e
        if kind == "bodies":
            if error is not None:
                raise error  # e.g. out of memory: the batch's script is never sent
            batch.acked = True
            self._send_ready()
            return
        self.unanswered_seqs -= batch.events
        if error is not None:
            raise error
        try:
            result = batch.result(reply)
        except CursorConflict:
            batch.chain.lost = True
            self._done(batch, None)
        else:
            if self.store.floor is not None:
                self.store.floor.observe(result.last_seq)
            self._done(batch, result)

    def close(self) -> None:
        """Give the connection back; one with replies left unread is dropped instead."""
        if self.conn is None:
            return
        if self.unanswered_seqs and self.store.floor is not None:
            # Scripts whose answer never came (the master died) may have run and published their
            # envelopes before a replica lacking them took over: their seqs count as handed out.
            self.store.floor.observe(self.store.floor.value + self.unanswered_seqs)
        if self.sent:
            self.conn.disconnect()
        self.pool.release(self.conn)
        self.conn = None
        self.sent.clear()
        self.waiting.clear()


def pack(args: Iterable[Any]) -> bytes:
    """One command in the Redis protocol, numbers sent as their decimal text (as redis-py does).

    Numbers are turned into text here, never by ``hiredis.pack_command``: it calls
    ``PyObject_Repr``, which runs pending signal handlers first, and when one raises (Ctrl-C's
    KeyboardInterrupt) hiredis uses the NULL it gets back and the process dies of SIGSEGV
    (``tests/unit/test_pack.py``;
    tests/process/test_rejects_and_interrupts.py::test_ctrl_c_during_ingest_keeps_what_was_committed).
    """
    cmd: Any = tuple(a if isinstance(a, (str, bytes)) else str(a) for a in args)  # hiredis' stub: 1-tuples
    packed: bytes = hiredis.pack_command(cmd)
    return packed


def _hset(key: str, mapping: dict[str, bytes]) -> bytes:
    """``HSET key field value ...`` in the Redis protocol (digests as fields, line bytes as values).

    Built here rather than by the client's packer, which costs more per argument than a line
    costs to parse.
    """
    kb = key.encode()
    out = [b"*%d\r\n$4\r\nHSET\r\n$%d\r\n%s\r\n" % (2 + 2 * len(mapping), len(kb), kb)]
    add = out.append
    for digest, raw in mapping.items():
        d = digest.encode()
        add(b"$%d\r\n%s\r\n$%d\r\n" % (len(d), d, len(raw)))
        add(raw)
        add(b"\r\n")
    return b"".join(out)


def split_batch(first: int, f: dict[bytes, bytes]) -> Iterator[LogEntry]:
    """The entries of one log batch (a stream entry whose id is its first seq), in seq order; an
    entry a forget blanked (empty envelope) is skipped, its seq left unused."""
    envs = f[b"e"].split(b"\n")
    digs = f[b"d"].decode()
    facts = f[b"f"].split(b"\n")
    file, project, agent = f[b"file"].decode(), f[b"project"].decode(), f[b"agent"].decode()
    for i, env in enumerate(envs):
        if env:
            yield LogEntry(first + i, env, digs[32 * i : 32 * i + 32], facts[i], file, project, agent)


def _cursor(h: dict[bytes, bytes]) -> Cursor | None:
    if not h:
        return None
    g = h.get
    return Cursor(
        off=int(g(b"off", 0)),
        tok=g(b"tok", b"").decode(),
        ino=int(g(b"ino", 0)),
        dev=int(g(b"dev", 0)),
        size=int(g(b"size", 0)),
        mtime=int(g(b"mtime", 0)),
        fp=g(b"fp", b"").decode(),
        fplen=int(g(b"fplen", 0)),
        tfp=g(b"tfp", b"").decode(),
        path=os.fsdecode(g(b"path", b"")),
    )
