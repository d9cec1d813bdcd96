"""`agg serve`'s text handling without a server: search snippets' marks on the page, records rendered
as transcript.py reads them and escaped, which Host names are the server's own."""

from __future__ import annotations

import socket

from aggregator.fts import MARK, snippet, terms
from aggregator.live.web.access import allowed_hosts, serve_url
from aggregator.live.web.pages import marked
from aggregator.live.web.render import Item, render_event, render_events
from aggregator.render import first_line
from aggregator.transcript import HIDDEN_TYPES, message_of
from tests.support.web import Tags


def test_snippets_mark_the_matches_and_the_page_escapes_the_rest() -> None:
    text = "x " * 200 + "the <b>watcher</b> commits ⟦every⟧ line " + "y " * 200
    snip = snippet(text, terms("watcher every"))  # as agg search cuts it
    assert snip.startswith("…") and snip.endswith("…")
    assert f"{MARK[0]}watcher{MARK[1]}" in snip and f"{MARK[0]}every{MARK[1]}" in snip  # its own ⟦⟧ became []
    html = marked(snip)
    assert "<mark>watcher</mark>" in html and "<mark>every</mark>" in html and "&lt;b&gt;" in html
    assert "[every]" not in html and MARK[0] not in html
    assert marked("a ⟦<i>⟧ b ⟧ c ⟦") == "a <mark>&lt;i&gt;</mark> b  c "  # stray marks dropped


def test_the_page_says_what_agg_show_says() -> None:
    """Tool calls' main arguments, folded results and hidden records are transcript.py's decisions."""
    calls = [
        {"type": "tool_use", "id": "g", "name": "Grep", "input": {"pattern": "TODO", "path": "src", "-n": True}},
        {"type": "tool_use", "id": "w", "name": "TodoWrite", "input": {"todos": [{"content": "a"}, {"content": "b"}]}},
    ]
    rec = {"type": "assistant", "message": {"role": "assistant", "content": calls}}
    result = {
        "type": "user",
        "message": {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "g", "content": "\n\nfirst\nsecond"}],
        },
    }
    msgs = [message_of("a", rec), message_of("r", result)]
    assert msgs[0] is not None and msgs[1] is not None
    html = render_events([Item(1, {"id": "a", "type": "assistant"}, rec), Item(2, {"id": "r", "type": "user"}, result)])
    summaries = [s.split("</summary>")[0] for s in html.split("<summary>")[1:]]
    assert [b.text for b in msgs[0].blocks] == ["TODO (src)", "2 todos"]
    assert "<code>TODO (src)</code>" in summaries[0] and "<code>2 todos</code>" in summaries[1]
    assert f"<code>{first_line(msgs[1].blocks[0].text)}</code>" in summaries[2] and "result · 4 lines" in summaries[2]
    assert '"-n": true' in Tags(html).all_text()  # the whole input, one click away
    assert 'class="ev user tool"' in html and msgs[1].role == "tool"
    assert HIDDEN_TYPES and all(
        message_of("x", {"type": t, "message": {"content": "hi"}}) is None for t in HIDDEN_TYPES
    )


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
