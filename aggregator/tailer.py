"""Reading a transcript from its committed offset and committing what it holds, batch by batch.

Used by ``agg ingest`` (once per file) and by the watcher (whenever a file may have changed).

* The file is streamed in chunks from the offset committed in Redis; it is never read whole.
* Only newline-terminated lines are consumed; an unterminated last line waits for its newline.
* Batches are cut by bytes and lines; each is committed by the ingest script, which moves the
  cursor in the same atomic step as the events it covers. A crash at any instant leaves both or
  neither (``tests/test_kill.py``).
* Before resuming, the file is checked against its cursor: another inode, a size below the
  offset, a different head or a different tail (the bytes just before the offset), or a changed
  mtime without growth all mean it was replaced or rewritten — it is then re-read from the start
  and the store's dedupe keeps what was already there (``tests/test_tailer_real.py``).
* If the commit's compare-and-set fails (another process advanced the cursor), the cursor is
  re-read from Redis and the file resumed from there — never from what this process remembers.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from aggregator import defaults
from aggregator.errors import CursorConflict, StoreError
from aggregator.layout import SourceFile
from aggregator.parse import Event, Rejection, parse_line
from aggregator.store import CommitResult, Cursor, Store

Progress = Callable[[int], None]


@dataclass
class FileResult:
    """What syncing one file did."""

    file: str
    lines: int = 0
    events_added: int = 0
    revisions: int = 0
    duplicates: int = 0
    rejected: int = 0
    bytes: int = 0
    reset: str | None = None
    """Why the file was re-read from the start (replaced, truncated, rewritten), if it was."""
    skipped: str | None = None
    """Why the file was not read (vanished, not a regular file, unreadable), if it was not."""
    last_seq: int = 0

    def add(self, r: CommitResult, lines: int, nbytes: int) -> None:
        self.lines += lines
        self.events_added += r.added
        self.revisions += r.revisions
        self.duplicates += r.duplicates
        self.rejected += r.rejected
        self.bytes += nbytes
        self.last_seq = max(self.last_seq, r.last_seq)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fp(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


class Tailer:
    """Syncs files into a :class:`~aggregator.store.Store`."""

    def __init__(
        self,
        store: Store,
        *,
        batch_bytes: int = defaults.BATCH_BYTES,
        batch_lines: int = defaults.BATCH_LINES,
        max_line_bytes: int = defaults.MAX_LINE_BYTES,
        read_chunk_bytes: int = defaults.READ_CHUNK_BYTES,
    ) -> None:
        self.store = store
        self.batch_bytes = batch_bytes
        self.batch_lines = batch_lines
        self.max_line_bytes = max_line_bytes
        self.read_chunk_bytes = read_chunk_bytes
        self._pool: ThreadPoolExecutor | None = None

    def committer(self) -> ThreadPoolExecutor:
        """The thread that commits batch N while this one parses batch N+1."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agg-commit")
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def sync(self, sf: SourceFile, progress: Progress | None = None) -> FileResult:
        """Commit every complete line of ``sf`` beyond its cursor; returns what was done."""
        fid = self.store.file_id(sf.path)
        result = FileResult(sf.display)
        for _ in range(defaults.CAS_RETRIES):
            try:
                self._sync_once(sf, fid, self.store.cursor(fid), result, progress)
                return result
            except CursorConflict:
                continue  # another ingester moved the cursor: start over from what Redis holds
        raise StoreError(f"gave up on {sf.display}: its cursor kept moving under us")

    # ------------------------------------------------------------------------------------------
    def _sync_once(
        self, sf: SourceFile, fid: str, cur: Cursor | None, result: FileResult, progress: Progress | None
    ) -> None:
        try:
            # O_NONBLOCK: if the path was swapped for a FIFO after discovery, open must not hang.
            fd = os.open(sf.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            result.skipped = "vanished"
            return
        except OSError as e:
            result.skipped = f"unreadable: {e.strerror or e}"
            return
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                result.skipped = "not a regular file"
                return
            _Reader(self, sf, fid, fd, st, cur, result, progress).run()
        finally:
            os.close(fd)


class _Reader:
    """One pass over one open file."""

    def __init__(
        self,
        t: Tailer,
        sf: SourceFile,
        fid: str,
        fd: int,
        st: os.stat_result,
        cur: Cursor | None,
        result: FileResult,
        progress: Progress | None,
    ) -> None:
        self.t, self.sf, self.fid, self.fd, self.st = t, sf, fid, fd, st
        self.result, self.progress = result, progress
        self.gen = cur.gen if cur else 0
        self.head = os.pread(fd, defaults.FINGERPRINT_BYTES, 0)
        reason = self._changed(cur) if cur else None
        if reason:
            result.reset = reason
        self.start = 0 if (cur is None or reason) else cur.off
        self.committed = self.start
        self.dirty = cur is None or bool(reason)  # identity to record even if no line is read
        # The bytes just before the resume offset (not beyond it: the file may have grown).
        lo = max(0, self.start - defaults.FINGERPRINT_BYTES)
        self.window = b"" if self.start == 0 else os.pread(fd, self.start - lo, lo)
        self.items: list[Event | Rejection] = []
        self.raws: list[bytes] = []  # every consumed line of the batch (for the tail fingerprint)
        self.batch_bytes = 0
        self.batch_lines = 0
        # Batches handed to the committer thread, oldest first: (future, lines, bytes). Each expects
        # the generation the previous one will leave; if one loses the compare-and-set, every later
        # one fails it too and nothing of theirs is committed.
        self.pending: deque[tuple[Future[CommitResult], int, int]] = deque()
        self.next_gen = self.gen

    def _changed(self, cur: Cursor) -> str | None:
        st, fd = self.st, self.fd
        if (st.st_ino, st.st_dev) != (cur.ino, cur.dev):
            return "replaced"
        if st.st_size < cur.off:
            return "truncated"
        if cur.fplen and _fp(self.head[: cur.fplen]) != cur.fp:
            return "rewritten"
        if cur.off:
            lo = max(0, cur.off - defaults.FINGERPRINT_BYTES)
            if _fp(os.pread(fd, cur.off - lo, lo)) != cur.tfp:
                return "rewritten"
        if st.st_size == cur.size and st.st_mtime_ns != cur.mtime:
            return "rewritten"  # same size, new content: an in-place rewrite
        return None

    def run(self) -> None:
        try:
            self._run()
            while self.pending:
                self._collect()
        finally:
            for future, _, _ in self.pending:  # failing: let queued commits end, ignore outcomes
                with contextlib.suppress(Exception):
                    future.result()

    def _run(self) -> None:
        t = self.t
        pos = self.start
        line_off = self.start
        pieces: list[bytes] = []
        pending = 0
        skipping = False  # inside a line longer than max_line_bytes
        long_tail = b""  # the last bytes of that line, for the tail fingerprint
        while True:
            chunk = os.pread(self.fd, t.read_chunk_bytes, pos)
            if not chunk:
                break
            pos += len(chunk)
            parts = chunk.split(b"\n")
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                if skipping:
                    pending += len(part)
                    long_tail = (long_tail + part)[-defaults.FINGERPRINT_BYTES :]
                    if not last:
                        self._reject_long(line_off, pending, pieces[0], long_tail)
                        line_off += pending + 1
                        pieces, pending, skipping, long_tail = [], 0, False, b""
                    continue
                if last:
                    if part:
                        pieces.append(part)
                        pending += len(part)
                        if pending > t.max_line_bytes:
                            skipping = True
                            joined = b"".join(pieces)
                            long_tail = joined[-defaults.FINGERPRINT_BYTES :]
                            pieces = [joined[: defaults.REJECT_PREFIX_BYTES]]
                    continue
                line = b"".join((*pieces, part)) if pieces else part
                pieces, pending = [], 0
                self._line(line, line_off)
                line_off += len(line) + 1
                if self.batch_bytes >= t.batch_bytes or self.batch_lines >= t.batch_lines:
                    self._commit(line_off, pos, final=False)
        self._commit(line_off, pos, final=True)

    def _line(self, line: bytes, off: int) -> None:
        if len(line) > self.t.max_line_bytes:
            self._reject_long(off, len(line), line[: defaults.REJECT_PREFIX_BYTES], line[-defaults.FINGERPRINT_BYTES :])
            return
        parsed = parse_line(line, off, self.sf)
        if parsed is not None:
            self.items.append(parsed)
        self.raws.append(line)
        self.batch_bytes += len(line) + 1
        self.batch_lines += 1

    def _reject_long(self, off: int, size: int, prefix: bytes, tail: bytes) -> None:
        self.items.append(
            Rejection(
                off,
                size,
                f"line too long ({size} bytes > {self.t.max_line_bytes})",
                _fp(prefix + str(size).encode()),
                prefix,
            )
        )
        self.raws.append(tail)  # the line's last bytes: all the tail fingerprint needs
        self.batch_bytes += size + 1
        self.batch_lines += 1

    def _commit(self, off: int, pos: int, *, final: bool) -> None:
        if off == self.committed and not self.dirty:
            return
        fpb = defaults.FINGERPRINT_BYTES
        acc: list[bytes] = []
        n = 0
        for raw in reversed(self.raws):
            acc.append(raw + b"\n")
            n += len(raw) + 1
            if n >= fpb:
                break
        else:
            acc.append(self.window)
        self.window = b"".join(reversed(acc))[-fpb:]
        fplen = min(fpb, off, len(self.head))
        cursor: dict[str, Any] = {
            "off": off,
            "ino": self.st.st_ino,
            "dev": self.st.st_dev,
            "size": pos,
            "mtime": os.fstat(self.fd).st_mtime_ns if final else self.st.st_mtime_ns,
            "fp": _fp(self.head[:fplen]),
            "fplen": fplen,
            "tfp": _fp(self.window[-min(fpb, off) :] if off else b""),
            "path": os.fsencode(self.sf.path),
            "host": self.t.store.host,
            "conv": self.sf.session or "",
            "project": self.sf.project,
            "agent": self.sf.agent or "",
            "kind": self.sf.kind,
        }
        items = self.items
        while len(self.pending) >= defaults.COMMITS_IN_FLIGHT:
            self._collect()
        future = self.t.committer().submit(self.t.store.commit, self.sf, self.fid, self.next_gen, cursor, items)
        self.next_gen += 1
        self.pending.append((future, len(items), off - self.committed))
        self.committed = off
        self.dirty = False
        self.items, self.raws = [], []
        self.batch_bytes = self.batch_lines = 0

    def _collect(self) -> None:
        """Wait for the oldest queued commit (raises CursorConflict if it lost the race)."""
        future, lines, nbytes = self.pending.popleft()
        res = future.result()
        self.result.add(res, lines, nbytes)
        if self.progress:
            self.progress(nbytes)
