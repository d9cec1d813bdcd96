"""`agg replay --rebuild` reproduces the live projections (docs/design.md §8, invariant 5), on a real redis-server:
whatever the step size, with projectors racing each other, and after `kill -9` of ingest,
projection and rebuild processes at random moments while the files grow."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis

from aggregator import defaults
from aggregator.ingest import ingest
from aggregator.layout import iter_transcripts
from aggregator.projections import ZERO_DIGEST, Projector
from aggregator.store import Store
from aggregator.usage import totals
from aggregator.views import conversation_views
from devtools.agg import agg_env, run_agg
from devtools.redisproc import RedisProcess
from tests.support import CORPUS, oracle
from tests.support.store import usage_by_conversation


def test_rebuilds_are_identical_to_the_live_projections(store: Store, corpus: Path) -> None:
    projector = Projector(store)
    assert projector.digest() == ZERO_DIGEST
    ingest(store, iter_transcripts([corpus]))
    live = projector.digest()
    assert live != ZERO_DIGEST
    first = projector.rebuild()
    second = projector.rebuild()
    assert first["digest_before"] == live
    assert first["digest"] == second["digest"] == second["digest_before"] == live == projector.digest()
    assert first["entries"] == store.last_seq()
    # the digest sees a single changed value
    store.client.hincrby(store.keys.proj(store.conversations()[0]), "events", 1)
    assert projector.digest() != live
    assert projector.rebuild()["digest"] == live


def test_step_size_does_not_change_the_result(store: Store, corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sources = list(iter_transcripts([corpus]))
    # live: projections caught up after every file, in steps of 37 entries
    monkeypatch.setattr(defaults, "PROJECT_BATCH_ENTRIES", 37)
    for sf in sources:
        ingest(store, [sf])
    projector = Projector(store)
    live = projector.digest()
    views = conversation_views(store, now_ms=0)
    monkeypatch.setattr(defaults, "PROJECT_BATCH_ENTRIES", 100_000)  # one step for everything
    assert projector.rebuild()["digest"] == live
    assert conversation_views(store, now_ms=0) == views


def test_racing_projectors_agree_with_a_rebuild(store: Store, corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Several projectors catch up while files are being ingested; steps that lose the
    compare-and-set are recomputed, so the result is the same as one projector's."""
    monkeypatch.setattr(defaults, "PROJECT_BATCH_ENTRIES", 50)
    sources = list(iter_transcripts([corpus]))
    done = threading.Event()
    errors: list[BaseException] = []

    def project() -> None:
        try:
            p = Projector(store)
            while not done.is_set():
                p.catch_up()
            p.catch_up()
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=project) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for sf in sources:
            ingest(store, [sf], project=False)
    finally:
        done.set()
        for t in threads:
            t.join()
    assert not errors
    projector = Projector(store)
    assert projector.checkpoint() == store.last_seq()
    live = projector.digest()
    assert projector.rebuild()["digest"] == live
    exp = oracle.usage([Path(s.path) for s in sources])
    assert totals(store) == exp.total


def _halves(src: Path, dst: Path, copies: int) -> list[tuple[Path, bytes]]:
    """Copy the corpus (``copies`` times, under project dirs of other names: the same records, so
    more work but the same events) with each file cut after half its lines; return
    (file, rest) to append later."""
    rest = []
    for n in range(copies):
        for path in sorted(src.rglob("*.jsonl")):
            rel = path.relative_to(src)
            out = dst / (rel.parts[0] + (f"-copy{n}" if n else "")) / Path(*rel.parts[1:])
            out.parent.mkdir(parents=True, exist_ok=True)
            lines = path.read_bytes().splitlines(keepends=True)
            cut = len(lines) // 2
            out.write_bytes(b"".join(lines[:cut]))
            rest.append((out, b"".join(lines[cut:])))
    return rest


# The agg command with small projection steps, so that kills land inside projection work too.
_AGG = "from aggregator import defaults; defaults.PROJECT_BATCH_ENTRIES = 40; from cli.main import main; main()"


def _kill_after(args: list[str], env: dict[str, str], delay: float) -> bool:
    """Run agg ARGS and kill -9 it after ``delay`` seconds; True if it was killed (not finished)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _AGG, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


@pytest.mark.slow
def test_live_projections_after_kills_equal_the_rebuilt_ones(
    redis_server: RedisProcess, r: redis.Redis, tmp_path: Path
) -> None:
    if not CORPUS.is_dir():
        pytest.skip("corpus not found")
    seed = random.randrange(1 << 30)
    rnd = random.Random(seed)
    root = tmp_path / "claude" / "projects"
    rest = _halves(CORPUS, root, copies=3)
    env = agg_env(redis_server, tmp_path)
    killed: list[str] = []

    def kills(rounds: int) -> None:
        for _ in range(rounds):
            cmd = rnd.choice([["ingest"], ["ingest"], ["usage", "--json"], ["replay", "--rebuild"]])
            if _kill_after(cmd, env, rnd.uniform(0.4, 1.6)):
                killed.append(cmd[0])
            if cmd[0] == "replay":
                # A killed rebuild's lock lapses after REBUILD_LOCK_TTL_MS; let it lapse now.
                redis_server.client().delete("agg:proj:lock")

    kills(6)
    for path, tail in rest:  # the files grow: the second half of every file arrives
        with open(path, "ab") as f:
            f.write(tail)
    kills(6)
    print(f"seed {seed}: killed {killed}")
    run_agg(["ingest"], env)
    status = json.loads(run_agg(["status", "--json", "--digest"], env).stdout)
    rebuilt = json.loads(run_agg(["replay", "--rebuild", "--json"], env).stdout)

    client = redis_server.client()
    store = Store(client)
    projector = Projector(store)
    assert status["projections"]["seq"] == store.last_seq(), seed
    assert status["projections"]["digest"] == rebuilt["digest_before"] == rebuilt["digest"] == projector.digest(), seed
    # and the numbers are the right ones, not merely reproducible
    sources = [Path(s.path) for s in iter_transcripts([root])]
    exp = oracle.usage(sources)
    assert {k: status["usage"][k] for k in exp.total} == exp.total, seed
    got = usage_by_conversation(store)
    assert {k: v for k, v in got.items() if v["responses"]} == exp.by["conversation"], seed
    shutil.rmtree(tmp_path / "claude")
