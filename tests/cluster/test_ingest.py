"""`agg ingest` on a Redis Cluster: every line once, in its project's bucket."""

from __future__ import annotations

import json
from pathlib import Path

from aggregator.buckets import Buckets, bucket_of
from devtools.agg import run_agg
from devtools.cluster import Cluster
from tests.cluster.conftest import cluster_env


def test_the_corpus_is_ingested_once_into_its_projects_buckets(
    cluster: Cluster, tmp_path: Path, namespace: str, corpus: Path, buckets: Buckets
) -> None:
    env = cluster_env(cluster, tmp_path, namespace)
    first = json.loads(run_agg(["ingest", str(corpus), "--json"], env).stdout)
    again = json.loads(run_agg(["ingest", str(corpus), "--json"], env).stdout)
    assert first["lines"] == 5935 and first["events_added"] + first["rejected"] == first["lines"]
    assert again["events_added"] == 0 and again["lines"] == 0
    events = sum(s.stats()["events"] for s in buckets)
    assert events == first["events_added"]
    projects = {p.name for p in (corpus).iterdir() if p.is_dir()}
    used = {s.keys.ns for s in buckets if s.stats()["events"]}
    assert used == {buckets.stores[bucket_of(p)].keys.ns for p in projects}
    for store in buckets:
        for conv in store.conversations():
            assert store.projection(conv), conv  # the bucket's projector caught up
