"""Fixtures for a store on a real Redis Cluster: 3 masters and 3 replicas, built once per session
with ``redis-cli --cluster create`` (:class:`devtools.cluster.Cluster`); each test gets its own
namespace on it, so tests share the cluster and not their keys. A test that kills a node builds
its own cluster."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.cluster import RedisCluster

from aggregator.buckets import Buckets
from aggregator.config import Settings
from aggregator.connection import cluster_client
from aggregator.keys import Keys
from devtools.agg import HOST, free_port
from devtools.cluster import Cluster

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
