"""The event store: committing batches, reading cursors, the log, conversations and counts.

A batch is committed in two steps on one connection:

1. the lines' bytes are written with ``HSET <conv body> <digest> <bytes>`` — idempotent and
   content-addressed, so writing them again, or writing them and then crashing, changes nothing
   that is visible (a body nobody references is never read);
2. the :data:`~aggregator.scripts.INGEST` script, given only ids, digests and small metadata,
   dedupes, appends the entries, assigns ``seq``/``conv_seq``, advances the file cursor by
   compare-and-set, counts and publishes — atomically.

Keeping the bulk bytes out of the script is what lets ingest run near the speed of plain
pipelined writes (``scripts/bench_ingest.py``): Redis spends far more CPU per byte passed
through a Lua call than per byte of an ordinary HSET.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from aggregator import defaults, scripts
from aggregator.errors import CursorConflict, NotFound
from aggregator.keys import Keys
from aggregator.layout import SourceFile
from aggregator.parse import Event, Rejection, dumps

STAT_FIELDS = ("events", "revisions", "duplicates", "rejected", "lines", "conversations", "batches")


@dataclass(frozen=True, slots=True)
class Cursor:
    """Committed position in one file, plus what identifies the file's content."""

    off: int = 0
    gen: int = 0
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
    gen: int


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


