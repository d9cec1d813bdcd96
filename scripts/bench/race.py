"""The seed's race: many concurrent writers updating one JSON file lose updates; agg's store loses none.

Each of N writers is a real process (forked, started together behind a barrier) holding one record:

file
    the way a shared JSON state file gets updated: read it, add the record, write it back — with
    an atomic replace (temp file + rename), so the file is never torn; updates are still lost
    whenever two writers read the same version.
store
    agg's way: each writer commits its record as an event of one shared conversation through
    :meth:`aggregator.store.Store.commit` (each writer its own source file, as Claude Code sessions
    are), all at once.
tailer
    also agg's way, end to end: each writer appends its record as a line to one shared transcript
    (``O_APPEND``) and syncs that file with :class:`aggregator.tailer.Tailer`, concurrently with all
    the others (cursor compare-and-set, retries, dedupe); then one more sync, as the watcher
    would run on the next file event.

``--lockstep`` makes every file writer do its read before any writes: the file side then loses
exactly N-1 updates, deterministically. (Store writers always prepare their batch before the
barrier that starts them all.)

Prints the loss rate of each side. Usage::

    python -m scripts.bench.race                # 250 writers, a throwaway redis-server
    python -m scripts.bench.race --writers 50 --lockstep --json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from aggregator.connection import client_from_url
from aggregator.errors import StoreError
from aggregator.keys import Keys
from aggregator.layout import SourceFile, classify
from aggregator.parse import Event, parse_line
from aggregator.store import Store
from aggregator.tailer import Tailer
from devtools.redisproc import RedisProcess

CONV = "race-conversation"


@dataclass
class SideResult:
    """What one side kept of the writers' records."""

    side: str
    writers: int
    kept: int = 0
    lost: int = 0
    duplicated: int = 0
    seconds: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def loss_rate(self) -> float:
        return self.lost / self.writers if self.writers else 0.0


def record(i: int) -> bytes:
    """Writer ``i``'s record, as a transcript line."""
    rec = {
        "type": "user",
        "sessionId": CONV,
        "uuid": f"race-writer-{i:05d}",
        "timestamp": "2026-01-01T00:00:00.000Z",
        "message": {"role": "user", "content": f"update from writer {i}"},
    }
    return json.dumps(rec, separators=(",", ":")).encode()


def _run(n: int, target: Any, args: tuple[Any, ...]) -> float:
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(n)
    procs = [ctx.Process(target=target, args=(i, barrier, *args)) for i in range(n)]
    started = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    failed = [p.exitcode or 0 for p in procs if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} writer processes failed (exit codes {sorted(set(failed))})")
    return time.perf_counter() - started


# --- one JSON file, read-modify-write --------------------------------------------------------
def _file_writer(i: int, barrier: Barrier, path: str, lockstep: bool) -> None:
    barrier.wait()
    try:
        with open(path, "rb") as f:
            state = json.loads(f.read() or b"{}")
    except (OSError, ValueError):
        state = {}
    state.setdefault("records", []).append(json.loads(record(i)))
    if lockstep:
        barrier.wait()  # everyone has read the same version before anyone writes
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(json.dumps(state).encode())
    os.replace(tmp, path)


def race_file(n: int, workdir: Path, *, lockstep: bool = False) -> SideResult:
    path = workdir / "state.json"
    path.write_bytes(b'{"records": []}')
    res = SideResult("file", n)
    res.seconds = _run(n, _file_writer, (str(path), lockstep))
    ids = [r["uuid"] for r in json.loads(path.read_bytes())["records"]]
    res.kept = len(set(ids))
    res.duplicated = len(ids) - len(set(ids))
    res.lost = n - res.kept
    return res


