"""A throwaway Redis Cluster for tests and benchmarks: N masters with R replicas each, on free
127.0.0.1 ports (the cluster bus needs TCP; never the machine's 6379), in a temp dir, with AOF and a
password, built with ``redis-cli --cluster create`` as a user would.

Each node is a :class:`~devtools.redisproc.RedisProcess` started with ``cluster-enabled yes``, so a
test can ``kill -9`` a master and wait for its replica to take over (:meth:`Cluster.kill_master`,
:meth:`Cluster.wait_ok`).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis
from redis.cluster import RedisCluster

from devtools.redisproc import RedisProcess

NODE_TIMEOUT_MS = 2000
"""``cluster-node-timeout``: a dead master is failed over about this long after it stops answering."""


def free_port() -> int:
    """A TCP port nobody listens on now whose cluster-bus port (+10000) is free too."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class Cluster:
    """A Redis Cluster of ``masters`` masters and ``replicas`` replicas per master."""

    def __init__(self, workdir: Path, *, masters: int = 3, replicas: int = 1, password: str = "cluster-pw") -> None:
        self.workdir = Path(workdir)
        self.password = password
        self.masters = masters
        self.replicas = replicas
        self.nodes: list[RedisProcess] = []
        self.ports: list[int] = []

    def live_port(self) -> int:
        """The port of the first node that runs."""
        return next(p for p, n in zip(self.ports, self.nodes, strict=True) if n.running)

    @property
    def url(self) -> str:
        """A ``redis://`` URL of one live node (any node leads a client to the whole cluster)."""
        return f"redis://:{self.password}@127.0.0.1:{self.live_port()}"

    def start(self) -> Cluster:
        for i in range(self.masters * (1 + self.replicas)):
            port = free_port()
            node = RedisProcess(
                self.workdir / f"node-{i}",
                password=self.password,
                extra={
                    "port": str(port),
                    "bind": "127.0.0.1",
                    "cluster-enabled": "yes",
                    "cluster-config-file": "nodes.conf",
                    "cluster-node-timeout": str(NODE_TIMEOUT_MS),
                    "masterauth": self.password,
                    "protected-mode": "no",
                    "repl-diskless-sync-delay": "0",  # replicas in sync at once, not after 5 s
                },
            )
            node.start()
            self.nodes.append(node)
            self.ports.append(port)
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli not found: it builds the cluster")
        addrs = [f"127.0.0.1:{p}" for p in self.ports]
        proc = subprocess.run(
            [cli, "-a", self.password, "--no-auth-warning", "--cluster", "create", *addrs,
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {proc.stdout[-500:]} {proc.stderr[-500:]}")
        self.wait_ok()
        return self

    def client(self, **kwargs: object) -> RedisCluster:
        return RedisCluster(host="127.0.0.1", port=self.live_port(), password=self.password, **kwargs)  # type: ignore[arg-type]

    def node_client(self, i: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.ports[i], password=self.password, socket_timeout=5)

    def wait_ok(self, timeout_s: float = 60.0) -> None:
        """Until every live node says ``cluster_state:ok`` and every slot is served."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            states = []
            for i, node in enumerate(self.nodes):
                if not node.running:
                    continue
                c = self.node_client(i)
                try:
                    info = c.cluster("info")  # parsed by redis-py into a dict of str
                    states.append(info.get("cluster_state") == "ok" and info.get("cluster_slots_ok") == "16384")
                except (redis.RedisError, OSError):
                    states.append(False)
                finally:
                    c.close()
            if states and all(states):
                return
            time.sleep(0.1)
        raise RuntimeError("the cluster did not reach cluster_state:ok")

    def master_indexes(self) -> list[int]:
        """Indexes (into :attr:`nodes`) of the live nodes that are masters now."""
        out = []
        for i, node in enumerate(self.nodes):
            if not node.running:
                continue
            c = self.node_client(i)
            try:
                role = c.role()
                if role and (role[0] in (b"master", "master")):
                    out.append(i)
            except (redis.RedisError, OSError):
                pass
            finally:
                c.close()
        return out

    def replica_of(self, master: int) -> int:
        """The index of the live replica of node ``master``."""
        port = self.ports[master]
        for i, node in enumerate(self.nodes):
            if node.running and i != master:
                c = self.node_client(i)
                try:
                    role = c.role()
                finally:
                    c.close()
                if role[0] in (b"slave", "slave") and int(role[2]) == port:
                    return i
        raise AssertionError(f"node {master} has no live replica")

    def kill_master(self, i: int | None = None, *, wait: bool = True) -> int:
        """``kill -9`` a master (the first one if ``i`` is None); returns its index. With ``wait``,
        returns once a replica has taken its place and the cluster is ok again."""
        idx = self.master_indexes()[0] if i is None else i
        self.nodes[idx].kill()
        if wait:
            self.wait_failover()
        return idx

    def wait_failover(self, timeout_s: float = 60.0) -> None:
        """Until as many live masters serve as the cluster was built with, and it is ok."""
        deadline = time.monotonic() + timeout_s
        while len(self.master_indexes()) < self.masters:
            if time.monotonic() > deadline:
                raise RuntimeError("no replica took over the dead master")
            time.sleep(0.1)
        self.wait_ok(max(1.0, deadline - time.monotonic()))

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
