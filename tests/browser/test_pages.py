"""`agg serve`'s pages in a real browser (headless chromium), with `agg watch` and `agg serve` as real
processes on a real Redis: the corpus listed, lines appended to transcripts showing up without a
reload, search landing on the message, hostile transcript text running nothing, and a page that
keeps following its conversation across a `kill -9` of Redis."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from aggregator.keys import Keys
from aggregator.layout import iter_transcripts
from aggregator.parse import loads
from aggregator.store import Store
from aggregator.text import message_text, now_iso
from aggregator.views import conversation_views, recent_messages
from devtools.agg import HOST, agg_env, wait_until
from devtools.redisproc import RedisProcess
from tests.support import oracle
from tests.support.live import Agg, append, state
from tests.support.records import line, user
from tests.support.web import base_of, serving, token_of

LIVE_MS = 20_000
"""How long a page may take to show an appended line (a loaded machine; the benchmark measures it)."""
HOSTILE = "<script>alert('pwned')</script><img src=x onerror=alert(1)> [go](javascript:alert(2))"


@dataclass
class Site:
    url: str
    store: Store
    claude: Path
    page: Page
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return base_of(self.url)

    def open(self, path: str) -> None:
        self.page.goto(self.base + path)

    def say(self, session: str, text: str, project: str = "-home-user-web") -> Path:
        """Append a user prompt to ``session``'s transcript, as Claude Code does."""
        path = self.claude / "projects" / project / f"{session}.jsonl"
        append(path, line(user(session, str(uuid.uuid4()), text, at=now_iso())))
        return path


