"""``agg serve``'s pages and JSON API, in process, on a real Redis holding the shared corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import redis
from openapi_spec_validator import validate
from starlette.routing import Route
from starlette.testclient import TestClient

from aggregator.fts import MARK
from aggregator.ingest import ingest
from aggregator.layout import iter_transcripts
from aggregator.listing import conversations
from aggregator.live.web.indexer import Indexer
from aggregator.live.web.security import CSP
from aggregator.parse import loads
from aggregator.search import search
from aggregator.searchindex import SearchIndex
from aggregator.store import Store
from aggregator.text import message_text, now_iso
from aggregator.transcript import HIDDEN_TYPES, header
from aggregator.usage import conversation_costs
from aggregator.usage import report as usage_report
from aggregator.views import conversation_views, recent_messages
from devtools.agg import wait_until
from devtools.redisproc import RedisProcess
from tests.support.records import assistant, user, write
from tests.support.web import BASE, TOKEN, Tags, client_for

HOSTILE = (
    "<script>alert('pwned')</script> <img src=x onerror=alert(1)> "
    "[click me](javascript:alert(1)) ![tracker](http://example.com/t.png) <b onclick=alert(2)>bold</b>"
)
PAGES = ["/", "/search?q=the", "/usage", "/status"]


def _biggest(store: Store) -> str:
    return max(conversation_views(store), key=lambda v: v["events"])["key"]


def test_every_request_needs_the_token(redis_server: RedisProcess, r: redis.Redis, tmp_path: Path) -> None:
    client = client_for(redis_server, r, tmp_path)
    for path in ["/", "/api/conversations", "/static/app.js", "/api/events", "/api/openapi.json"]:
        assert client.get(path).status_code == 401, path
        assert client.get(path + ("&" if "?" in path else "?") + "token=wrong").status_code == 401, path
    first = client.get(f"/usage?token={TOKEN}")
    assert first.status_code == 200
    cookie = first.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and cookie.startswith(f"agg_token_8765={TOKEN};")
    assert client.get("/usage").status_code == 200  # the cookie alone, from now on
    bare = TestClient(client.app, base_url=BASE)
    assert bare.get("/api/status", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert bare.get("/api/status", headers={"authorization": "Bearer nope"}).status_code == 401


def test_foreign_host_headers_and_writes_are_refused(web: TestClient) -> None:
    for host in ["evil.example", "evil.example:8765", "127.0.0.1.evil.example:8765", "127.0.0.1:9999"]:
        res = web.get(f"/?token={TOKEN}", headers={"host": host})
        assert res.status_code == 403, host
    for host in ["localhost:8765", "127.0.0.1:8765", "[::1]:8765"]:
        assert web.get("/", headers={"host": host}).status_code == 200, host
    assert web.post("/api/conversations").status_code == 405


def test_pages_run_only_their_own_script(web: TestClient, store: Store) -> None:
    conv = _biggest(store)
    for path in [*PAGES, f"/conversations/{conv}", f"/conversations/{conv}?all=1"]:
        res = web.get(path)
        assert res.status_code == 200, path
        assert res.headers["content-security-policy"] == CSP
        tags = Tags(res.text)
        assert [s.get("src", "").split("?")[0] for s in tags.scripts()] == ["/static/app.js"], path
        assert tags.handlers() == [], path
    assert "'unsafe-inline'" not in CSP and "'unsafe-eval'" not in CSP and "script-src 'self';" in CSP


def test_a_hostile_message_is_shown_as_text(web: TestClient, store: Store, corpus: Path) -> None:
    session = "0b6f4c1e-5a8d-4a55-9f11-000000000666"
    write(corpus / "-home-user-evil" / f"{session}.jsonl", [user(session, "evil", HOSTILE)])
    ingest(store, iter_transcripts([corpus]))
    res = web.get(f"/conversations/{session}")
    assert res.status_code == 200
    tags = Tags(res.text)
    assert "<script>alert" not in res.text and "<b onclick" not in res.text  # not raw HTML...
    assert "<script>alert('pwned')</script>" in tags.all_text()  # ... but its text is there to read
    assert [s.get("src", "").split("?")[0] for s in tags.scripts()] == ["/static/app.js"]
    assert tags.handlers() == []
    assert not any(h.lower().startswith("javascript:") for h in tags.hrefs())
    assert not any(t == "img" for t, _ in tags.tags)  # a transcript never makes the page fetch a URL
    row = web.get(f"/fragments/conversation-row/{session}")
    assert row.status_code == 200 and Tags(row.text).handlers() == [] and "&lt;script&gt;" in row.text


def test_conversations_answer_like_agg_list_with_real_costs(web: TestClient, store: Store) -> None:
    views = conversation_views(store)
    body = web.get("/api/conversations").json()
    assert body == conversations(store)  # agg list --json --limit 0
    assert body["total"] == len(views)
    expected = [v["key"] for v in sorted(views, key=lambda v: (v["last_ts"] or "", v["key"]), reverse=True)]
    assert [c["key"] for c in body["conversations"]] == expected
    costs = conversation_costs(store)
    priced = [c for c in body["conversations"] if c["responses"]]
    assert priced and all(c["cost_usd"] == costs[c["key"]] and c["cost_usd"] > 0 for c in priced)
    page = web.get("/api/conversations", params={"limit": 5, "offset": 3}).json()
    assert page["conversations"] == body["conversations"][3:8] and page["total"] == body["total"]
    project = views[0]["project"]
    only = web.get("/api/conversations", params={"project": project}).json()
    assert only == conversations(store, project=project) and only["total"] >= 1
    chosen = {c["key"] for c in only["conversations"]}
    other = next(v for v in views if v["key"] not in chosen)  # the live list's row updates, filtered alike
    assert web.get(f"/fragments/conversation-row/{other['key']}", params={"project": project}).status_code == 204
    row = web.get(f"/fragments/conversation-row/{views[0]['key']}", params={"project": project})
    assert row.status_code == 200 and f'data-key="{views[0]["key"]}"' in row.text
    listed = Tags(web.get("/").text).all_text()
    for v in views:
        if v["title"]:
            assert Tags(f"<p>{v['title'][:40]}</p>").all_text() in listed
    top = body["conversations"][0]
    assert f"${top['cost_usd']:,.2f}" in Tags(web.get("/").text).all_text()  # the page shows the real cost


def test_the_list_notices_new_costs_and_projects(web: TestClient, store: Store, corpus: Path) -> None:
    """The server keeps the paths and costs between requests: a new line with usage is seen at once."""
    before = web.get("/api/conversations").json()
    session = "0b6f4c1e-5a8d-4a55-9f11-000000000669"
    usage = {"input_tokens": 1_000_000, "output_tokens": 0}
    write(
        corpus / "-home-user-brand-new" / f"{session}.jsonl",
        [user(session, "q", "hello"), assistant(session, "a", "msg_new", "req_new", usage, at=now_iso())],
    )
    ingest(store, iter_transcripts([corpus]))
    after = web.get("/api/conversations").json()
    assert after == conversations(store) and after["total"] == before["total"] + 1
    new = next(c for c in after["conversations"] if c["key"] == session)
    assert new["cost_usd"] == 5.0 and new["project"] == "-home-user-brand-new"  # Opus 4.6: $5 per M input
    options = [a.get("value") for t, a in Tags(web.get("/").text).tags if t == "option"]
    assert "-home-user-brand-new" in options


def test_one_conversation_answers_like_the_cli(web: TestClient, store: Store) -> None:
    listed = {c["key"]: c for c in conversations(store)["conversations"]}
    for conv in [_biggest(store), *list(listed)[:5]]:
        got = web.get(f"/api/conversations/{conv[:13]}").json()["conversation"]  # a unique prefix will do
        assert got == listed[conv]  # as agg list --json lists it
        assert {k: v for k, v in got.items() if k not in ("active", "cost_usd")} == header(store, conv)
        page = Tags(web.get(f"/conversations/{conv}").text).all_text()
        assert (f"cost ${got['cost_usd']:,.2f}" if got["cost_usd"] >= 0.01 else "cost $") in page


def test_event_pages_cover_a_conversation_once_in_order(web: TestClient, store: Store) -> None:
    conv = _biggest(store)
    replayed = list(store.replay(conv))
    ids = [eid for eid, _ in replayed]
    assert len(ids) > 250  # several pages

    backwards: list[dict[str, Any]] = []
    params: dict[str, Any] = {"all": "1", "limit": 100}
    while True:
        page = web.get(f"/api/conversations/{conv}", params=params).json()
        backwards = page["events"] + backwards
        if not page["more_before"]:
            break
        params["before"] = page["events"][0]["seq"]
    assert [e["id"] for e in backwards] == ids
    assert [e["record"] for e in backwards] == [loads(b) for _, b in replayed]

    forwards: list[dict[str, Any]] = []
    params = {"all": "1", "limit": 77, "after": 0}
    while True:
        page = web.get(f"/api/conversations/{conv}", params=params).json()
        forwards += page["events"]
        if not page["more_after"]:
            break
        params["after"] = page["events"][-1]["seq"]
    assert [e["id"] for e in forwards] == ids

    shown = [e for e in forwards if e["type"] not in HIDDEN_TYPES]
    default = web.get(f"/api/conversations/{conv}").json()["events"]
    assert [e["id"] for e in default] == [e["id"] for e in shown[-100:]]
    middle = shown[len(shown) // 2]
    around = web.get(f"/api/conversations/{conv}", params={"at": middle["seq"]}).json()["events"]
    assert middle["id"] in [e["id"] for e in around] and around[0]["seq"] < middle["seq"]
    assert web.get(f"/conversations/{conv}", params={"at": middle["seq"]}).text.count(f'id="e-{middle["seq"]}"') == 1


def _index(store: Store, tmp_path: Path) -> SearchIndex:
    return SearchIndex.open(store, tmp_path / "data")


def test_search_answers_like_agg_search(web: TestClient, store: Store, tmp_path: Path) -> None:
    target = next(m for m in recent_messages(store) if len(m["preview"].split()) > 8)  # an old one too
    body = next(b for eid, b in store.replay(target["conv"]) if eid == target["id"])
    words = message_text(loads(body)).split()
    phrase = " ".join(w for w in words[2:6])
    res = web.get("/api/search", params={"q": f'"{phrase}"', "limit": 1000}).json()
    assert "scope" not in res and "scanned" not in res
    assert target["id"] in [h["id"] for h in res["hits"]], (phrase, res["hits"][:3])
    hit = next(h for h in res["hits"] if h["id"] == target["id"])
    assert hit["conv"] == target["conv"] and hit["seq"] == target["seq"] and MARK[0] in hit["snippet"]
    page = web.get("/search", params={"q": f'"{phrase}"', "limit": 1000}).text
    assert f"/conversations/{target['conv']}?at={target['seq']}#e-{target['seq']}" in page
    assert "<mark>" in page and MARK[0] not in page
    index = _index(store, tmp_path)
    try:
        for params in [
            {"q": "the"},
            {"q": "the", "role": "tool", "limit": 7},
            {"q": "the", "project": res["hits"][0]["project"]},
            {"q": "the", "conversation": target["conv"][:12], "since": "2020-01-01", "until": "2030-12-31"},
        ]:
            got = web.get("/api/search", params=params).json()
            want = search(
                store,
                index,
                params["q"],
                project=params.get("project"),
                conversation=params.get("conversation"),
                role=params.get("role"),
                since_ms=1577836800000 if "since" in params else None,
                until_ms=1924991999999 if "until" in params else None,
                limit=int(params.get("limit", 20)),
            )
            assert got["total"] == want["total"] > 0 and got["hits"] == want["hits"], params
    finally:
        index.close()
    for junk in ['"unclosed', "***", "(", "AND OR NOT", "\\", "\u3053\u3093", "%00", "a" * 5000, '"" *', "NEAR(a b)"]:
        api = web.get("/api/search", params={"q": junk})  # a query without a word: one line, 400
        assert api.status_code == 200 or (api.status_code == 400 and "one word" in api.json()["error"]), junk
        assert "\n" not in api.json().get("error", "")
        assert web.get("/search", params={"q": junk}).status_code == 200, junk


def test_a_snippet_holding_markup_and_marks_is_shown_as_text(web: TestClient, store: Store, corpus: Path) -> None:
    session = "0b6f4c1e-5a8d-4a55-9f11-000000000667"
    text = "zebrafish ⟦fake⟧ <script>alert('pwned')</script><b onclick=alert(2)>x</b> zebrafish"
    write(corpus / "-home-user-evil" / f"{session}.jsonl", [user(session, "evil2", text)])
    ingest(store, iter_transcripts([corpus]))
    res = web.get("/search", params={"q": "zebrafish"})
    tags = Tags(res.text)
    assert tags.handlers() == [] and [t for t, _ in tags.tags if t in ("script", "b")] == ["script"]  # the page's own
    marks = [i for i, (t, _) in enumerate(tags.tags) if t == "mark"]
    assert len(marks) == 2  # only the real matches are marked: the text's own ⟦⟧ show as []
    assert "[fake]" in tags.all_text() and "<script>alert('pwned')</script>" in tags.all_text()


def test_the_indexer_follows_the_log_and_stops(store: Store, corpus: Path, tmp_path: Path) -> None:
    ingest(store, iter_transcripts([corpus]))
    data = tmp_path / "data"
    indexer = Indexer(store, data, every_s=0.05).start()
    index = SearchIndex.open(store, data)
    try:
        wait_until(lambda: index.checkpoint() == store.last_seq(), "the indexer catching up", timeout=120)
        assert indexer.indexed == store.last_seq() and indexer.error is None
        session = "0b6f4c1e-5a8d-4a55-9f11-000000000668"
        write(corpus / "-home-user-new" / f"{session}.jsonl", [user(session, "n", "a quokka walked in")])
        ingest(store, iter_transcripts([corpus]))
        wait_until(lambda: index.checkpoint() == store.last_seq(), "the indexer following", timeout=60)
        # Nothing left to index: a search answers from what the indexer wrote.
        assert [h["conv"] for h in search(store, index, "quokka")["hits"]] == [session]
        assert indexer.stop(30) and not indexer.running
    finally:
        indexer.stop(30)
        index.close()


def test_usage_and_status_answer_like_the_cli(web: TestClient, store: Store) -> None:
    for by in ("conversation", "project", "model", "day"):
        got = web.get("/api/usage", params={"by": by}).json()
        want = usage_report(store, by)
        assert got["rows"] == want["rows"] and got["total"] == want["total"]
        assert any(row["cost_usd"] for row in got["rows"]), by  # the corpus' models are priced
    st = web.get("/api/status").json()
    assert st["redis"]["ok"] is True and st["redis"]["binary"] and st["events"] == store.stats()["events"]
    answer = web.get("/api/rejects").json()
    records, kept = store.rejections(50)
    assert answer == {"rejects": records, "rejected": store.stats()["rejected"], "kept": kept}  # agg rejects --json
    rejects = answer["rejects"]
    assert len(rejects) == store.stats()["rejected"] and {"file", "offset", "reason"} <= set(rejects[0])
    status_page = web.get("/status").text
    assert rejects[0]["file"] in Tags(status_page).all_text()


def test_bad_parameters_and_unknown_conversations(web: TestClient) -> None:
    assert web.get("/api/conversations/no-such-conversation").status_code == 404
    assert web.get("/conversations/no-such-conversation").status_code == 404
    assert web.get("/api/conversations/x", params={"before": "abc"}).status_code in (400, 404)
    for path, params in [
        ("/api/usage", {"by": "week-day"}),
        ("/api/search", {"q": "x", "role": "system"}),
        ("/api/conversations", {"since": "the day after"}),
        ("/api/search", {"q": "x", "until": "2026-13-45"}),
        ("/api/conversations", {"limit": "-1"}),
        ("/api/events", {"since": "ten"}),
    ]:
        res = web.get(path, params=params)
        assert res.status_code == 400 and "error" in res.json(), (path, params)


def test_openapi_describes_every_api_route_and_real_answers_match(web: TestClient, store: Store) -> None:
    spec = web.get("/api/openapi.json").json()
    validate(spec)
    inner = web.app.app  # behind the Guard
    routes = {r.path for r in inner.routes if isinstance(r, Route) and r.path.startswith("/api/")}
    assert routes == set(spec["paths"])
    conv = _biggest(store)

    def check(path: str, params: dict[str, Any], status: int = 200) -> None:
        res = web.get(path, params=params)
        assert res.status_code == status, (path, res.text[:200])
        op = spec["paths"][path.replace(conv, "{key}")]["get"]
        schema = op["responses"][str(status)]["content"]["application/json"]["schema"]
        jsonschema.validate(res.json(), {**schema, "components": spec["components"]})

    check("/api/conversations", {})
    check(f"/api/conversations/{conv}", {"all": "1"})
    check("/api/search", {"q": "the"})
    check("/api/search", {"q": "the", "role": "tool"})
    check("/api/search", {"q": "***"}, 400)
    for by in ("conversation", "project", "model", "day"):
        check("/api/usage", {"by": by})
    check("/api/status", {})
    check("/api/rejects", {})
    check("/api/usage", {"by": "nope"}, 400)
