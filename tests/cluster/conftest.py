"""Fixtures for a store on a real Redis Cluster: 3 masters and 3 replicas, built once per session
with ``redis-cli --cluster create`` (:class:`devtools.cluster.Cluster`); each test gets its own
namespace on it, so tests share the cluster and not their keys. A test that kills a node builds
its own cluster."""

from __future__ import annotations

import itertools
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.cluster import RedisCluster

from aggregator.buckets import Buckets
from aggregator.config import Settings
from aggregator.connection import cluster_client
from aggregator.keys import Keys
from devtools.agg import HOST, free_port, run_agg
from devtools.cluster import Cluster
from devtools.redisproc import RedisProcess
from tests.support import CORPUS

_names = itertools.count(1)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One 6-node cluster (3 masters, 3 replicas) for the session."""
    with Cluster(tmp_path_factory.mktemp("cluster"), masters=3, replicas=1) as c:
        yield c


@pytest.fixture
def namespace() -> str:
    """A namespace no other test of the session uses."""
    return f"c{os.getpid()}x{next(_names)}"


@pytest.fixture
def cclient(cluster: Cluster) -> Iterator[RedisCluster]:
    """A ``RedisCluster`` client made as agg makes its own."""
    client = cluster_client(cluster.url)
    yield client
    client.close()


@pytest.fixture
def buckets(cclient: RedisCluster, namespace: str) -> Buckets:
    """The buckets of this test's store on the session's cluster."""
    return Buckets(cclient, Keys(namespace), HOST, cluster=True)


def cluster_env(cluster: Cluster, tmp_path: Path, namespace: str, **extra: str) -> dict[str, str]:
    """Environment of a real ``agg`` command on the cluster, under ``namespace``."""
    settings = Settings(
        redis_url=cluster.url, data_dir=tmp_path / "data", claude_dirs=[tmp_path / "claude"], host=HOST,
        namespace=namespace,
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGG_")}
    return {**env, **settings.to_env(), "PYTHONUNBUFFERED": "1", "AGG_WEB_PORT": str(free_port()), **extra}


@dataclass
class Pair:
    """The same corpus in a cluster store and in a single Redis: each one's ``agg`` environment."""

    cluster: dict[str, str]
    single: dict[str, str]
    buckets: Buckets
    corpus: Path

    def both(self, args: list[str]) -> tuple[Any, Any]:
        """``agg ARGS`` (printing JSON) on the cluster and on the single Redis, parsed."""
        return tuple(json.loads(run_agg(args, env).stdout) for env in (self.cluster, self.single))

    def conversations(self) -> list[str]:
        return sorted(c for s in self.buckets for c in s.conversations())


@pytest.fixture(scope="module")
def pair(cluster: Cluster, redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """The corpus ingested (real ``agg ingest``) into a cluster store and into a single Redis; both
    read the same files (same paths), under their own namespaces, from one data dir."""
    if not CORPUS.is_dir():
        pytest.skip(f"corpus not found at {CORPUS}")
    tmp = tmp_path_factory.mktemp("read")
    corpus = tmp / "claude" / "projects"
    shutil.copytree(CORPUS, corpus)
    ns = f"r{os.getpid()}x{next(_names)}"
    on_cluster = cluster_env(cluster, tmp, f"{ns}c")
    settings = Settings(
        redis_url=redis_server.url, data_dir=tmp / "data", claude_dirs=[tmp / "claude"], host=HOST, namespace=f"{ns}s"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGG_")}
    on_single = {**env, **settings.to_env(), "PYTHONUNBUFFERED": "1"}
    for e in (on_cluster, on_single):
        run_agg(["ingest", str(corpus), "--json"], e)
    client = cluster_client(cluster.url)
    try:
        yield Pair(on_cluster, on_single, Buckets(client, Keys(f"{ns}c"), HOST, cluster=True), corpus)
    finally:
        client.close()
