"""`agg serve`'s pages on a Redis Cluster in a real browser: lines appended to transcripts of
projects in different buckets show up without a reload, on the list and on a conversation's page
(the page follows `/api/events` from a position, a seq per bucket)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from aggregator.buckets import bucket_of
from aggregator.text import now_iso
from devtools.agg import run_agg, wait_until
from devtools.cluster import Cluster
from tests.browser.test_pages import LIVE_MS
from tests.cluster.conftest import cluster_env
from tests.support.live import Agg, append, state
from tests.support.records import line, user
from tests.support.web import serving

PROJECTS = ("-home-u-alpha", "-home-u-beta")


def test_a_cluster_store_s_pages_follow_every_bucket(tmp_path: Path, browser: Any) -> None:
    assert bucket_of(PROJECTS[0]) != bucket_of(PROJECTS[1])
    claude = tmp_path / "claude" / "projects"
    paths = [claude / p / f"s{i}.jsonl" for i, p in enumerate(PROJECTS)]
    for i, path in enumerate(paths):
        append(path, line(user(f"s{i}", str(uuid.uuid4()), f"first words of s{i}", at=now_iso())))
    with Cluster(tmp_path / "cluster", masters=3, replicas=0) as cl:
        env = cluster_env(cl, tmp_path, "agg")
        with Agg(["watch"], env, tmp_path, name="watch"), serving(env, tmp_path) as (_, url):
            wait_until(lambda: state(tmp_path / "data", "watch").get("state") == "watching", "the watcher", timeout=60)
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(url)
            rows = page.locator("#conv-rows tr")
            expect(rows).to_have_count(2, timeout=LIVE_MS)
            expect(page.locator("#live")).to_have_text("live", timeout=LIVE_MS)
            # A new conversation in each bucket, one after the other: each moves to the top.
            for i, project in enumerate(PROJECTS):
                session = f"new{i}"
                append(claude / project / f"{session}.jsonl", line(user(session, "n", f"hello {i}", at=now_iso())))
                expect(rows.first).to_have_attribute("data-key", session, timeout=LIVE_MS)
            page.goto(url.split("/?", 1)[0] + "/conversations/s1")
            expect(page.locator("#live")).to_have_text("live", timeout=LIVE_MS)
            for n in range(3):
                append(paths[1], line(user("s1", f"live-{n}", f"appended line number {n}", at=now_iso())))
            for n in range(3):
                expect(page.locator("article.ev", has_text=f"appended line number {n}")).to_have_count(
                    1, timeout=LIVE_MS
                )
            # A line of the other bucket's conversation, then one of this one: once the second
            # shows, the first (committed before it) would have shown too if it were followed.
            append(paths[0], line(user("s0", "other", "not on this page", at=now_iso())))
            stored = lambda: "not on this page" in run_agg(["replay", "s0"], env, check=False).stdout  # noqa: E731
            wait_until(stored, "the other conversation's line stored", timeout=LIVE_MS / 1000)
            append(paths[1], line(user("s1", "after", "after the other one", at=now_iso())))
            expect(page.locator("article.ev", has_text="after the other one")).to_have_count(1, timeout=LIVE_MS)
            expect(page.locator("article.ev", has_text="not on this page")).to_have_count(0)
            context.close()
            assert errors == []
