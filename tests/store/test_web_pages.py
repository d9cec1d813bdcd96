"""What the usage and status pages of ``agg serve`` show (issue 11, "Pages"), in process, on a real
Redis holding the shared corpus: usage by day, model and project, each as a chart with its table and
the cost; the status page's Redis binary and version, lag per claude dir, LLM turns and rejected
lines with file and offset."""

from __future__ import annotations

import redis
from starlette.testclient import TestClient

from aggregator.store import Store
from aggregator.usage import report as usage_report
from tests.support.web import Tags


def test_usage_page_charts_each_dimension_beside_its_table(web: TestClient, store: Store) -> None:
    res = web.get("/usage")
    assert res.status_code == 200
    tags = Tags(res.text)
    charts = [a.get("aria-label") for t, a in tags.tags if t == "svg" and "chart" in (a.get("class") or "").split()]
    assert charts == ["tokens by day", "tokens by model", "tokens by project"]
    tables = [a for t, a in tags.tags if t == "table" and "usage" in (a.get("class") or "").split()]
    assert len(tables) == 3
    text = tags.all_text()
    by_model = usage_report(store, "model")
    for row in by_model["rows"]:
        assert row["key"] in text, row["key"]  # every model has its row
    total = by_model["total"]
    assert f"{total['total']:,} tokens" in text
    titles = {a.get("title") for t, a in tags.tags if t == "td"}
    for row in usage_report(store, "project")["rows"]:  # projects as their directories, as agg usage shows them
        assert row["project_path"] and row["project_path"] in titles and row["key"] not in titles, row
    assert f"${total['cost_usd']:,.2f}" in text  # the cost, in dollars


def test_status_page_shows_redis_lag_turns_and_rejected_lines(web: TestClient, store: Store, r: redis.Redis) -> None:
    res = web.get("/status")
    assert res.status_code == 200
    text = Tags(res.text).all_text()
    info = r.info("server")
    assert str(info["redis_version"]) in text  # the Redis serving the store, with its version …
    assert str(info["executable"]) in text  # … and its binary
    assert "password=***" in text and (r.connection_pool.connection_kwargs.get("password") or "\0") not in text
    assert "lag" in text and "not yet read" in text
    for word in ("queued", "running", "parked", "failed", "committed"):  # the LLM turns' state
        assert word in text, word
    rejects = web.get("/api/rejects").json()["rejects"]
    assert len(rejects) == store.stats()["rejected"] > 0
    for rej in rejects:  # each rejected line with its file and offset
        assert rej["file"] in text
        assert f"{rej['file']}{rej['offset']}" in text.replace("\n", "")