@contextmanager
def site_on(server: RedisProcess, store: Store, tmp_path: Path, browser: Any) -> Iterator[Site]:
    """`agg watch` and `agg serve` on ``server``, and a browser page holding the token cookie."""
    env = agg_env(server, tmp_path)
    (tmp_path / "claude" / "projects").mkdir(parents=True, exist_ok=True)
    expected = oracle.read([Path(s.path) for s in iter_transcripts([tmp_path / "claude"])]).events
    with Agg(["watch"], env, tmp_path, name="watch"), serving(env, tmp_path) as (_, url):
        wait_until(lambda: state(tmp_path / "data", "watch").get("state") == "watching", "the watcher", timeout=60)
        wait_until(lambda: store.stats()["events"] >= expected, "the corpus read", timeout=120)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        site = Site(url, store, tmp_path / "claude", page)
        page.on("dialog", lambda d: (site.dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda exc: site.errors.append(str(exc)))
        page.on("console", lambda m: site.errors.append(m.text) if m.type == "error" else None)
        page.goto(url)
        try:
            yield site
            assert site.dialogs == []
            assert site.errors == []  # no script error, no CSP violation
        finally:
            context.close()


@pytest.fixture
def site(redis_server: RedisProcess, store: Store, corpus: Path, tmp_path: Path, browser: Any) -> Iterator[Site]:
    with site_on(redis_server, store, tmp_path, browser) as s:
        yield s


def _main_file(site: Site, conv: str) -> Path:
    return next(site.claude.glob(f"projects/*/{conv}.jsonl"))


def test_the_list_shows_the_corpus_titles(site: Site) -> None:
    views = conversation_views(site.store)
    assert len(views) > 20
    rows = site.page.locator("#conv-rows tr")
    expect(rows).to_have_count(len(views))
    shown = site.page.eval_on_selector_all(
        "#conv-rows tr", "rows => rows.map(r => [r.dataset.key, r.querySelector('td.title a').textContent])"
    )
    want = {v["key"]: v["title"] or f"(untitled) {v['key'][:8]}" for v in views}
    assert dict(shown) == want
    newest = max(views, key=lambda v: (v["last_ts"] or "", v["key"]))
    assert shown[0][0] == newest["key"]


def test_appended_lines_show_without_a_reload(site: Site) -> None:
    views = sorted(conversation_views(site.store), key=lambda v: v["last_ts"] or "")
    oldest = next(v for v in views if list(site.claude.glob(f"projects/*/{v['key']}.jsonl")))
    page = site.page
    page.evaluate("window.aggMarker = 42")  # gone if the page reloads
    expect(page.locator("#live")).to_have_text("live", timeout=LIVE_MS)
    first = page.locator("#conv-rows tr").first
    assert first.get_attribute("data-key") != oldest["key"]
    path = _main_file(site, oldest["key"])
    append(path, line(user(oldest["key"], "moved", "a new message moves me up", at=now_iso())))
    expect(first).to_have_attribute("data-key", oldest["key"], timeout=LIVE_MS)
    fresh = str(uuid.uuid4())
    site.say(fresh, "a brand new conversation about otters")
    expect(first).to_have_attribute("data-key", fresh, timeout=LIVE_MS)
    expect(first.locator("td.title a")).to_have_text("a brand new conversation about otters")
    assert page.evaluate("window.aggMarker") == 42

    site.open(f"/conversations/{oldest['key']}")
    page.evaluate("window.aggMarker = 7")
    expect(page.locator("#live")).to_have_text("live", timeout=LIVE_MS)
    before = page.locator("article.ev").count()
    for n in range(3):
        append(path, line(user(oldest["key"], f"live-{n}", f"appended line number {n}", at=now_iso())))
    for n in range(3):
        expect(page.locator("article.ev", has_text=f"appended line number {n}")).to_have_count(1, timeout=LIVE_MS)
    assert page.locator("article.ev").count() == before + 3
    texts = page.eval_on_selector_all("article.ev", "els => els.slice(-3).map(e => e.textContent)")
    assert [f"appended line number {n}" in t for n, t in enumerate(texts)] == [True] * 3  # in order
    assert page.evaluate("window.aggMarker") == 7


def test_search_finds_a_phrase_and_lands_on_the_message(site: Site) -> None:
    store = site.store

    def typed(m: dict[str, Any]) -> dict[str, Any] | None:
        """The record of a prompt a person typed (not injected context, not a tool result)."""
        if m["role"] != "user" or m["preview"].startswith("[") or len(m["preview"].split()) < 8:
            return None
        rec = loads(next(b for eid, b in store.replay(m["conv"]) if eid == m["id"]))
        return None if rec.get("isMeta") or rec.get("isCompactSummary") else dict(rec)

    # The oldest such prompt the recent-messages projection holds (the search index holds them all).
    target, rec = next((m, r) for m in recent_messages(store, limit=10**6) if (r := typed(m)) is not None)
    phrase = " ".join(message_text(rec).split()[2:6])
    page = site.page
    page.fill("form.search input", f'"{phrase}"')
    page.press("form.search input", "Enter")
    hit = page.locator(f'a.hit[href*="#e-{target["seq"]}"]')
    expect(hit).to_have_count(1)
    expect(page.locator("mark").first).to_be_visible()
    hit.click()
    landed = page.locator(f"#e-{target['seq']}")
    expect(landed).to_have_class(re.compile(r"\bev user target\b"))
    expect(landed).to_be_in_viewport()
    assert " ".join(phrase.split()) in " ".join((landed.text_content() or "").split())


def test_a_browser_without_the_token_gets_nothing(site: Site, browser: Any) -> None:
    """A browser that never opened the URL with its token (no cookie) gets 401 for every page, the
    API and the event stream; a wrong token is no better."""
    context = browser.new_context()
    try:
        page = context.new_page()
        for path in ["/", "/usage", "/status", "/search?q=the", "/api/conversations", "/api/events", "/static/app.js"]:
            res = page.goto(site.base + path)
            assert res is not None and res.status == 401, path
            assert "Work on bead" not in page.content(), path  # nothing of the record
        res = page.goto(site.base + "/?token=" + "x" * len(token_of(site.url)))
        assert res is not None and res.status == 401
        assert context.cookies() == []  # no cookie handed out for a wrong token
    finally:
        context.close()


def test_hostile_transcript_text_runs_nothing(site: Site) -> None:
    session = str(uuid.uuid4())
    site.say(session, HOSTILE)
    page = site.page
    first = page.locator("#conv-rows tr").first
    expect(first).to_have_attribute("data-key", session, timeout=LIVE_MS)  # a title holding <script>, live
    site.open(f"/conversations/{session}")
    expect(page.locator("#live")).to_have_text("live", timeout=LIVE_MS)
    site.say(session, "second: " + HOSTILE)  # and one arriving live, through the fragment path
    expect(page.locator("article.ev")).to_have_count(2, timeout=LIVE_MS)
    expect(page.locator("article.ev").last).to_contain_text("<script>alert('pwned')</script>")
    assert page.locator("article.ev img, article.ev script").count() == 0
    assert page.eval_on_selector_all("a[href]", "as => as.filter(a => a.href.startsWith('javascript:')).length") == 0
    expect(page.locator("article.ev").last).to_contain_text("[go](javascript:alert(2))")  # not a link
    # site_on asserts that no dialog fired and no script error happened


@pytest.mark.slow
def test_a_page_keeps_following_its_conversation_across_a_redis_kill(tmp_path: Path, browser: Any) -> None:
    server = RedisProcess(tmp_path / "redis", password="web-pw", appendfsync="always").start()
    store = Store(server.client(), Keys("agg"), HOST)
    session = str(uuid.uuid4())
    try:
        with site_on(server, store, tmp_path, browser) as site:
            site.say(session, "line 0")
            wait_until(lambda: session in store.conversations(), "the conversation")
            site.open(f"/conversations/{session}")
            page = site.page
            expect(page.locator("#live")).to_have_text("live", timeout=LIVE_MS)
            for n in range(1, 5):
                site.say(session, f"line {n}")
            expect(page.locator("article.ev")).to_have_count(5, timeout=LIVE_MS)
            server.kill()
            for n in range(5, 10):
                site.say(session, f"line {n}")  # written while Redis is down
            server.start()
            for n in range(10, 15):
                site.say(session, f"line {n}")
            expect(page.locator("article.ev")).to_have_count(15, timeout=60_000)
            texts = page.eval_on_selector_all("article.ev", "els => els.map(e => e.querySelector('p').textContent)")
            assert texts == [f"line {n}" for n in range(15)]  # each once, in order
            site.errors.clear()  # the browser logs the refused requests of the outage
    finally:
        server.kill()


def test_a_long_conversation_loads_earlier_pages_and_jumps_to_latest(site: Site) -> None:
    """A long conversation opens on its newest events (at the bottom); scrolling up loads the
    earlier pages until its start; a line appended while scrolled away shows "jump to latest",
    which brings the page down to it."""
    view = max(conversation_views(site.store), key=lambda v: v["messages"])
    page = site.page
    site.open(f"/conversations/{view['key']}")
    expect(page.locator("#live")).to_have_text("live", timeout=LIVE_MS)
    events = page.locator("article.ev")
    first_screen = events.count()
    assert 0 < first_screen < view["events"]  # not the whole conversation at once
    assert page.evaluate("window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 80")
    start = page.locator("p.start", has_text="start of the conversation")
    for _ in range(200):  # scroll up, as a reader does, until the start is reached
        if start.count():
            break
        loaded = events.count()
        if page.evaluate("document.documentElement.scrollHeight > window.innerHeight + 2"):
            page.evaluate("window.scrollTo(0, 1)")  # the link to earlier events comes into view
        else:
            page.locator("#earlier").click()  # a first screen too short to scroll: the link itself
        wait_until(lambda loaded=loaded: events.count() > loaded or start.count(), "an earlier page", timeout=20)
    assert start.count() == 1 and events.count() > first_screen
    seqs = page.eval_on_selector_all("article.ev", "els => els.map(e => Number(e.dataset.seq))")
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))  # pages joined up, once each, in order

    page.evaluate("window.scrollTo(0, 0)")  # away from the bottom
    append(_main_file(site, view["key"]), line(user(view["key"], "late", "a line to jump to", at=now_iso())))
    jump = page.locator("#jump")
    expect(jump).to_be_visible(timeout=LIVE_MS)
    expect(jump).to_contain_text("jump to latest")
    jump.click()
    late = page.locator("article.ev", has_text="a line to jump to")
    expect(late).to_be_in_viewport(timeout=LIVE_MS)
    expect(jump).to_be_hidden()
