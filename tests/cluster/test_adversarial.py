"""An adversarial user of a cluster store: hostile input to the commands and pages that read every
bucket must be refused in one line before anything is printed or streamed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aggregator.buckets import Buckets, bucket_of
from devtools.agg import run_agg
from devtools.cluster import Cluster, free_port
from devtools.redisproc import RedisProcess
from tests.cluster.conftest import Pair, cluster_env
from tests.cluster.test_web import AUTH, _client
from tests.support import CORPUS

HUGE = "3:99999999999999999999999"
"""A position whose seq no bucket can reach (a seq is an INCR counter: at most 2**63 - 1), and
past the largest stream ID Redis reads (2**64 - 1)."""


@pytest.mark.parametrize("since", [HUGE, f"0:5,{HUGE}", "3:18446744073709551615", "3:9223372036854775808"])
def test_agg_tail_refuses_a_seq_past_any_bucket_s_in_one_line(pair: Pair, since: str) -> None:
    """Was: the events of the buckets before 3 printed, then ``Redis answered with an error: …
    Invalid stream ID`` (exit 3) once the subscriber reached bucket 3."""
    proc = run_agg(["tail", "--since", since], pair.cluster, check=False, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert "too large" in proc.stderr


@pytest.mark.parametrize("since", ["3:\u00b2", "\u00b2:1"])
def test_a_superscript_digit_in_a_position_is_refused_in_one_line(pair: Pair, tmp_path: Path, since: str) -> None:
    """Was: a traceback (``int('²')``, exit 1) from agg tail, a 500 from /api/events."""
    proc = run_agg(["tail", "--since", since], pair.cluster, check=False, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "bad position" in proc.stderr
    with _client(pair.cluster, tmp_path, cluster=True) as client:
        r = client.get("/api/events", params={"since": since}, headers=AUTH)
        assert r.status_code == 400, r.text[:300]
        assert "bad position" in r.json()["error"]


@pytest.mark.parametrize("where", ["cluster", "single"])
def test_a_superscript_seq_is_refused_in_one_line(pair: Pair, where: str) -> None:
    """``--since ²``: was a traceback (``int('²')``, exit 1) on a cluster and on a single Redis."""
    proc = run_agg(["tail", "--since", "\u00b2"], getattr(pair, where), check=False, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "is not a seq" in proc.stderr


def test_api_events_refuses_a_seq_past_any_bucket_s(pair: Pair, tmp_path: Path) -> None:
    """Was: the stream sent the buckets before 3, then stopped (logged ``Invalid stream ID``); a
    browser reconnecting with its Last-Event-ID met the same wall every second."""
    with _client(pair.cluster, tmp_path, cluster=True) as client:
        for headers, url in (({**AUTH, "last-event-id": HUGE}, "/api/events"), (AUTH, f"/api/events?since={HUGE}")):
            r = client.get(url, headers=headers)
            assert r.status_code == 400, r.text[:300]
            assert "too large" in r.json()["error"]


@pytest.mark.parametrize("args", [["status"], ["ingest"], ["list"], ["tail", "--since", "0"]])
def test_a_node_of_a_cluster_not_created_yet_is_said_in_one_line(tmp_path: Path, args: list[str]) -> None:
    """A node started with ``cluster-enabled yes`` before ``redis-cli --cluster create`` (no slot
    served: ``cluster_state:fail``). Was: a traceback ending in redis-py's ``RedisClusterException:
    All slots are not covered`` (exit 1) from every command: it is not a RedisError."""
    extra = {
        "port": str(free_port()),
        "bind": "127.0.0.1",
        "cluster-enabled": "yes",
        "cluster-config-file": "nodes.conf",
    }
    node = RedisProcess(tmp_path / "node", password="pw", extra=extra).start()
    (tmp_path / "claude").mkdir()
    try:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AGG_")},
            "AGG_REDIS_URL": f"redis://:pw@127.0.0.1:{node.args['port']}", "AGG_DATA_DIR": str(tmp_path / "data"),
            "AGG_CLAUDE_DIR": str(tmp_path / "claude"), "AGG_NAMESPACE": "fresh",
        }  # fmt: skip
        proc = run_agg(args, env, check=False, timeout=60)
    finally:
        node.kill()
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "not serving every slot" in proc.stderr and "pw@" not in proc.stderr


def _session_in_two_buckets(tmp_path: Path) -> tuple[str, str]:
    """One session file of the corpus in its project and, cut to 5 lines, in a project of another
    bucket (a project directory copied under a new name): its key and its corpus project."""
    project, copy = "-Users-chip-dev-ai-music", "-Users-chip-dev-ai-music-copy"
    assert bucket_of(project) != bucket_of(copy)
    src = CORPUS / project / "ba79134d-b6e9-4867-af0c-6941038c9e4b.jsonl"
    if not src.is_file():
        pytest.skip(f"{src} not in the corpus")
    for p, data in ((project, src.read_bytes()), (copy, b"".join(src.read_bytes().splitlines(True)[:5]))):
        (tmp_path / "claude" / "projects" / p).mkdir(parents=True)
        (tmp_path / "claude" / "projects" / p / src.name).write_bytes(data)
    return src.stem, project


def _holding(buckets: Buckets, key: str) -> int:
    return sum(s.r.zscore(s.keys.convs, key) is not None for s in buckets)


@pytest.mark.parametrize("by", ["key", "prefix"])
def test_forget_leaves_no_copy_of_a_session_read_in_two_buckets(
    cluster: Cluster, tmp_path: Path, namespace: str, buckets: Buckets, by: str
) -> None:
    """Was: ``agg forget KEY`` said "forgot KEY: 5 events" and the 76 events of the other bucket's
    copy stayed (``agg show KEY`` showed them); a prefix of it was "ambiguous", naming KEY twice."""
    key, _ = _session_in_two_buckets(tmp_path)
    env = cluster_env(cluster, tmp_path, namespace)
    run_agg(["ingest"], env)
    assert _holding(buckets, key) == 2
    run_agg(["forget", "--yes", key if by == "key" else key[:8]], env)
    assert _holding(buckets, key) == 0
    shown = run_agg(["show", key], env, check=False)
    assert shown.returncode == 4 and "no conversation" in shown.stderr
