"""Sealing: the line bodies of idle conversations, compressed many to a chunk.

A conversation's lines are stored raw, content-addressed, in ``{c:K}:body`` (digest → line
bytes). Once its newest record is older than an idle time (``AGG_SEAL_IDLE_S``, default an
hour), :class:`Compactor` moves them, up to :data:`~aggregator.defaults.SEAL_CHUNK_BYTES` of lines
per chunk, into ``{c:K}:chunks`` (number → one zstd frame): ``agg compact`` now, ``agg run``'s
writer in the background. Nothing else changes — the log, the timeline, ``cur``, the projections
— so replay stays byte for byte and the projections' digest is the same.

Crash-safe by construction: a chunk is built from raw values read first, then one script
(:data:`~aggregator.scripts.SEAL`) adds it and drops exactly the raw fields it holds. Killed
before the script, nothing changed; after, everything did (``tests/process/test_compaction_kill.py``).
The script refuses if any of those digests is no longer raw (another sealer was first), and the
sealer retries with what is left. A sealed conversation that gets new lines keeps them raw until
it is idle again; they are sealed into the next chunk (a line stored again after sealing, the
same bytes, may so sit in two chunks: readers take either).

Readers (:meth:`aggregator.store.Store.bodies` and the other body reads) look in ``body`` first and
in the chunks for what is missing: a body sealed between the two reads is found in its chunk
(``tests/store/test_compaction.py::test_readers_see_every_body_while_sealing_runs``).

The log is bounded the same way: :meth:`Compactor.archive_log` moves its oldest batches — those
the projections have applied, beyond the newest :data:`~aggregator.defaults.LOG_KEEP_BATCHES` —
out of the stream into compressed segments (``<ns>:log:archive``), one script
(:data:`~aggregator.scripts.LOG_ARCHIVE`) adding a segment and trimming exactly its batches.
The store's log reads (:meth:`aggregator.store.Store.log_batches` and the others) read the stream,
then the archive, so ``agg tail --since 0``, a subscription resuming from an old seq, replay and
``agg replay --rebuild`` still see every entry once, in seq order
(``tests/store/test_log_archive.py``).

On a Redis Cluster ``agg compact`` does both in every bucket, each a whole store with its own log
(:func:`compact_buckets`, :mod:`aggregator.buckets`).

Chunk format, before compression: records of a 32-byte digest (ASCII hex), the line's length (4
bytes, big-endian) and its bytes; zstd's frame records the content size. Segment format: per
batch, its first seq (8 bytes) and field count (2), then per field the name's and the value's
lengths (2 and 4 bytes), the name and the value.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import orjson
import zstandard

from aggregator import defaults, scripts
from aggregator.store import Store

if TYPE_CHECKING:
    from aggregator.buckets import Buckets

DIGEST_BYTES = 32
_LEN = struct.Struct(">I")


def pack_chunk(items: Iterable[tuple[str, bytes]], level: int = defaults.SEAL_ZSTD_LEVEL) -> bytes:
    """``(digest, line bytes)`` records as one compressed chunk."""
    parts: list[bytes] = []
    for digest, raw in items:
        d = digest.encode()
        if len(d) != DIGEST_BYTES:
            raise ValueError(f"a body digest is {DIGEST_BYTES} hex characters, not {digest!r}")
        parts += (d, _LEN.pack(len(raw)), raw)
    return zstandard.ZstdCompressor(level=level).compress(b"".join(parts))


def unpack_chunk(blob: bytes) -> Iterator[tuple[str, bytes]]:
    """The ``(digest, line bytes)`` records of a chunk made by :func:`pack_chunk`."""
    data = memoryview(zstandard.ZstdDecompressor().decompress(blob))
    at = 0
    while at < len(data):
        digest = bytes(data[at : at + DIGEST_BYTES]).decode()
        (n,) = _LEN.unpack_from(data, at + DIGEST_BYTES)
        at += DIGEST_BYTES + _LEN.size
        yield digest, bytes(data[at : at + n])
        at += n


_BATCH = struct.Struct(">QH")
_FIELD = struct.Struct(">HI")


def pack_segment(batches: Iterable[tuple[int, dict[bytes, bytes]]], level: int = defaults.SEAL_ZSTD_LEVEL) -> bytes:
    """Log batches (first seq, fields) as one compressed segment."""
    parts: list[bytes] = []
    for first, fields in batches:
        parts.append(_BATCH.pack(first, len(fields)))
        for name, value in fields.items():
            parts += (_FIELD.pack(len(name), len(value)), name, value)
    return zstandard.ZstdCompressor(level=level).compress(b"".join(parts))


def unpack_segment(blob: bytes) -> list[tuple[int, dict[bytes, bytes]]]:
    """The batches of a segment made by :func:`pack_segment`, in order."""
    data = zstandard.ZstdDecompressor().decompress(blob)
    out: list[tuple[int, dict[bytes, bytes]]] = []
    at = 0
    while at < len(data):
        first, n = _BATCH.unpack_from(data, at)
        at += _BATCH.size
        fields: dict[bytes, bytes] = {}
        for _ in range(n):
            klen, vlen = _FIELD.unpack_from(data, at)
            at += _FIELD.size
            name = data[at : at + klen]
            fields[name] = data[at + klen : at + klen + vlen]
            at += klen + vlen
        out.append((first, fields))
    return out


@dataclass
class CompactReport:
    """What one compaction did (the object ``agg compact --json`` prints)."""

    idle_s: float = 0.0
    conversations: int = 0
    """Conversations that had raw bodies sealed."""
    lines: int = 0
    """Bodies sealed (distinct line versions)."""
    raw_bytes: int = 0
    sealed_bytes: int = 0
    """Their compressed size."""
    chunks: int = 0
    left: int = 0
    """Idle conversations with raw bodies left for a later pass (the time given ran out)."""
    log_batches: int = 0
    """Log batches moved from the stream into archived segments."""
    log_segments: int = 0
    log_raw_bytes: int = 0
    log_sealed_bytes: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def add(self, other: CompactReport) -> None:
        """Count ``other`` (another bucket's compaction, same idle time) in this report."""
        for name, value in asdict(other).items():
            if name != "idle_s":
                setattr(self, name, getattr(self, name) + value)
        self.seconds = round(self.seconds, 3)


class Compactor:
    """Seals the raw bodies of idle conversations (module docstring)."""

    def __init__(
        self,
        store: Store,
        *,
        chunk_bytes: int = defaults.SEAL_CHUNK_BYTES,
        segment_batches: int = defaults.LOG_SEGMENT_BATCHES,
        level: int = defaults.SEAL_ZSTD_LEVEL,
    ) -> None:
        self.store = store
        self.chunk_bytes = chunk_bytes
        self.segment_batches = segment_batches
        self.level = level
        self._seal = store.client.register_script(scripts.SEAL)
        self._archive = store.client.register_script(scripts.LOG_ARCHIVE)

    def idle_conversations(self, idle_s: float, now_ms: int | None = None) -> list[str]:
        """Conversations with raw bodies whose newest record is at least ``idle_s`` old (or has
        no time), oldest activity first. Projections must be caught up (a conversation not
        projected yet counts as active)."""
        store = self.store
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        convs = store.conversations()
        pipe = store.r.pipeline(transaction=False)
        for conv in convs:
            pipe.hlen(store.keys.body(conv))
        raw = pipe.execute()
        candidates = [c for c, n in zip(convs, raw, strict=True) if n]
        out: list[tuple[int, str]] = []
        for conv, (events, last_ms) in zip(
            candidates, store.projection_fields(candidates, ["events", "last_ms"]), strict=True
        ):
            if events is None:
                continue  # not projected yet: its activity is unknown
            last = int(last_ms) if last_ms else 0
            if now_ms - last >= idle_s * 1000:
                out.append((last, conv))
        return [conv for _, conv in sorted(out)]

    def seal(self, conv: str, report: CompactReport) -> None:
        """Seal the raw bodies of ``conv``'s stored versions (those its ``cur`` names).

        A raw body no version names is not sealed: its line's commit has not run yet (the bytes
        go first), or never will — a line of a forgotten conversation read again, which the
        ingest script drops and deletes, and which must not outlive it in a chunk
        (tests/store/test_compaction_forget.py::test_a_forgotten_line_read_again_is_never_sealed).
        A raw copy of a body already sealed (a file read again by another host) is deleted, not
        sealed twice (``…::test_a_second_host_reading_the_same_files_does_not_double_the_sealed_bodies``).
        """
        store = self.store
        body_key, chunks_key = store.keys.body(conv), store.keys.chunks(conv)
        raw = {d.decode() for d in store.r.hkeys(body_key)}
        named = {d for v in store.r.hvals(store.keys.cur(conv)) for d in v.decode().split(",")}
        again = raw & store.sealed_bodies(conv).keys() if raw and store.r.exists(chunks_key) else set()
        if again:
            store.r.hdel(body_key, *again)
        digests = sorted((raw - again) & named)
        sealed_any = False
        for group in self._groups(body_key, digests):
            while group:
                blob = pack_chunk(group, self.level)
                call = scripts.seal_call(body=body_key, chunks=chunks_key, chunk=blob, digests=[d for d, _ in group])
                if self._seal(keys=call.keys, args=call.args):
                    sealed_any = True
                    report.chunks += 1
                    report.lines += len(group)
                    report.raw_bytes += sum(len(raw) for _, raw in group)
                    report.sealed_bytes += len(blob)
                    break
                # Another sealer took some of them: seal what is still raw.
                still = store.r.hmget(body_key, [d for d, _ in group])
                group = [(d, raw) for (d, _), raw in zip(group, still, strict=True) if raw is not None]
        if sealed_any:
            report.conversations += 1

    def _groups(self, body_key: str, digests: list[str]) -> Iterator[list[tuple[str, bytes]]]:
        """The raw bodies of ``digests`` (those still there), in groups of about chunk_bytes."""
        group: list[tuple[str, bytes]] = []
        size = 0
        for at in range(0, len(digests), defaults.REPLAY_CHUNK):
            names = digests[at : at + defaults.REPLAY_CHUNK]
            for d, raw in zip(names, self.store.r.hmget(body_key, names), strict=True):
                if raw is None:
                    continue
                if group and size + len(raw) > self.chunk_bytes:
                    yield group
                    group, size = [], 0
                group.append((d, raw))
                size += len(raw)
        if group:
            yield group

    def archive_log(self, report: CompactReport, *, keep: int = defaults.LOG_KEEP_BATCHES) -> bool:
        """Move the log's oldest batch segment out of the stream, if the stream holds more than
        ``keep`` batches and the projections have applied it; False when there is nothing to move."""
        store = self.store
        keys = store.keys
        applied = store.projections_seq()
        head = store.r.xrange(keys.log, "-", "+", count=self.segment_batches)
        spare = store.r.xlen(keys.log) - keep
        segment: list[tuple[int, dict[bytes, bytes]]] = []
        size = 0
        for entry_id, fields in head[: max(spare, 0)]:
            first = int(entry_id.split(b"-")[0])
            if first > applied or (segment and size > self.chunk_bytes):
                break  # projections read the stream; what they have not applied stays there
            segment.append((first, fields))
            size += sum(len(v) for v in fields.values())
        # Only whole batches go; a batch holding seqs the projections have not applied stays
        # (its first seq may be applied while its last is not).
        while segment and _last_seq(*segment[-1]) > applied:
            segment.pop()
        if not segment:
            return False
        blob = pack_segment(segment, self.level)
        call = scripts.log_archive_call(
            log=keys.log,
            archive=keys.log_archive,
            segments=keys.log_segments,
            proj_lock=keys.proj_lock,
            segment=blob,
            firsts=[first for first, _ in segment],
        )
        moved = self._archive(keys=call.keys, args=call.args)
        if moved == 1:
            report.log_batches += len(segment)
            report.log_segments += 1
            report.log_raw_bytes += size
            report.log_sealed_bytes += len(blob)
        return bool(moved != -1)  # moved, or the stream changed: look again; -1: a rebuild or forget runs

    def run(
        self,
        idle_s: float,
        *,
        budget_s: float | None = None,
        keep_log: int = defaults.LOG_KEEP_BATCHES,
        progress: Callable[[int, int], None] | None = None,
    ) -> CompactReport:
        """Seal every idle conversation and archive the log down to ``keep_log`` batches (or as
        much as ``budget_s`` seconds allow)."""
        started = time.perf_counter()
        report = CompactReport(idle_s=idle_s)

        def out_of_time() -> bool:
            return budget_s is not None and time.perf_counter() - started >= budget_s

        todo = self.idle_conversations(idle_s)
        for i, conv in enumerate(todo):
            if out_of_time():
                report.left = len(todo) - i
                break
            self.seal(conv, report)
            if progress is not None:
                progress(i + 1, len(todo))
        while not out_of_time() and self.archive_log(report, keep=keep_log):
            pass
        report.seconds = round(time.perf_counter() - started, 3)
        return report


def compact_buckets(buckets: Buckets, idle_s: float, *, keep_log: int = defaults.LOG_KEEP_BATCHES) -> CompactReport:
    """``agg compact``: each bucket's projections caught up (idleness is read from them), then the
    bucket compacted (:meth:`Compactor.run`, ``keep_log`` batches kept in each bucket's log); one
    report summed over the buckets — on a single Redis, the one store's."""
    from aggregator.projections import Projector  # not for the readers of chunks and segments

    report = CompactReport(idle_s=idle_s)
    for store in buckets:
        Projector(store).catch_up()
        report.add(Compactor(store).run(idle_s, keep_log=keep_log))
    return report


def _last_seq(first: int, fields: dict[bytes, bytes]) -> int:
    """The seq of a log batch's last entry (one envelope per entry, ``\n``-joined)."""
    return first + fields[b"e"].count(b"\n")


def forget_archived(store: Store, conv: str, firsts: Iterable[int]) -> tuple[int, int]:
    """Blank ``conv``'s entries in the archived log batches ``firsts`` (its timeline's batches),
    as :data:`~aggregator.scripts.FORGET` does in the stream — an entry's envelope and facts
    emptied, its digest zeros, a batch left with no entry dropped; its own earlier ``agg-forget``
    entries, which are not in its timeline, stay (as in the stream).
    Returns (batches dropped, batches rewritten).

    ``agg forget`` runs it before the FORGET script, holding the projections' lock, during which
    nothing is archived (:data:`~aggregator.scripts.LOG_ARCHIVE` refuses): what the script then
    removes from the stream and what was scrubbed here are the whole log. Killed in between, the
    conversation is still there, less its archived entries, and ``agg forget`` again finishes."""
    keys = store.keys
    replace = store.client.register_script(scripts.SEGMENT_REPLACE)
    firsts = set(firsts)
    members = [m.decode() for m in store.r.zrange(keys.log_segments, 0, -1)]
    members = [m for m in members if any(int(m.split(":")[0]) <= f <= int(m.split(":")[1]) for f in firsts)]
    dropped = rewritten = 0
    for member in members:
        while (old := store.r.hget(keys.log_archive, member.split(":")[0])) is not None:
            batches, d, r = _blank(unpack_segment(old), conv, firsts)
            if not d and not r:
                break
            new = pack_segment(batches) if batches else b""
            call = scripts.segment_replace_call(
                archive=keys.log_archive, segments=keys.log_segments, member=member, old=old, new=new
            )
            if replace(keys=call.keys, args=call.args):
                dropped, rewritten = dropped + d, rewritten + r
                break
            # another forget rewrote it first: blank its copy
    return dropped, rewritten


def _blank(
    batches: list[tuple[int, dict[bytes, bytes]]], conv: str, firsts: set[int]
) -> tuple[list[tuple[int, dict[bytes, bytes]]], int, int]:
    """``batches`` with ``conv``'s entries blanked in those starting at ``firsts``; and how many
    batches were dropped / rewritten."""
    out: list[tuple[int, dict[bytes, bytes]]] = []
    dropped = rewritten = 0
    for first, fields in batches:
        if first not in firsts:
            out.append((first, fields))
            continue
        envs = fields[b"e"].split(b"\n")
        facts = fields[b"f"].split(b"\n")
        digests = fields[b"d"]
        hit = [bool(env) and orjson.loads(env).get("conv") == conv for env in envs]
        if not any(hit):
            out.append((first, fields))
            continue
        if all(h or not env for h, env in zip(hit, envs, strict=True)):
            dropped += 1
            continue
        rewritten += 1
        blank = b"0" * DIGEST_BYTES
        out.append(
            (
                first,
                {
                    **fields,
                    b"e": b"\n".join(b"" if h else e for h, e in zip(hit, envs, strict=True)),
                    b"f": b"\n".join(b"" if h else f for h, f in zip(hit, facts, strict=True)),
                    b"d": b"".join(
                        blank if h else digests[DIGEST_BYTES * i : DIGEST_BYTES * (i + 1)] for i, h in enumerate(hit)
                    ),
                },
            )
        )
    return out, dropped, rewritten
