"""``agg serve`` on a Redis Cluster: the JSON API answers as on a single Redis holding the same
corpus, the pages name each conversation's bucket, and ``/api/events`` streams every bucket with
each event's id the whole position, which ``Last-Event-ID`` resumes from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from aggregator.config import Settings
from aggregator.connection import Connection, client_from_url, cluster_client
from aggregator.live.subscribe import parse_position
from aggregator.live.web.access import allowed_hosts
from aggregator.live.web.app import build_app
from devtools.agg import HOST, wait_until
from devtools.cluster import Cluster
from tests.cluster.conftest import Pair
from tests.support.web import BASE, PORT, TOKEN, Tags, base_of, serving, token_of
from tests.support.web import EventStream as Stream

AUTH = {"authorization": f"Bearer {TOKEN}"}


def _client(env: dict[str, str], tmp_path: Path, cluster: bool) -> TestClient:
    settings = Settings.from_env(env)
    url = settings.redis_url
    client: Any = cluster_client(url) if cluster else client_from_url(url)
    conn = Connection(client, url, cluster=cluster)
    settings = Settings(
        redis_url=url, data_dir=tmp_path / ("c" if cluster else "s"), host=HOST, namespace=settings.namespace
    )
    app = build_app(settings, conn, token=TOKEN, allowed_hosts=allowed_hosts("127.0.0.1", PORT), port=PORT)
    return TestClient(app, base_url=BASE)


def _same(doc: Any) -> Any:
    """``doc`` without what differs between a cluster and a single Redis (seqs) or between runs."""
    if isinstance(doc, dict):
        return {k: _same(v) for k, v in doc.items() if k not in ("seq", "bucket", "took_ms")}
    if isinstance(doc, list):
        return [_same(v) for v in doc]
    return doc


def test_the_api_answers_as_on_a_single_redis(pair: Pair, tmp_path: Path) -> None:
    on_cluster, on_single = _client(pair.cluster, tmp_path, True), _client(pair.single, tmp_path, False)
    convs = pair.conversations()
    paths = ["/api/conversations", "/api/usage?by=project", "/api/usage?by=day", "/api/search?q=the",
             *(f"/api/conversations/{c}" for c in convs[:5])]  # fmt: skip
    for path in paths:
        a, b = on_cluster.get(path, headers=AUTH), on_single.get(path, headers=AUTH)
        assert a.status_code == b.status_code == 200, path
        assert _same(a.json()) == _same(b.json()), path
    # Rejections: the same records (their order among equal times is each bucket's own).
    a, b = (c.get("/api/rejects", headers=AUTH).json() for c in (on_cluster, on_single))
    assert (a["rejected"], a["kept"]) == (b["rejected"], b["kept"]) == (10, 10)
    assert sorted((r["file"], r["offset"], r["reason"]) for r in a["rejects"]) == sorted(
        (r["file"], r["offset"], r["reason"]) for r in b["rejects"]
    )
    for conv in convs[:3]:
        page = on_cluster.get(f"/conversations/{conv}", headers=AUTH)
        assert page.status_code == 200
        section = next(a for t, a in Tags(page.text).tags if t == "section" and a.get("id") == "events")
        store, _ = pair.buckets.find(conv)
        bucket = pair.buckets.stores.index(store)
        assert section["data-bucket"] == str(bucket)
        assert section["data-since"] == f"{bucket}:{store.last_seq()}"
        single = on_single.get(f"/conversations/{conv}", headers=AUTH)
        section = next(a for t, a in Tags(single.text).tags if t == "section" and a.get("id") == "events")
        assert section["data-bucket"] == ""
    for path in ("/", "/search?q=the", "/usage", "/status", "/fragments/status"):
        assert on_cluster.get(path, headers=AUTH).status_code == 200, path
    status = Tags(on_cluster.get("/status", headers=AUTH).text).all_text()
    assert "3 masters" in status and "projections caught up" in status
    home = Tags(on_cluster.get("/", headers=AUTH).text)
    rows = next(a for t, a in home.tags if t == "tbody" and a.get("id") == "conv-rows")
    heads = {i: s.last_seq() for i, s in enumerate(pair.buckets) if s.last_seq()}
    assert parse_position(str(rows["data-since"])) == heads  # a bucket not named: nothing there yet
    bad = on_cluster.get("/api/events?since=12", headers=AUTH)
    assert bad.status_code == 400 and "bucket:seq" in bad.json()["error"]


def test_events_stream_every_bucket_and_resume_from_the_last_id(pair: Pair, tmp_path: Path, cluster: Cluster) -> None:
    heads = {i: s.last_seq() for i, s in enumerate(pair.buckets) if s.last_seq()}
    total = sum(heads.values())
    with serving(pair.cluster, tmp_path) as (_, url):
        first = Stream(base_of(url), token_of(url), since="0", limit=total // 2)
        first.start()
        first.join(timeout=60)
        assert not first.is_alive() and first.error is None and len(first.envs) == total // 2
        # Each id is where the stream stands after its event: that event's bucket at its seq.
        for env, sid in zip(first.envs, first.ids, strict=True):
            assert parse_position(sid)[env["bucket"]] == env["seq"]
        rest = Stream(base_of(url), token_of(url), last_id=first.ids[-1])
        rest.start()
        wait_until(lambda: len(rest.envs) >= total - len(first.envs), "the rest of the events", timeout=60)
        rest.stop.set()
    got = [(e["bucket"], e["seq"]) for e in first.envs + rest.envs]
    assert len(got) == len(set(got)) == total  # every event once
    for b, head in heads.items():
        assert [s for bb, s in got if bb == b] == list(range(1, head + 1))  # in order, no gap
