"""The search index on a real redis-server and real SQLite files: exactly the messages an independent
reading of the corpus says hold a word, a phrase or a CJK substring; the same hits live, rebuilt and
built by racing processes; revisions replace what was indexed; a store that went back is noticed."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import redis

from aggregator.ingest import ingest
from aggregator.layout import iter_transcripts
from aggregator.search import search
from aggregator.searchindex import SearchIndex, store_identity
from aggregator.store import Store
from tests.support import oracle
from tests.support.records import session_file, uid, user, write

WORDS = ["tailwind", "Phoenix", "pomodoro"]
PHRASES = ["issue details", "session share", "next step"]
CJK = ["最新", "アップデート", "状態に"]
QUERIES = [*WORDS, *(f'"{p}"' for p in PHRASES), *CJK, "pomo*", "spotter bead", "redis_url", "設定 file"]
ALL = 10**9


def hits(store: Store, index: SearchIndex, query: str, **kw: Any) -> list[tuple[str, str, str]]:
    res = search(store, index, query, limit=ALL, **kw)
    assert res["total"] == len(res["hits"])
    return [(h["conv"], h["id"], h["role"]) for h in res["hits"]]


@pytest.fixture
def corpus_store(store: Store, corpus: Path) -> Store:
    ingest(store, list(iter_transcripts([corpus])))
    return store


def test_hits_are_exactly_the_messages_holding_the_words(corpus_store: Store, corpus: Path, tmp_path: Path) -> None:
    texts = oracle.message_texts(oracle.transcripts(corpus))
    index = SearchIndex.open(corpus_store, tmp_path / "data")
    for term, holds in [
        *((w, lambda text, w=w: w.casefold() in oracle.words(text)) for w in WORDS),
        *((f'"{p}"', lambda text, p=p: oracle.holds_phrase(text, p)) for p in PHRASES),
        *((c, lambda text, c=c: c in text) for c in CJK),
    ]:
        found = 0
        for role in ("user", "assistant"):
            want = {key for key, (r, text) in texts.items() if r == role and holds(text)}
            got = hits(corpus_store, index, term, role=role)
            assert len(got) == len(set(got))
            assert {(c, i) for c, i, _ in got} == want, (term, role)
            assert all(r == role for _, _, r in got)
            found += len(want)
        assert found >= 2, term  # the corpus really holds it
        # Every hit, whatever its role (tool calls and results too), shows the term in its snippet.
        first = oracle.words(term)[0]
        for hit in search(corpus_store, index, term, limit=ALL)["hits"]:
            marked = " ".join(m.split("⟧")[0] for m in hit["snippet"].split("⟦")[1:])
            assert first in oracle.words(marked), hit


def test_hits_are_ranked_and_filtered(corpus_store: Store, tmp_path: Path) -> None:
    index = SearchIndex.open(corpus_store, tmp_path / "data")
    res = search(corpus_store, index, "tailwind", limit=5)
    assert len(res["hits"]) == 5 and res["total"] > 5
    first = res["hits"][0]
    assert first["title"] and first["project_path"] and first["ts"] and first["seq"] > 0
    conv = first["conv"]
    inside = hits(corpus_store, index, "tailwind", conversation=conv[:8])
    assert inside and {c for c, _, _ in inside} == {conv}
    project = first["project_path"]
    assert {h["project_path"] for h in search(corpus_store, index, "tailwind", project=project, limit=ALL)["hits"]} == {
        project
    }
    assert search(corpus_store, index, "tailwind", project="no-such-project")["total"] == 0
    day = first["ts"][:10]
    from aggregator.dates import parse_when

    dated = search(
        corpus_store, index, "tailwind", since_ms=parse_when(day), until_ms=parse_when(day, end=True), limit=ALL
    )
    assert dated["hits"] and all(h["ts"][:10] == day for h in dated["hits"])
    # Claude Code's summary records are titles: found with --role title, not among the messages.
    titles = search(corpus_store, index, '"AI Music Generation"', role="title", limit=ALL)["hits"]
    assert titles and all(h["role"] == "title" for h in titles)
    assert not any(
        h["role"] == "title" for h in search(corpus_store, index, '"AI Music Generation"', role="user")["hits"]
    )


def test_the_rebuilt_index_gives_the_same_hits_as_the_one_kept_up(store: Store, corpus: Path, tmp_path: Path) -> None:
    sources = list(iter_transcripts([corpus]))
    live = SearchIndex.open(store, tmp_path / "live")
    for i in range(0, len(sources), 7):  # the live index catches up as files arrive
        ingest(store, sources[i : i + 7])
        live.catch_up(store)
    rebuilt = SearchIndex.open(store, tmp_path / "rebuilt")
    assert rebuilt.rebuild(store)["docs"] == live.size()["docs"] > 1000
    for q in QUERIES:
        assert hits(store, live, q) == hits(store, rebuilt, q), q


def test_processes_catching_up_at_once_build_the_same_index(corpus_store: Store, tmp_path: Path) -> None:
    path = SearchIndex.open(corpus_store, tmp_path / "shared").path
    errors: list[BaseException] = []

    def build() -> None:
        try:
            idx = SearchIndex(path, store_identity(corpus_store))
            idx.catch_up(corpus_store)
            idx.close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    shared = SearchIndex(path, store_identity(corpus_store))
    alone = SearchIndex.open(corpus_store, tmp_path / "alone")
    alone.catch_up(corpus_store)
    assert shared.size()["docs"] == alone.size()["docs"]
    for q in QUERIES:
        assert hits(corpus_store, shared, q) == hits(corpus_store, alone, q), q


def test_a_revision_replaces_what_was_indexed(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "claude"
    s = uid("revised")
    f = write(session_file(root, s), [user(s, "u1", "the alpha version")])
    ingest(store, list(iter_transcripts([root])))
    index = SearchIndex.open(store, tmp_path / "data")
    assert hits(store, index, "alpha") == [(s, uid("u1"), "user")]
    write(f, [user(s, "u1", "the beta version")], append=True)  # same uuid, other bytes: a revision
    ingest(store, list(iter_transcripts([root])))
    assert store.stats()["revisions"] == 1
    assert hits(store, index, "alpha") == []
    assert hits(store, index, "beta") == [(s, uid("u1"), "user")]
    assert index.size()["orphans"] == 1
    rebuilt = index.rebuild(store)
    assert rebuilt["orphans"] == 0 and rebuilt["docs"] == 1
    assert hits(store, index, "beta") == [(s, uid("u1"), "user")] and hits(store, index, "alpha") == []


def test_a_store_that_went_back_is_indexed_again(store: Store, r: redis.Redis, tmp_path: Path) -> None:
    root_a, root_b = tmp_path / "a", tmp_path / "b"
    s, t = uid("a"), uid("b")
    write(session_file(root_a, s), [user(s, "ua", "only in the first history: xylophone")])
    write(session_file(root_b, t), [user(t, "ub", "only in the second history: zeppelin")])
    ingest(store, list(iter_transcripts([root_a])))
    index = SearchIndex.open(store, tmp_path / "data")
    assert hits(store, index, "xylophone")
    sid = store_identity(store)
    # The store is replaced by another history under the same id (a restore of another backup).
    r.flushall()
    r.set(store.keys.store_id, sid)
    ingest(store, list(iter_transcripts([root_b])))
    assert SearchIndex.open(store, tmp_path / "data").path == index.path
    assert hits(store, index, "xylophone") == []
    assert hits(store, index, "zeppelin") == [(t, uid("ub"), "user")]


def test_each_store_has_its_own_index_file(store: Store, r: redis.Redis, tmp_path: Path) -> None:
    first = SearchIndex.open(store, tmp_path / "data").path
    assert first.name.startswith("search-agg-") and first.stat().st_mode & 0o777 == 0o600
    assert first.parent.stat().st_mode & 0o777 == 0o700
    r.flushall()  # a new store: a new id, a new file
    assert SearchIndex.open(store, tmp_path / "data").path != first


def test_events_stored_again_under_later_seqs_are_not_doubled(
    store: Store, r: redis.Redis, corpus: Path, tmp_path: Path
) -> None:
    """A store restored from a copy and read again (its seq raised past what readers saw, as
    aggregator.seqfloor does) holds the same events under later seqs: each is indexed once."""
    sources = list(iter_transcripts([corpus]))
    ingest(store, sources)
    index = SearchIndex.open(store, tmp_path / "data")
    before = {q: hits(store, index, q) for q in QUERIES}
    sid, last = store_identity(store), store.last_seq()
    r.flushall()
    r.set(store.keys.store_id, sid)
    r.set(store.keys.seq, last)  # the floor: new entries get seqs above every one seen
    ingest(store, sources)
    assert store.last_seq() == 2 * last
    for q in QUERIES:
        assert sorted(hits(store, index, q)) == sorted(before[q]), q
    assert index.size()["docs"] == SearchIndex.open(store, tmp_path / "fresh").rebuild(store)["docs"]


def test_a_damaged_index_file_is_built_again(corpus_store: Store, tmp_path: Path) -> None:
    index = SearchIndex.open(corpus_store, tmp_path / "data")
    want = hits(corpus_store, index, "tailwind")
    index.close()
    index.path.write_bytes(b"not a database at all" * 1000)
    again = SearchIndex.open(corpus_store, tmp_path / "data")
    assert hits(corpus_store, again, "tailwind") == want
    assert (again.path.parent / (again.path.name + ".damaged")).exists()
