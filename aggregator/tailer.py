"""Reading a transcript from its committed offset and committing what it holds, batch by batch.

Used by ``agg ingest`` (:meth:`Tailer.sync_all` over every file) and by the watcher
(:meth:`Tailer.sync` whenever a file may have changed).

* The file is streamed in chunks from the offset committed in Redis; it is never read whole.
* Only newline-terminated lines are consumed; an unterminated last line waits for its newline.
  How far such a line has been scanned is remembered (per file, in this process), so each append
  to it reads only the new bytes, not the line again from its start — a 60 MB line growing by
  1 KB at a time costs 1 KB per sync until its newline comes
  (``tests/adversarial/test_files.py::test_an_unterminated_long_line_is_not_read_again_on_every_append``).
* Batches are cut by bytes and lines; each is committed by the ingest script, which moves the
  cursor in the same atomic step as the events it covers. A crash at any instant leaves both or
  neither (``tests/process/test_kill.py``). Batches go through a :class:`~aggregator.store.CommitStream`,
  so Redis stores earlier batches (of this file or of earlier files) while the next is parsed.
* Before resuming, the file is checked against its cursor: another inode, a size below the
  offset, a different head or a different tail (the bytes just before the offset), or a changed
  mtime without growth all mean it was replaced or rewritten — it is then re-read from the start
  and the store's dedupe keeps what was already there (``tests/store/test_tailer.py``).
* If the commit's compare-and-set fails (another process advanced the cursor), the cursor is
  re-read from Redis and the file resumed from there — never from what this process remembers.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from aggregator import defaults
from aggregator.errors import StoreError
from aggregator.layout import SourceFile
from aggregator.parse import Event, Rejection, parse_line
from aggregator.sidecars import Sidecars
from aggregator.store import Batch, Chain, CommitResult, Cursor, Store

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
    forgotten: int = 0
    """Lines of a forgotten conversation dated at or before its forget: dropped (``agg forget``)."""
    bytes: int = 0
    reset: str | None = None
    """Why the file was re-read from the start (replaced, truncated, rewritten), if it was."""
    skipped: str | None = None
    """Why the file was not read (vanished, not a regular file, unreadable), if it was not."""
    last_seq: int = 0
    offset: int = 0
    """The file's committed offset after the sync (what lies beyond it is an unfinished line)."""

    def add(self, r: CommitResult, lines: int, nbytes: int) -> None:
        self.lines += lines
        self.events_added += r.added
        self.revisions += r.revisions
        self.duplicates += r.duplicates
        self.rejected += r.rejected
        self.forgotten += r.forgotten
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
        self.sidecars = Sidecars(store)
        self.partial: dict[str, tuple[int, int, int, int]] = {}
        """File id → (inode, device, committed offset, bytes scanned): the bytes between the
        offset and the scanned end hold no newline (an unterminated last line)."""

    def sync(self, sf: SourceFile, progress: Progress | None = None) -> FileResult:
        """Commit every complete line of ``sf`` beyond its cursor; returns what was done."""
        (result,) = self.sync_all([sf], progress)  # unpacking runs the stream to its end
        return result

    def sync_all(self, sources: Iterable[SourceFile], progress: Progress | None = None) -> Iterator[FileResult]:
        """:meth:`sync` each of ``sources``; yields each file's result once all of it is committed.

        Files are read one after the other but committed as one stream, so Redis stores the end
        of one file while the next is read (most files fit in one batch). Results may come in
        another order than ``sources``.
        """
        run = _Run(self, progress)
        try:
            for chunk in _chunks(sources, defaults.CURSOR_PREFETCH):
                # One round trip for the cursors of many files. A cursor that is stale by the time
                # its file is read only costs a retry: every commit checks the cursor token.
                fids, curs = self.store.cursors_for([sf.path for sf in chunk])
                for sf, fid, cur in zip(chunk, fids, curs, strict=True):
                    run.start(_Job(sf, fid, FileResult(sf.display)), cur)
                    yield from run.take_finished()
            run.finish()
            yield from run.take_finished()
        finally:
            run.close()


def _chunks(items: Iterable[SourceFile], n: int) -> Iterator[list[SourceFile]]:
    chunk: list[SourceFile] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass
class _Job:
    """One file to sync, across the passes a lost compare-and-set may take."""

    sf: SourceFile
    fid: str
    result: FileResult
    attempts: int = 0


