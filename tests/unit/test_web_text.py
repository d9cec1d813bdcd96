"""`agg serve`'s text handling without a server: query terms, snippets and their marks, rendering of
hostile records, which Host names are the server's own."""

from __future__ import annotations

import socket

from aggregator.live.web.access import allowed_hosts, serve_url
from aggregator.live.web.data import MARK, query_terms, snippet
from aggregator.live.web.pages import marked
from aggregator.live.web.render import Item, render_event, render_events
from tests.support.web import Tags


def _matches(query: str, text: str) -> bool:
    terms = query_terms(query)
    return bool(terms) and all(t.search(text) for t in terms)


def test_query_terms_are_words_phrases_prefixes_and_cjk_substrings() -> None:
    text = "The Watcher commits every complete line; 東京タワーへ行く"
    assert _matches("watcher", text) and _matches("WATCHER lines*", text.replace("line;", "lines;"))
    assert not _matches("watch", text)  # whole words only
    assert _matches("watch*", text)
    assert _matches('"every complete line"', text) and not _matches('"complete every"', text)
    assert _matches("タワー", text)  # CJK: by substring
    assert _matches("watcher missing", text) is False  # every term must match
    for junk in ['"', "*", "(", "\\", "]]", '"" *', ""]:
        assert query_terms(junk) == []  # no word: nothing to look for, never an exception


def test_snippets_mark_the_matches_and_the_page_escapes_the_rest() -> None:
    text = "x " * 200 + "the <b>watcher</b> commits ⟦every⟧ line " + "y " * 200
    snip = snippet(text, query_terms("watcher every"))
    assert snip.startswith("…") and snip.endswith("…")
    assert f"{MARK[0]}watcher{MARK[1]}" in snip and f"{MARK[0]}every{MARK[1]}" in snip  # its own ⟦⟧ became []
    html = marked(snip)
    assert "<mark>watcher</mark>" in html and "<mark>every</mark>" in html and "&lt;b&gt;" in html
    assert marked("a ⟦<i>⟧ b ⟧ c ⟦") == "a <mark>&lt;i&gt;</mark> b  c "  # stray marks dropped


def test_records_render_as_escaped_text() -> None:
    evil = "<script>alert(1)</script> <img src=x onerror=alert(2)> [x](javascript:alert(3)) ![i](http://e.x/t.png)"
    records = [
        {"type": "user", "message": {"role": "user", "content": evil}},
        {
            "type": "assistant",
            "message": {
                "role": "assistant",
                "model": "<b>m</b>",
                "content": [
                    {"type": "text", "text": evil},
                    {"type": "tool_use", "id": "t", "name": "<Bash>", "input": {"command": evil}},
                    {"type": "thinking", "thinking": evil},
                ],
            },
        },
        {
            "type": "user",
            "message": {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t", "content": evil, "is_error": True}],
            },
        },
        {"type": "system", "subtype": "<x>", "content": evil},
        {"type": "summary", "summary": evil},
        {"type": "pr-link", "prNumber": 1, "prUrl": "javascript:alert(4)"},
        {"type": "never-seen-before", "payload": evil},
        "<not json at all>",
    ]
    items = [
        Item(i + 1, {"id": f"e{i}", "type": r.get("type") if isinstance(r, dict) else None, "agent": None}, r)
        for i, r in enumerate(records)
    ]
    html = render_events(items)
    tags = Tags(html)
    assert tags.scripts() == [] and tags.handlers() == []
    assert not any(t == "img" for t, _ in tags.tags)
    assert not any(h.startswith("javascript:") for h in tags.hrefs())
    assert "<script>alert(1)</script>" in tags.all_text()
    assert [a.get("id") for t, a in tags.tags if t == "article"] == [f"e-{i + 1}" for i in range(len(records))]


def test_subagent_runs_are_folded_into_threads() -> None:
    def item(seq: int, agent: str | None) -> Item:
        rec = {"type": "user", "message": {"role": "user", "content": f"m{seq}"}}
        return Item(seq, {"id": str(seq), "type": "user", "agent": agent}, rec)

    html = render_events(
        [item(1, None), item(2, "a1"), item(3, "a1"), item(4, None), item(5, "a2")],
        {"a1": {"type": "Explore", "description": "find <it>"}},
    )
    tags = Tags(html)
    assert [a.get("data-agent") for t, a in tags.tags if t == "details" and "thread" in str(a.get("class"))] == [
        "a1",
        "a2",
    ]
    assert "Explore · find <it>" in tags.all_text() and "&lt;it&gt;" in html
    assert render_event(item(9, None)).startswith('<article class="ev user" id="e-9"')


def test_own_host_names() -> None:
    local = allowed_hosts("127.0.0.1", 8765)
    assert {"127.0.0.1:8765", "localhost:8765", "[::1]:8765", "localhost"} <= local
    assert not {"evil.example", "evil.example:8765", "127.0.0.1.evil.example:8765", "127.0.0.1:80"} & local
    assert socket.gethostname().lower() not in local  # loopback: only the loopback names
    wild = allowed_hosts("0.0.0.0", 9000)
    assert f"{socket.gethostname().lower()}:9000" in wild and "127.0.0.1:9000" in wild
    assert "evil.example:9000" not in wild
    assert serve_url("::1", 5, "t") == "http://[::1]:5/?token=t"
