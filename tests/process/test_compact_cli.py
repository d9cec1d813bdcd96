"""`agg compact`, and the writer sealing idle conversations in the background (real processes)."""

from __future__ import annotations

import json
from pathlib import Path

import redis

from aggregator.keys import Keys
from aggregator.store import Store
from devtools.agg import HOST, agg_env, run_agg, wait_until
from devtools.redisproc import RedisProcess
from tests.support.cli import one_line_error
from tests.support.live import Agg, replayed


def _raw_left(store: Store) -> int:
    return sum(store.r.hlen(store.keys.body(c)) for c in store.conversations())


def test_compact_seals_idle_conversations_and_says_what_it_did(
    redis_server: RedisProcess, r: redis.Redis, corpus: Path, tmp_path: Path
) -> None:
    env = agg_env(redis_server, tmp_path)
    run_agg(["ingest"], env)
    store = Store(r, Keys("agg"), HOST)
    want, raw = replayed(store), _raw_left(store)
    # The corpus's newest record is months old, but not 100 years: nothing is that idle.
    assert run_agg(["compact", "--idle", str(100 * 365 * 86400)], env).stdout.startswith("nothing to seal:")
    text = run_agg(["compact", "--idle", "0"], env).stdout
    assert text.startswith(f"sealed {raw:,} lines of {len(want)} conversations: ") and " MB -> " in text, text
    assert _raw_left(store) == 0 and replayed(store) == want
    conv, lines = next(iter(want.items()))
    assert run_agg(["replay", conv], env).stdout.encode() == b"".join(b + b"\n" for b in lines)
    again = json.loads(run_agg(["compact", "--json"], env).stdout)
    assert again == {**again, "lines": 0, "conversations": 0, "idle_s": 3600.0}
    negative = run_agg(["compact", "--idle", "-1"], env, check=False)  # click's usage error
    assert negative.returncode == 2 and "'--idle': -1.0 is not in the range" in negative.stderr
    bad = run_agg(["compact"], dict(env, AGG_SEAL_IDLE_S="soon"), check=False)
    one_line_error(bad, 2, "AGG_SEAL_IDLE_S")


def test_the_writer_seals_idle_conversations_in_the_background(
    redis_server: RedisProcess, r: redis.Redis, corpus: Path, tmp_path: Path
) -> None:
    env = dict(agg_env(redis_server, tmp_path), AGG_SEAL_IDLE_S="0")
    run_agg(["ingest"], env)
    store = Store(r, Keys("agg"), HOST)
    want = replayed(store)
    out = tmp_path / "current.json"
    with Agg(["writer", "--output", str(out), "--interval", "0.1"], env, tmp_path, name="writer") as writer:
        wait_until(lambda: _raw_left(store) == 0, "the writer sealing every conversation")
        wait_until(lambda: "sealed" in writer.log(), "the writer saying so")
        assert writer.stop() == 0
    assert replayed(store) == want and out.exists()
    (said,) = [ln for ln in writer.log().splitlines() if "sealed" in ln]
    assert "idle conversations: " in said and " MB -> " in said
