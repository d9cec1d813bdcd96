"""The batching writer: ``current.json``, rebuilt incrementally, replaced atomically (docs/design.md §5).

:class:`SnapshotWriter` keeps the snapshot's parts in memory between writes and reads only what
changed, by seq:

* ``GET <ns>:seq`` tells whether anything was committed since the last write (nothing → no
  write; an idle writer costs one GET per tick);
* the projections are caught up (:meth:`Projector.catch_up`), then the conversations whose
  projection changed since the last write (the projector's changed-conversations index — an entry
  of one conversation can change another's title, links or usage) are re-read
  (:func:`aggregator.views.conversation_views`);
* the messages come from the recent-messages projection (:func:`aggregator.views.recent_messages`),
  reusing the previews of messages already shown whose newest version is still the one previewed,
  so only new or revised messages' bodies are fetched. The log is read once, by the projector:
  which version of a message is newest is the store's index of versions, not a second pass over
  the log (``tests/store/test_snapshot_writer.py::test_a_revision_renews_its_preview_without_reading_the_log``).

A write goes to a temp file that is fsynced and renamed over ``current.json`` (mode 0600), then
``<ns>:snapshot`` records when and what, and a notice is published on ``<ns>:snapshots``. The
``seq`` of successive snapshots never goes back: after Redis lost writes, the writer waits until
the store is past what it already wrote (``tests/process/test_snapshot_writer.py``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from aggregator import defaults
from aggregator.buckets import Buckets
from aggregator.compaction import Compactor
from aggregator.config import Settings, seal_idle_s
from aggregator.connection import is_away
from aggregator.errors import first_line
from aggregator.files import write_private
from aggregator.keys import Keys
from aggregator.lifecycle import StopFlag
from aggregator.live.service import Service
from aggregator.projections import Projector
from aggregator.seqfloor import SeqFloor, seq_in_file
from aggregator.store import Store
from aggregator.text import iso_ms
from aggregator.views import Previews, conversation_views, recent_messages

log = logging.getLogger("agg.writer")


def with_separators(messages: list[dict[str, Any]], titles: dict[str, str | None]) -> list[dict[str, Any]]:
    """``messages`` with ``{"separator": true, "conv", "title"}`` wherever the conversation changes."""
    out: list[dict[str, Any]] = []
    prev: str | None = None
    for m in messages:
        conv = m["conv"]
        if prev is not None and conv != prev:
            out.append({"separator": True, "conv": conv, "title": titles.get(conv)})
        out.append(m)
        prev = conv
    return out


def _order(view: dict[str, Any]) -> tuple[bool, str, str]:
    # newest activity first; conversations without a timestamp last
    return (view.get("last_ts") is None, _neg(view.get("last_ts") or ""), view["key"])


def _neg(text: str) -> str:
    return "".join(chr(0x10FFFF - ord(c)) for c in text)


class SnapshotWriter:
    """Builds ``current.json`` from the store, incrementally, and writes it atomically."""

    def __init__(
        self,
        store: Store,
        output: Path,
        *,
        floor: SeqFloor | None = None,
        messages: int = defaults.WRITER_MESSAGES,
        clock: Callable[[], float] = time.time,
        start_seq: int | None = None,
    ) -> None:
        self.store = store
        self.output = Path(output)
        self.floor = floor
        self.limit = messages
        self.clock = clock
        self.projector = Projector(store)
        self.seq = seq_in_file(self.output) if start_seq is None else start_seq
        """The seq the last snapshot covered (the one on disk, at start): never written lower."""
        self.views: dict[str, dict[str, Any]] = {}
        self.previews: Previews = {}
        self.messages: list[dict[str, Any]] = []
        self.built = False
        self.mark = 0.0
        """The newest projection change mark reflected in ``views``."""
        self._written_active: dict[str, bool] = {}
        self.writes = 0
        self._raised_seen = floor.raised if floor else 0
        self._unwritten = False

    # --- building ------------------------------------------------------------------------------
    def refresh(self) -> bool:
        """Bring the in-memory snapshot up to date; True if it differs from the last one written."""
        if self.floor is not None and self.floor.raised != self._raised_seen:
            self._raised_seen = self.floor.raised
            self.built = False  # Redis went back: what we hold may include events it lost
        head = self.store.last_seq()
        if self.built and head <= self.seq:
            return self._active_changed()
        self.projector.catch_up()
        cp = self.projector.checkpoint()
        if cp <= self.seq and (self.built or (self.seq > 0 and cp < self.seq)):
            # nothing new, or a store behind what we already wrote: keep the file as it is
            return self._active_changed() if self.built else False
        if not self.built:
            self.views = {}
            self.mark = self.projector.change_mark()  # before reading: later changes are re-read
            self._set_views(conversation_views(self.store))
            self.previews.clear()
            self.built = True
        else:
            changed, self.mark = self.projector.changed_since(self.mark)
            views = conversation_views(self.store, changed)
            for gone in set(changed) - {v["key"] for v in views}:
                self.views.pop(gone, None)  # forgotten (agg forget): its projection is gone
            self._set_views(views)
        self.messages = recent_messages(self.store, self.limit, known=self.previews)
        self.seq = max(self.seq, cp)
        return True

    def _set_views(self, views: list[dict[str, Any]]) -> None:
        for view in views:
            self.views[view["key"]] = view

    def _active_changed(self) -> bool:
        """Re-read the conversations shown as active (the flag expires with time, without any new
        event); True if one of them is no longer active in the file's terms."""
        active = [k for k, v in self.views.items() if v.get("active")]
        if not active:
            return False
        self._set_views(conversation_views(self.store, active))
        return any(self._written_active.get(k) != self.views[k]["active"] for k in active if k in self.views)

    def document(self) -> dict[str, Any]:
        """The ``current.json`` object for what is in memory."""
        convs = sorted(self.views.values(), key=_order)
        titles = {v["key"]: v.get("title") for v in convs}
        return {
            "schema": defaults.CURRENT_SCHEMA,
            "generated_at": iso_ms(int(self.clock() * 1000)),
            "namespace": self.store.keys.ns,
            "seq": self.seq,
            "conversations": convs,
            "messages": with_separators(self.messages, titles),
        }

    def mark_written(self) -> None:
        """The file now shows what is in memory (the ``active`` flags it shows are known)."""
        self._written_active = {k: v["active"] for k, v in self.views.items()}

    # --- writing -------------------------------------------------------------------------------
    def write(self) -> dict[str, Any]:
        """Write ``current.json`` atomically (0600), record and announce it; returns the notice."""
        store, at_ms = self.store, int(self.clock() * 1000)
        notice = publish_snapshot(self.document(), self.output, store.client, store.keys, store.host, at_ms)
        self.writes += 1
        self.mark_written()
        if self.floor is not None:
            self.floor.observe(self.seq)
        return notice

    def write_if_changed(self) -> dict[str, Any] | None:
        """Refresh, and write if anything changed (or the last write failed); returns the notice
        of a write, else None. A failed write (``OSError``) leaves the old file and is retried."""
        if self.refresh() or self._unwritten or not self.output.exists():
            self._unwritten = True
            notice = self.write()
            self._unwritten = False
            return notice
        return None


