"""The RQ keys ``agg status`` counts are the ones RQ itself uses (a new RQ that renames them fails here)."""

from __future__ import annotations

import fakeredis
import pytest
from rq import Queue, Worker
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from aggregator.keys import Keys, RQKeys


@pytest.mark.parametrize("ns", ["agg", "other.ns"])
def test_rq_keys_are_rqs_own(ns: str) -> None:
    name = Keys(ns).turns_queue
    q = Queue(name, connection=fakeredis.FakeRedis())
    rk = RQKeys(name)
    assert rk.queue == q.key
    assert rk.started == StartedJobRegistry(queue=q).key
    assert rk.failed == FailedJobRegistry(queue=q).key
    assert rk.workers == WORKERS_BY_QUEUE_KEY % name
    assert Worker.count(queue=q) == 0
