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

Chunk format, before compression: records of a 32-byte digest (ASCII hex), the line's length (4
bytes, big-endian) and its bytes; zstd's frame records the content size.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import zstandard

from aggregator import defaults, scripts
from aggregator.store import Store

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
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Compactor:
    """Seals the raw bodies of idle conversations (module docstring)."""

    def __init__(
        self,
        store: Store,
        *,
        chunk_bytes: int = defaults.SEAL_CHUNK_BYTES,
        level: int = defaults.SEAL_ZSTD_LEVEL,
    ) -> None:
        self.store = store
        self.chunk_bytes = chunk_bytes
        self.level = level
        self._seal = store.client.register_script(scripts.SEAL)

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
        """Seal every raw body ``conv`` has now."""
        store = self.store
        body_key, chunks_key = store.keys.body(conv), store.keys.chunks(conv)
        digests = sorted(d.decode() for d in store.r.hkeys(body_key))
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

    def run(
        self,
        idle_s: float,
        *,
        budget_s: float | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> CompactReport:
        """Seal every idle conversation (or as many as ``budget_s`` seconds allow)."""
        started = time.perf_counter()
        report = CompactReport(idle_s=idle_s)
        todo = self.idle_conversations(idle_s)
        for i, conv in enumerate(todo):
            if budget_s is not None and time.perf_counter() - started >= budget_s:
                report.left = len(todo) - i
                break
            self.seal(conv, report)
            if progress is not None:
                progress(i + 1, len(todo))
        report.seconds = round(time.perf_counter() - started, 3)
        return report