def publish_snapshot(
    doc: dict[str, Any], output: Path, client: Any, keys: Keys, host: str, at_ms: int
) -> dict[str, Any]:
    """Write ``doc`` to ``output`` atomically (0600), record the write in ``<ns>:snapshot`` and
    announce it on ``<ns>:snapshots``; returns the notice."""
    data = orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_private(output, data)
    notice = {
        "seq": doc["seq"],
        "generated_at": doc["generated_at"],
        "path": str(output),
        "conversations": len(doc["conversations"]),
        "messages": sum(1 for m in doc["messages"] if not m.get("separator")),
        "bytes": len(data),
    }
    record = {k: notice[k] for k in ("seq", "path", "conversations", "messages")}
    client.hset(keys.snapshot, mapping={"at_ms": at_ms, "host": host, **record})
    client.publish(keys.snapshots_channel, orjson.dumps(notice))  # not pipelined: a cluster refuses that
    return notice


class BucketsSnapshotWriter(SnapshotWriter):
    """``current.json`` of a store on a Redis Cluster: a :class:`SnapshotWriter` per bucket keeps
    that bucket's part up to date; the file joins them. Its ``seq`` is the sum of the buckets'
    seqs (it grows whenever any bucket's does), and ``seqs`` maps each bucket to its own; the
    messages are the newest ``messages`` of all buckets by record time (ties by bucket, then
    seq). The write is recorded in ``<ns>:snapshot`` and announced on ``<ns>:snapshots``, the
    namespace's own keys (plain commands, no script: any slot will do)."""

    def __init__(
        self,
        buckets: Buckets,
        output: Path,
        *,
        messages: int = defaults.WRITER_MESSAGES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(buckets.stores[0], output, messages=messages, clock=clock)
        self.buckets = buckets
        seqs = _seqs_in_file(self.output)
        self.parts = [
            SnapshotWriter(store, output, messages=messages, clock=clock, start_seq=seqs.get(str(i), 0))
            for i, store in enumerate(buckets)
        ]

    def refresh(self) -> bool:
        changed = [part.refresh() for part in self.parts]  # every part, not up to the first change
        self.views = {k: v for part in self.parts for k, v in part.views.items()}
        tagged = [(m.get("ts") or "", i, m["seq"], m) for i, part in enumerate(self.parts) for m in part.messages]
        tagged.sort(key=lambda t: t[:3])
        self.messages = [{**m, "bucket": i} for _, i, _, m in tagged[-self.limit :]] if self.limit else []
        self.seq = sum(part.seq for part in self.parts)
        self.built = all(part.built for part in self.parts)
        return any(changed)

    def document(self) -> dict[str, Any]:
        doc = super().document()
        doc["namespace"] = self.buckets.keys.ns
        doc["seqs"] = {str(i): part.seq for i, part in enumerate(self.parts)}
        return doc

    def write(self) -> dict[str, Any]:
        b, at_ms = self.buckets, int(self.clock() * 1000)
        notice = publish_snapshot(self.document(), self.output, b.client, b.keys, b.host, at_ms)
        self.writes += 1
        for part in self.parts:
            part.mark_written()
        return notice


def _seqs_in_file(path: Path) -> dict[str, int]:
    """The ``seqs`` of a cluster store's ``current.json`` ({} if none or unreadable)."""
    try:
        seqs = orjson.loads(path.read_bytes()).get("seqs")
        return {str(k): int(v) for k, v in seqs.items()} if isinstance(seqs, dict) else {}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


class WriterService(Service):
    """``agg writer``: rewrite ``current.json`` when something changed, at most every ``interval``;
    between writes, seal idle conversations (:mod:`aggregator.compaction`), a slice at a time.

    A subscription to ``<ns>:events`` wakes it as soon as something is committed (so the first
    change after a quiet spell is written at once); a timer every ``interval`` covers a missed
    message and ``active`` flags that expire with time. Redis outages (``OOM`` and ``MISCONF``
    included) are waited out (:class:`~aggregator.live.service.Service`). A write that fails (a
    full disk) keeps the old file, is said once in the log and in ``agg status``, and is tried
    again (``tests/adversarial/test_files.py::test_writer_on_a_full_disk_keeps_the_old_file_and_retries``).
    """

    role = "writer"
    serving_state = "writing"

    def __init__(self, settings: Settings, stop: StopFlag, output: Path, interval: float) -> None:
        super().__init__(settings, stop)
        self.output = output
        self.interval = interval
        self.writer: SnapshotWriter | None = None
        self.last_write = 0.0
        self.write_error: str | None = None
        self.writes = 0
        self._pubsub: Any = None
        self.seal_idle_s = seal_idle_s()
        self.sealed_lines = 0
        self.seal_turn = 0
        """Looks for idle conversations so far: bucket ``seal_turn % buckets`` is next."""

    def on_start(self) -> None:
        self.state.update(output=str(self.output), interval_s=self.interval)

    def on_lost(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                self._pubsub.close()
            self._pubsub = None

    def serve(self) -> None:
        store, buckets = self.store, self.buckets
        assert store is not None and buckets is not None
        self._build()
        self.met_another_server()  # from here on
        self._pubsub = store.client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(*(s.keys.events_channel for s in buckets))
        # A timer re-checks even without a message (one may be lost; `active` flags expire with
        # time); it never spins, whatever the interval.
        check_every = max(self.interval, 1.0)
        dirty = True
        next_check = time.monotonic() + check_every
        first = True
        next_seal = 0.0  # the first look comes right after the first write
        while not self.stop:
            now = time.monotonic()
            if now >= next_check:
                dirty, next_check = True, now + check_every
            if self.met_another_server():
                # What was built from the old server may be more than the store holds now, and
                # its change marks ahead of the new one's: build again.
                self._build()
                dirty = True
            if dirty and now - self.last_write >= self.interval:
                dirty = not self._write()
                if first:
                    self.serving()
                    first = False
                continue
            if now >= next_seal:
                # A slice of sealing at a time, between writes: current.json is never late by
                # more than one slice (the rest is sealed at the next looks, a second apart).
                # One bucket per look (a cluster has many), the next bucket a second later.
                left = self._seal(buckets.stores[self.seal_turn % len(buckets)])
                self.seal_turn += 1
                round_done = self.seal_turn % len(buckets) == 0
                next_seal = time.monotonic() + (1.0 if left or not round_done else defaults.SEAL_CHECK_S)
            timeout = self.last_write + self.interval - now if dirty else next_check - now
            msg = self._pubsub.get_message(timeout=min(max(timeout, 0.0), 1.0))
            if msg is not None and msg.get("type") == "message":
                dirty = True
                # drain what else arrived meanwhile: one write covers them all
                while self._pubsub.get_message(timeout=0) is not None:
                    pass
            self.check_due()
            if self.state.due(defaults.STATE_HEARTBEAT_S):
                self.state.update(**self.figures())

    def _build(self) -> None:
        """A new snapshot writer, from what Redis holds now (after an outage or a failover it may
        hold less than before)."""
        assert self.store is not None and self.buckets is not None
        if self.buckets.cluster:
            self.writer = BucketsSnapshotWriter(self.buckets, self.output)
        else:
            self.writer = SnapshotWriter(self.store, self.output, floor=self.floor)

    def _write(self) -> bool:
        """Write if something changed; False if the write failed (it is tried again)."""
        assert self.writer is not None
        try:
            notice = self.writer.write_if_changed()
        except OSError as e:
            # A full (or read-only) disk: the old file stays whole (write_private replaces it only
            # once the new one is written); say so once, try again at the next check.
            self.last_write = time.monotonic()  # waits an interval before the next attempt
            error = f"cannot write {self.output}: {e.strerror or e}; keeping the old file, trying again"
            if error != self.write_error:
                self.log.warning("%s", error)
                self.write_error = error
                self.state.update(error=error)
            return False
        if self.write_error is not None:
            self.log.info("%s written again", self.output)
            self.write_error = None
            self.state.update(error=None)
        if notice is not None:
            self.last_write = time.monotonic()  # only real writes count against the interval
            self.state.update(last_snapshot_at=notice["generated_at"], seq=notice["seq"], writes=self.writer.writes)
            # The first write is news (where the file is); the next ones are routine.
            self.writes += 1
            self.log.log(
                logging.INFO if self.writes == 1 else logging.DEBUG,
                "wrote %s: seq %d, %d conversations, %d messages",
                self.output,
                notice["seq"],
                notice["conversations"],
                notice["messages"],
            )
        return True

    def _seal(self, store: Store) -> int:
        """Seal idle conversations for up to :data:`~aggregator.defaults.SEAL_TICK_S`; returns how
        many idle ones are left for the next look."""
        report = Compactor(store).run(self.seal_idle_s, budget_s=defaults.SEAL_TICK_S)
        if report.lines:
            self.sealed_lines += report.lines
            self.state.update(sealed_lines=self.sealed_lines)
            self.log.info(
                "sealed %d lines of %d idle conversations: %.1f MB -> %.1f MB",
                report.lines,
                report.conversations,
                report.raw_bytes / 1e6,
                report.sealed_bytes / 1e6,
            )
        if report.log_batches:
            self.log.debug("archived %d log batches", report.log_batches)
        return report.left

    def final(self) -> None:
        """On the way out: one last write if something changed (and Redis is there)."""
        if self.writer is None or self.redis.down:
            return
        try:
            self._write()
        except Exception as e:
            if not is_away(e):
                raise
            self.log.warning("no final snapshot (%s)", first_line(e))

    def figures(self) -> dict[str, Any]:
        return {"store_resets": self.store_resets}
