"""Failures shown where people look (issue 13 item 4): `agg rejects`, Ctrl-C during `agg ingest`,
`agg status` when its Redis cannot be reached, and a reader that goes away."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import redis

from aggregator import defaults
from aggregator.keys import Keys
from aggregator.store import Store
from devtools.agg import HOST, agg_env, run_agg, wait_until
from devtools.gen_corpus import main as gen_corpus
from devtools.redisproc import RedisProcess
from tests.support import oracle
from tests.support.live import Agg, state


# --- agg rejects ---------------------------------------------------------------------------------
def test_rejects_lists_what_status_counts(
    redis_server: RedisProcess, r: redis.Redis, corpus: Path, tmp_path: Path
) -> None:
    env = agg_env(redis_server, tmp_path)
    run_agg(["ingest", str(corpus)], env)
    expected = oracle.read(oracle.transcripts(corpus)).rejected
    st = json.loads(run_agg(["status", "--json"], env).stdout)
    out = json.loads(run_agg(["rejects", "--json"], env).stdout)
    assert len(out["rejects"]) == out["rejected"] == out["kept"] == st["rejected"] == expected > 0
    for rec in out["rejects"]:
        # each one points at its line: the file's bytes at `offset` start with `prefix`
        data = Path(rec["file"]).read_bytes()
        assert data[rec["offset"] :].startswith(rec["prefix"].encode()), rec
        assert rec["reason"] and rec["at"].endswith("Z")
    newest = json.loads(run_agg(["rejects", "--json", "--limit", "3"], env).stdout)["rejects"]
    assert newest == out["rejects"][:3]
    text = run_agg(["rejects"], env).stdout.splitlines()
    assert text[0] == f"{expected} lines rejected. Newest first:"
    assert len(text) == 1 + 2 * expected and text[1].startswith(out["rejects"][0]["at"])
    assert f"offset {out['rejects'][0]['offset']}: {out['rejects'][0]['reason']}" in text[1]


def test_rejects_says_when_more_were_rejected_than_kept(
    redis_server: RedisProcess, r: redis.Redis, tmp_path: Path
) -> None:
    bad = tmp_path / "claude" / "projects" / "p" / "s.jsonl"
    bad.parent.mkdir(parents=True)
    total = defaults.REJECTS_KEPT + 5
    bad.write_bytes(b"".join(b"not json %d\n" % i for i in range(total)))
    env = agg_env(redis_server, tmp_path)
    run_agg(["ingest"], env)
    out = json.loads(run_agg(["rejects", "--json"], env).stdout)
    assert (len(out["rejects"]), out["rejected"], out["kept"]) == (defaults.REJECTS_KEPT, total, defaults.REJECTS_KEPT)
    assert out["rejects"][0]["prefix"] == f"not json {total - 1}"  # newest first
    first = run_agg(["rejects", "--limit", "1"], env).stdout.splitlines()[0]
    assert first == f"{total:,} lines rejected; only the newest {defaults.REJECTS_KEPT:,} are kept. Newest first:"


# --- Ctrl-C during agg ingest --------------------------------------------------------------------------
START_WITH_DEFAULT_SIGINT = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'agg'; runpy.run_module('cli', run_name='__main__')"
)


def test_ctrl_c_during_ingest_keeps_what_was_committed(tmp_path: Path) -> None:
    """It used to print "Aborted!" and exit 1, saying nothing of the work kept."""
    src = tmp_path / "claude" / "projects"
    assert gen_corpus([str(src), "--size", "40MB", "--seed", "7"]) == 0
    with RedisProcess(tmp_path / "redis") as server:
        env = agg_env(server, tmp_path)
        run_agg(["--namespace", "clean", "ingest"], env)  # what one uninterrupted run stores
        exp = Store(server.client(), Keys("clean"), HOST).stats()
        store = Store(server.client(), Keys("agg"), HOST)
        proc = subprocess.Popen(
            # As a terminal starts it: with SIGINT's default action. Started from a shell's
            # background job (CI's, say) the test runner may ignore SIGINT, and a child that inherits
            # that gets no KeyboardInterrupt: the ingest would run to its end, exit 0.
            [sys.executable, "-c", START_WITH_DEFAULT_SIGINT, "ingest"],
            env={**env, "PYTHONFAULTHANDLER": "1"},  # a crash shows its stack in the failure message
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert server.proc is not None

        def midway() -> bool:
            # Redis is held the moment the ingest is seen between its first commit and halfway: it
            # cannot finish then. (Held at the first commit seen, a loaded machine sometimes let the
            # whole ingest end before that, and the Ctrl-C met a process already exiting, status 0.)
            lines = int(store.stats()["lines"])
            if 0 < lines < exp["lines"] // 2:
                os.kill(server.proc.pid, signal.SIGSTOP)
                return True
            assert lines == 0 and proc.poll() is None, f"the ingest was not seen midway ({lines} lines)"
            return False

        wait_until(midway, "the ingest midway", every=0.001)
        try:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the terminal's whole process group
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 130 and out == "", err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("agg: interrupted after "), err
        assert "is kept, and the next agg ingest continues from there" in lines[0] and "Aborted" not in err
        kept = store.stats()
        assert 0 < kept["events"] < exp["events"]
        again = json.loads(run_agg(["ingest", "--json"], env).stdout)
        assert again["lines"] < exp["lines"]  # it continued; it did not start over
        final = store.stats()
        for name in ("events", "revisions", "duplicates", "rejected", "lines", "conversations"):
            assert final[name] == exp[name], name


# --- agg status when its Redis cannot be reached ----------------------------------------------------------
def test_status_does_not_vouch_for_a_watcher_it_cannot_check(tmp_path: Path) -> None:
    """With a mistyped --redis-url, `agg status` printed the local watcher as "watching", which
    read as if everything was fine. Now it says whose word that is and why it is not checked."""
    (tmp_path / "claude" / "projects").mkdir(parents=True)
    with RedisProcess(tmp_path / "redis", password="pw") as server:
        env = agg_env(server, tmp_path)
        with Agg(["watch"], env, tmp_path):
            wait_until(lambda: state(tmp_path / "data", "watch").get("state") == "watching", "the watcher")
            wrong = run_agg(["status"], dict(env, AGG_REDIS_URL="redis://127.0.0.1:1"), check=False)
            assert wrong.returncode == 3 and "cannot reach Redis at redis://127.0.0.1:1" in wrong.stderr
            line = next(ln for ln in wrong.stdout.splitlines() if ln.startswith("watcher"))
            assert line.startswith("watcher      not verified (it uses another Redis: unix://"), line
            assert "its state file says watching" in line and "pw" not in wrong.stdout
            js = json.loads(
                run_agg(["status", "--json"], dict(env, AGG_REDIS_URL="redis://127.0.0.1:1"), check=False).stdout
            )
            assert js["redis"]["ok"] is False and js["watcher"]["verified"] is False
            assert js["watcher"]["state"] == "watching"  # the state file's word, marked, not rewritten
            server.stop()
            down = run_agg(["status"], env, check=False)
            assert down.returncode == 3
            line = next(ln for ln in down.stdout.splitlines() if ln.startswith("watcher"))
            # whether the watcher has noticed yet or not, nothing reads as healthy
            noticed = line.startswith("watcher      waiting for Redis (")
            assert noticed or line.startswith("watcher      not verified (Redis unreachable); its state file says "), (
                line
            )


# --- a reader that goes away ------------------------------------------------------------------------------
def test_a_reader_that_goes_away_ends_the_command_quietly(
    redis_server: RedisProcess, r: redis.Redis, corpus: Path, tmp_path: Path
) -> None:
    """`agg replay X | head -1`: the pipe closes under a long output; exit 0, nothing on stderr."""
    env = agg_env(redis_server, tmp_path)
    run_agg(["ingest", str(corpus)], env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "replay", "4d5611e5"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stdout.readline()
    proc.stdout.close()
    rc = proc.wait(60)
    assert proc.stderr is not None
    assert (rc, proc.stderr.read()) == (0, b"")