class _Run:
    """Passes over many files, committed through one :class:`~aggregator.store.CommitStream`."""

    def __init__(self, t: Tailer, progress: Progress | None) -> None:
        self.t = t
        self.progress = progress
        self.stream = t.store.stream()
        self.open: list[_Reader] = []  # passes read to their end whose batches are not all answered
        self.finished: list[FileResult] = []
        self.retry: list[_Job] = []

    def start(self, job: _Job, cur: Cursor | None) -> None:
        """Read ``job``'s file from ``cur`` and submit its batches (and retry those that lost)."""
        self._pass(job, cur)
        self._retry()

    def _retry(self) -> None:
        """Read again, from their cursor in Redis, the files whose pass lost the race."""
        while self.retry:
            again = self.retry.pop(0)
            self._pass(again, self.t.store.cursor(again.fid))

    def _pass(self, job: _Job, cur: Cursor | None) -> None:
        while True:
            job.attempts += 1
            if job.attempts > defaults.CAS_RETRIES:
                raise StoreError(f"gave up on {job.sf.display}: its cursor kept moving under us")
            reader = self._read(job, cur)
            if reader is None:
                self._finish(job)
                return
            if not reader.chain.lost:
                self.open.append(reader)
                self._settle()
                return
            # another ingester moved the cursor while this file was read: start over from Redis
            cur = self.t.store.cursor(job.fid)

    def _read(self, job: _Job, cur: Cursor | None) -> _Reader | None:
        sf, result = job.sf, job.result
        try:
            # O_NONBLOCK: if the path was swapped for a FIFO after discovery, open must not hang.
            fd = os.open(sf.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            result.skipped = "vanished"
            return None
        except OSError as e:
            result.skipped = f"unreadable: {e.strerror or e}"
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                result.skipped = "not a regular file"
                return None
            reader = _Reader(self, job, fd, st, cur)
            reader.run()
            return reader
        finally:
            os.close(fd)

    def submit(self, batch: Batch) -> None:
        self.done(self.stream.submit(batch))

    def done(self, answered: list[tuple[Batch, CommitResult | None]]) -> None:
        """Account for answered batches (None: not committed, its pass lost the race)."""
        for batch, res in answered:
            reader, lines, nbytes = batch.note
            reader.outstanding -= 1
            if res is not None:
                reader.job.result.add(res, lines, nbytes)
                if self.progress:
                    self.progress(nbytes)
        self._settle()

    def _settle(self) -> None:
        still: list[_Reader] = []
        for reader in self.open:
            if reader.outstanding:
                still.append(reader)
            elif reader.chain.lost:
                self.retry.append(reader.job)
            else:
                reader.job.result.offset = reader.committed
                self._finish(reader.job)
        self.open = still

    def _finish(self, job: _Job) -> None:
        """``job``'s lines are all committed: its subagent sidecar (if any) follows them."""
        # A subagent's .meta.json becomes an event too (aggregator/sidecars.py).
        self.t.sidecars.sync(job.sf)
        self.finished.append(job.result)

    def take_finished(self) -> list[FileResult]:
        out, self.finished = self.finished, []
        return out

    def finish(self) -> None:
        """Commit everything submitted, retrying files whose pass lost the race."""
        while True:
            self.done(self.stream.finish())
            if not self.retry:
                return
            self._retry()

    def close(self) -> None:
        self.stream.close()


class _Reader:
    """One pass over one open file."""

    def __init__(self, run: _Run, job: _Job, fd: int, st: os.stat_result, cur: Cursor | None) -> None:
        self.run_, self.t, self.job = run, run.t, job
        self.sf, self.fid, self.fd, self.st = job.sf, job.fid, fd, st
        self.result = job.result
        # Each batch expects the cursor token the previous one writes, unique to this pass: once
        # another ingester moves the cursor, no later batch of this pass can commit
        # (tests/store/test_tailer.py::test_two_tailers_racing_on_one_file_store_each_line_once).
        self.tok = cur.tok if cur else ""
        self.reader_id = secrets.token_hex(6)
        self.commits = 0
        self.chain = Chain()
        self.outstanding = 0  # batches submitted and not answered yet
        self.head = os.pread(fd, defaults.FINGERPRINT_BYTES, 0)
        reason = self._changed(cur) if cur else None
        if reason:
            self.result.reset = reason
        self.start = 0 if (cur is None or reason) else cur.off
        self.committed = self.start
        self.dirty = cur is None or bool(reason)  # identity to record even if no line is read
        # The bytes just before the resume offset (never past it: a file resumed below 4 KiB once
        # got a tail fingerprint over bytes it had not consumed, and its next sync re-read it all;
        # tests/store/test_commit_stream.py::test_resuming_near_the_start_keeps_the_tail_fingerprint).
        back = min(defaults.FINGERPRINT_BYTES, self.start)
        self.window = os.pread(fd, back, self.start - back) if back else b""
        self.items: list[Event | Rejection] = []
        self.raws: list[bytes] = []  # every consumed line of the batch (for the tail fingerprint)
        self.batch_bytes = 0
        self.batch_lines = 0

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
        # _Lost: the pass's chain lost the compare-and-set; the caller starts a new pass
        with contextlib.suppress(_Lost):
            self._run()

    def _run(self) -> None:
        t = self.t
        if self._still_unterminated():
            return
        sf, fd = self.sf, self.fd
        max_line = t.max_line_bytes
        pos = self.start
        line_off = self.start
        pieces: list[bytes] = []  # the start of a line that continues in the next chunk
        pending = 0
        skipping = False  # inside a line longer than max_line_bytes
        long_tail = b""  # the last bytes of that line, for the tail fingerprint
        while True:
            chunk = os.pread(fd, t.read_chunk_bytes, pos)
            if not chunk:
                break
            pos += len(chunk)
            lines = chunk.split(b"\n")
            rest = lines.pop()  # after the chunk's last newline: the start of a later line
            if lines and skipping:
                first = lines.pop(0)
                pending += len(first)
                long_tail = (long_tail + first)[-defaults.FINGERPRINT_BYTES :]
                self._reject_long(line_off, pending, pieces[0], long_tail)
                line_off += pending + 1
                pieces, pending, skipping, long_tail = [], 0, False, b""
            elif lines and pieces:
                pieces.append(lines[0])
                lines[0] = b"".join(pieces)
                pieces, pending = [], 0
            # The hot loop: the batch's lists and counters are locals, written back on commit.
            items, raws = self.items, self.raws
            nbytes, nlines = self.batch_bytes, self.batch_lines
            for line in lines:
                size = len(line)
                if size > max_line:
                    self.batch_bytes, self.batch_lines = nbytes, nlines
                    self._reject_long(
                        line_off, size, line[: defaults.REJECT_PREFIX_BYTES], line[-defaults.FINGERPRINT_BYTES :]
                    )
                    nbytes, nlines = self.batch_bytes, self.batch_lines
                else:
                    parsed = parse_line(line, line_off, sf)
                    if parsed is not None:
                        items.append(parsed)
                    raws.append(line)
                    nbytes += size + 1
                    nlines += 1
                line_off += size + 1
                if nbytes >= t.batch_bytes or nlines >= t.batch_lines:
                    self.batch_bytes, self.batch_lines = nbytes, nlines
                    self._commit(line_off, pos, final=False)
                    items, raws = self.items, self.raws
                    nbytes, nlines = 0, 0
            self.batch_bytes, self.batch_lines = nbytes, nlines
            if skipping:
                pending += len(rest)
                long_tail = (long_tail + rest)[-defaults.FINGERPRINT_BYTES :]
            elif rest:
                pieces.append(rest)
                pending += len(rest)
                if pending > max_line:
                    skipping = True
                    joined = b"".join(pieces)
                    long_tail = joined[-defaults.FINGERPRINT_BYTES :]
                    pieces = [joined[: defaults.REJECT_PREFIX_BYTES]]
        self._commit(line_off, pos, final=True)
        if pos > line_off:  # an unterminated last line: remember that it holds no newline so far
            t.partial[self.fid] = (self.st.st_ino, self.st.st_dev, line_off, pos)
        else:
            t.partial.pop(self.fid, None)

    def _still_unterminated(self) -> bool:
        """True if the file ends in the same unterminated line as when it was last scanned, and
        no newline has come since: only the bytes after what was scanned are read, then the
        cursor is left where it is."""
        known = self.t.partial.get(self.fid)
        st = self.st
        if known is None or self.result.reset or known[:3] != (st.st_ino, st.st_dev, self.start):
            return False
        scanned = known[3]
        if scanned > st.st_size:
            return False  # truncated: read normally (the tailer tells what happened)
        pos = scanned
        while True:
            chunk = os.pread(self.fd, self.t.read_chunk_bytes, pos)
            if not chunk:
                break
            if b"\n" in chunk:
                return False  # the line ended: read it (once) from its start
            pos += len(chunk)
        self.t.partial[self.fid] = (st.st_ino, st.st_dev, self.start, pos)
        self._commit(self.start, pos, final=True)  # only if the cursor must be recorded
        return True

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
        self.commits += 1
        cursor = self.t.store.cursor_fields(
            self.sf,
            self.st,
            off=off,
            size=pos,
            mtime=os.fstat(self.fd).st_mtime_ns if final else self.st.st_mtime_ns,
            tok=f"{self.reader_id}:{self.commits}",
            fp=_fp(self.head[:fplen]),
            fplen=fplen,
            tfp=_fp(self.window[-min(fpb, off) :] if off else b""),
        )
        batch = self.t.store.prepare(self.sf, self.fid, self.tok, cursor, self.items, self.chain)
        self.tok = cursor["tok"]
        batch.note = (self, len(self.items), off - self.committed)
        self.committed = off
        self.dirty = False
        self.items, self.raws = [], []
        self.batch_bytes = self.batch_lines = 0
        self.outstanding += 1
        self.run_.submit(batch)
        if self.chain.lost:
            raise _Lost


class _Lost(Exception):
    """Raised inside a pass whose chain of commits lost the compare-and-set (stop reading)."""