# --- agg's store ---------------------------------------------------------------------------
def _store_writer(i: int, barrier: Barrier, url: str, ns: str) -> None:
    store = Store(client_from_url(url), Keys(ns), f"writer-{i}")
    raw = record(i)
    sf = SourceFile(f"/race/{CONV}/writer-{i}.jsonl", "race", CONV, None, "main")
    event = parse_line(raw, 0, sf)
    assert isinstance(event, Event)
    fid = store.file_id(sf.path)
    barrier.wait()
    store.commit(sf, fid, "", {"off": len(raw) + 1, "tok": f"writer-{i}"}, [event])
    store.client.close()


def race_store(n: int, url: str, *, ns: str = "race") -> SideResult:
    res = SideResult("store", n)
    res.seconds = _run(n, _store_writer, (url, ns))
    return _count(res, url, ns)


def _tailer_writer(i: int, barrier: Barrier, url: str, ns: str, path: str, gave_up: Any) -> None:
    store = Store(client_from_url(url), Keys(ns), "race-host")
    barrier.wait()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.write(fd, record(i) + b"\n")  # one write of a whole line: O_APPEND keeps lines whole
    os.close(fd)
    sf = classify(path)
    assert sf is not None
    try:
        Tailer(store).sync(sf)
    except StoreError:
        with gave_up.get_lock():
            gave_up.value += 1  # its line waits in the file for the next sync
    store.client.close()


def race_tailer(n: int, url: str, workdir: Path, *, ns: str = "race-tailer") -> SideResult:
    path = workdir / "projects" / "race" / f"{CONV}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    gave_up = mp.get_context("fork").Value("i", 0)
    res = SideResult("tailer", n)
    res.seconds = _run(n, _tailer_writer, (url, ns, str(path), gave_up))
    store = Store(client_from_url(url), Keys(ns), "race-host")
    sf = classify(str(path))
    assert sf is not None
    res.notes["final_sync_events"] = Tailer(store).sync(sf).events_added
    res.notes["writers_that_gave_up"] = gave_up.value
    store.client.close()
    return _count(res, url, ns)


def _count(res: SideResult, url: str, ns: str) -> SideResult:
    store = Store(client_from_url(url), Keys(ns), "race-check")
    ids = [eid for eid, _ in store.replay(CONV)]
    expected = {f"race-writer-{i:05d}" for i in range(res.writers)}
    res.kept = len(expected & set(ids))
    res.duplicated = len(ids) - len(set(ids))
    res.lost = res.writers - res.kept
    envs = [e.env() for e in store.entries_after(0)]
    mine = [e for e in envs if e["conv"] == CONV]
    res.notes["distinct_seq"] = len({e["seq"] for e in mine})
    res.notes["conv_seq_is_1_to_n"] = sorted(e["conv_seq"] for e in mine) == list(range(1, len(mine) + 1))
    store.client.close()
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Concurrent writers: one JSON file vs. agg's store.")
    ap.add_argument("--writers", type=int, default=250)
    ap.add_argument("--lockstep", action="store_true", help="all file writers read before any writes")
    ap.add_argument("--redis-url", help="a Redis to use (default: a throwaway redis-server)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="agg-race-"))
    server = None
    try:
        url = args.redis_url
        if not url:
            server = RedisProcess(workdir / "redis").start()
            url = server.url
        results = [
            race_file(args.writers, workdir, lockstep=args.lockstep),
            race_store(args.writers, url),
            race_tailer(args.writers, url, workdir),
        ]
    finally:
        if server:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps([asdict(r) | {"loss_rate": r.loss_rate} for r in results]))
    else:
        mode = "lockstep" if args.lockstep else "free-running"
        print(f"{args.writers} concurrent writer processes ({mode}), one record each:")
        for r in results:
            extra = ", ".join(f"{k} {v}" for k, v in r.notes.items())
            print(
                f"  {r.side:7} kept {r.kept:4}  lost {r.lost:4}  loss rate {r.loss_rate:6.1%}  "
                f"duplicates {r.duplicated}  ({r.seconds:.2f} s{'; ' + extra if extra else ''})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