@dataclass
class Store:
    """agg's event store in one Redis database."""

    client: redis.Redis
    keys: Keys = field(default_factory=Keys)
    host: str = ""

    def __post_init__(self) -> None:
        # redis-py types replies for every client mode (str or bytes, RESP2 or RESP3); agg's
        # clients always return bytes over RESP2, so replies are handled untyped through `r`.
        self.r: Any = self.client
        self._ingest = self.client.register_script(scripts.INGEST)

    # --- cursors -----------------------------------------------------------------------------
    def file_id(self, path: str) -> str:
        """Id of the cursor of ``path`` on this host."""
        return hashlib.sha1(self.host.encode() + b"\0" + os.fsencode(path)).hexdigest()[:24]

    def cursors(self, fids: Sequence[str]) -> list[Cursor | None]:
        """The committed cursors of ``fids`` (None where a file has none), in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        for fid in fids:
            pipe.hgetall(self.keys.file(fid))
        return [_cursor(h) for h in pipe.execute()]

    def cursor(self, fid: str) -> Cursor | None:
        return self.cursors([fid])[0]

    def tracked_files(self) -> list[dict[bytes, bytes]]:
        """Every cursor hash (all hosts)."""
        fids = sorted(self.r.smembers(self.keys.files))
        pipe = self.r.pipeline(transaction=False)
        for fid in fids:
            pipe.hgetall(self.keys.file(fid.decode()))
        return [h for h in pipe.execute() if h]

    # --- commit ------------------------------------------------------------------------------
    def commit(
        self, sf: SourceFile, fid: str, expected_gen: int, cursor: dict[str, Any], items: Iterable[Event | Rejection]
    ) -> CommitResult:
        """Store one batch of ``items`` (in line order) and move the cursor to ``cursor``.

        Raises :class:`CursorConflict` if the cursor's generation is no longer ``expected_gen``;
        then nothing was committed (bodies written in step 1 are harmless, see the module doc).
        """
        k = self.keys
        conv_index: dict[str, int] = {}
        bodies: dict[str, dict[str, bytes]] = {}
        cis: list[int] = []
        ids: list[str] = []
        digests: list[str] = []
        msgs: list[bytes] = []
        tails: list[bytes] = []
        facts: list[bytes] = []
        rejections: list[Any] = []
        for it in items:
            if type(it) is Event:
                cis.append(conv_index.setdefault(it.conv, len(conv_index) + 1))
                bodies.setdefault(it.conv, {})[it.digest] = it.raw
                ids.append(it.id)
                digests.append(it.digest)
                msgs.append(b"1" if it.is_msg else b"0")
                tails.append(it.tail)
                facts.append(it.facts)
            else:
                assert isinstance(it, Rejection)
                rejections += (f"{fid}:{it.digest}", self._rejection_record(sf, it))
        if bodies:
            pipe = self.r.pipeline(transaction=False)
            for conv, mapping in bodies.items():
                pipe.hset(k.body(conv), mapping=mapping)
            pipe.execute()
        keys: list[str] = [k.seq, k.log, k.stats, k.file(fid), k.convs, k.files, k.rejects, k.rejects_seen, k.dirty]
        args: list[Any] = [
            expected_gen,
            fid,
            k.events_channel,
            k.conv_channel(""),
            defaults.REJECTS_KEPT,
            sf.display,
            sf.project,
            sf.agent or "",
            len(ids),
            "" if len(conv_index) <= 1 else ",".join(map(str, cis)),
            "\n".join(ids),
            "".join(digests),
            b"".join(msgs),
            b"\n".join(tails),
            b"\n".join(facts),
            len(conv_index),
        ]
        for conv in conv_index:
            keys += (k.cur(conv), k.timeline(conv), k.meta(conv))
            args += (conv, dumps(conv))
        args += (len(rejections) // 2, *rejections, len(cursor))
        for name, value in cursor.items():
            args += (name, value)
        res = self._ingest(keys=keys, args=args)
        if res[0] == b"conflict":
            raise CursorConflict(f"cursor of {sf.display} moved (generation {int(res[1])})")
        return CommitResult(*(int(x) for x in res[1:8]))

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

    def replay(self, conv: str) -> Iterator[tuple[str, bytes]]:
        """``(id, newest bytes)`` of each event of ``conv``, in conversation order.

        The conversation's timeline indexes the log batches holding its entries; their first
        versions, in log order, are its events in order (revisions only change the bytes).
        """
        k = self.keys
        ids: list[str] = []
        for batch in self.r.zrange(k.timeline(conv), 0, -1):
            first = int(batch)
            batch_entries = self.r.xrange(k.log, f"{first}-0", f"{first}-0")
            for _, fields in batch_entries:
                for entry in _split(first, fields):
                    env = entry.env()
                    if env["conv"] == conv and not env["revision"]:
                        ids.append(env["id"])
            if len(ids) >= defaults.REPLAY_CHUNK:
                yield from self._bodies(conv, ids)
                ids = []
        yield from self._bodies(conv, ids)

    def _bodies(self, conv: str, ids: list[str]) -> Iterator[tuple[str, bytes]]:
        if not ids:
            return
        versions = self.r.hmget(self.keys.cur(conv), ids)
        bodies = self.r.hmget(self.keys.body(conv), [v[-32:] for v in versions])
        yield from zip(ids, bodies, strict=True)

    def log_batches(self, after_seq: int, count: int = 100) -> list[tuple[int, dict[bytes, bytes]]]:
        """Raw log batches whose first seq is greater than ``after_seq``."""
        res = self.r.xrange(self.keys.log, f"{after_seq + 1}-0", "+", count=count)
        return [(int(i.split(b"-")[0]), f) for i, f in res]

    def entries_after(self, after_seq: int, upto_seq: int | None = None) -> Iterator[LogEntry]:
        """Every log entry with ``after_seq < seq <= upto_seq`` (to the end if None), in order."""
        # The batch that holds after_seq + 1 may have started earlier: look one batch back.
        back = self.r.xrevrange(self.keys.log, f"{after_seq}-0", "-", count=1) if after_seq > 0 else []
        batches = [(int(i.split(b"-")[0]), f) for i, f in back]
        cursor = after_seq
        while True:
            for first, fields in batches:
                for entry in _split(first, fields):
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
            for first in batches:
                if upto_seq is not None and first > upto_seq:
                    return
                for _, fields in self.r.xrange(k.log, f"{first}-0", f"{first}-0"):
                    for entry in _split(first, fields):
                        in_range = after_seq < entry.seq and (upto_seq is None or entry.seq <= upto_seq)
                        if in_range and entry.env()["conv"] == conv:
                            yield entry
            if batches:
                low = f"({max(batches)}"
            batches = [int(b) for b in self.r.zrangebyscore(k.timeline(conv), low, "+inf", start=0, num=100)]
            if not batches:
                return


def _split(first: int, f: dict[bytes, bytes]) -> Iterator[LogEntry]:
    envs = f[b"e"].split(b"\n")
    digs = f[b"d"].decode()
    facts = f[b"f"].split(b"\n")
    file, project, agent = f[b"file"].decode(), f[b"project"].decode(), f[b"agent"].decode()
    for i, env in enumerate(envs):
        yield LogEntry(first + i, env, digs[32 * i : 32 * i + 32], facts[i], file, project, agent)


def _cursor(h: dict[bytes, bytes]) -> Cursor | None:
    if not h:
        return None
    g = h.get
    return Cursor(
        off=int(g(b"off", 0)),
        gen=int(g(b"gen", 0)),
        ino=int(g(b"ino", 0)),
        dev=int(g(b"dev", 0)),
        size=int(g(b"size", 0)),
        mtime=int(g(b"mtime", 0)),
        fp=g(b"fp", b"").decode(),
        fplen=int(g(b"fplen", 0)),
        tfp=g(b"tfp", b"").decode(),
        path=os.fsdecode(g(b"path", b"")),
    )
