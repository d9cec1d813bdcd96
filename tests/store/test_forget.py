"""``agg forget`` on a real Redis (docs/design.md §9): a forgotten conversation leaves the store as if
it had never been read — counts, usage, projections, the log, the search index — and its tombstone
keeps it out when its files are read again, on this machine or another one, or the log replayed."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
import redis

from aggregator import scripts
from aggregator.compaction import Compactor, unpack_segment
from aggregator.errors import NotFound
from aggregator.forget import forget, project_conversations
from aggregator.ingest import IngestReport, ingest
from aggregator.keys import Keys
from aggregator.layout import SourceFile, iter_transcripts
from aggregator.projections import RECENT_KEEP, Projector
from aggregator.searchindex import SearchIndex
from aggregator.store import Store
from aggregator.tailer import Tailer
from aggregator.usage import report
from devtools.agg import HOST
from tests.support.records import PROJECT, assistant, session_file, tokens, ts, uid, user, write
from tests.support.scriptkeys import watch_scripts
from tests.support.store import rebuild_reproduces_live, usage_by_conversation

COUNTS = ("events", "revisions", "duplicates", "conversations", "lines")


def _by_conv(corpus: Path) -> dict[str, list[SourceFile]]:
    out: dict[str, list[SourceFile]] = defaultdict(list)
    for sf in iter_transcripts([corpus]):
        out[sf.session or ""].append(sf)
    return out


def _most_recent(r: redis.Redis, corpus: Path) -> str:
    """The conversation with the most messages among the recent ones (read in a scratch namespace)."""
    probe = Store(r, Keys("probe"), HOST)
    ingest(probe, iter_transcripts([corpus]))
    held: dict[str, int] = defaultdict(int)
    for m in probe.recent_messages():
        held[m.conv] += 1
    return max(held, key=lambda c: (held[c], c))


def _split(r: redis.Redis, corpus: Path) -> tuple[str, list[SourceFile], list[SourceFile]]:
    """The conversation to forget (:func:`_most_recent`), its files, and every other file."""
    files = _by_conv(corpus)
    conv = _most_recent(r, corpus)
    return conv, files[conv], [sf for c, fs in files.items() if c != conv for sf in fs]


def _with_and_without(r: redis.Redis, mine: list[SourceFile], others: list[SourceFile]) -> tuple[Store, Store]:
    """A store that read the others' files then ``mine`` (namespace agg: the others' seqs are those
    of a store without it), and one that never read ``mine`` (namespace ref)."""
    store, without = Store(r, Keys("agg"), HOST), Store(r, Keys("ref"), HOST)
    ingest(store, others)
    ingest(store, mine)
    ingest(without, others)
    return store, without


def _figures(store: Store) -> dict[str, object]:
    st = store.stats()
    return {
        "counts": {k: st[k] for k in COUNTS},
        "usage": report(store, "model")["total"],
        "conversations": sorted(store.conversations()),
        "projections": _projections(store),
    }


def _projections(store: Store) -> dict[str, object]:
    """Every projection key's content, named without the namespace (the digest hashes key names)."""
    p = Projector(store)
    r = store.r
    ns = len(store.keys.ns) + 1
    out: dict[str, object] = {}
    for conv, fields in p.conversation_projections(store.conversations()):
        out[store.keys.proj(conv)[ns:]] = fields
    for key in p.global_keys():
        kind = r.type(key)
        if kind == b"hash":
            out[key[ns:]] = r.hgetall(key)
        elif kind == b"zset":
            out[key[ns:]] = r.zrange(key, 0, -1, withscores=True)
        elif kind == b"set":
            out[key[ns:]] = r.smembers(key)
    return out


def _log_text(r: redis.Redis, ns: str) -> bytes:
    """Everything the log holds (the stream, the batches a forget patched, the segments compaction
    archived), as one blob."""
    out = [b"".join(v for _, f in r.xrange(f"{ns}:log") for v in f.values())]
    for key in r.scan_iter(f"{ns}:log:patch:*"):
        out.append(b"".join(r.hgetall(key).values()))
    for blob in r.hvals(f"{ns}:log:archive"):
        out.append(b"".join(v for _, f in unpack_segment(blob) for v in f.values()))
    return b"".join(out)


def test_forget_leaves_the_store_a_store_that_never_had_it(r: redis.Redis, corpus: Path) -> None:
    """Forget the conversation with the most recent messages (read last, so the others' seqs are those
    of a store without it): counts, usage and every projection equal the store that never read it,
    and stay equal after a rebuild and after its files are read again by this host and another one."""
    conv, mine, others = _split(r, corpus)
    store, without = _with_and_without(r, mine, others)
    assert len(store.recent_messages()) == RECENT_KEEP  # full: the forget must bring back what it pushed out
    assert any(m.conv == conv for m in store.recent_messages())
    usage_before = report(store, "model")["total"]

    res = forget(store, [conv])

    assert [c["conv"] for c in res["conversations"]] == [conv] and res["events"] > 0
    assert res["usage"]["output"] > 0
    assert usage_before["output"] - res["usage"]["output"] == report(store, "model")["total"]["output"]
    assert _figures(store) == _figures(without)
    assert [k for k in r.scan_iter("agg:*") if conv.encode() in k] == [f"agg:{{c:{conv}}}:forgot".encode()]
    marker = f'"conv":"{conv}","conv_seq":'.encode()
    log = _log_text(r, "agg")
    assert log.count(marker) == 1 and marker + b'0,"id":"forget:' in log  # only its agg-forget entry
    rebuild_reproduces_live(store)
    assert _figures(store) == _figures(without)

    again = ingest(store, iter_transcripts([corpus]))  # this host: every cursor is at the end
    assert (again.lines, again.forgotten) == (0, 0)
    lines_of_conv = sum(1 for sf in mine for ln in Path(sf.path).read_bytes().splitlines() if ln.strip())
    other_host, other_ref = Store(r, Keys("agg"), "other-host"), Store(r, Keys("ref"), "other-host")
    seen = ingest(other_host, iter_transcripts([corpus]))
    ingest(other_ref, others)
    assert seen.events_added == 0 and 0 < seen.forgotten <= lines_of_conv
    assert store.stats()["forgotten"] == seen.forgotten
    # lines counts every line read, those dropped by the tombstone too
    assert store.stats()["lines"] == without.stats()["lines"] + seen.forgotten
    r.hincrby("agg:stats", "lines", -seen.forgotten)
    assert _figures(store) == _figures(without)
    rebuild_reproduces_live(store)
    assert _figures(store) == _figures(without)


def test_lines_written_after_the_forget_come_back_older_ones_never(r: redis.Redis, tmp_path: Path) -> None:
    claude = tmp_path / "claude" / "projects"
    path = write(
        session_file(claude, "s1"),
        [
            user("s1", "u1", "the old secret", at="2026-03-01T10:00:00.000Z"),
            assistant("s1", "a1", "m1", "r1", tokens(10, 20), at="2026-03-01T10:00:01.000Z"),
        ],
    )
    store = Store(r, Keys("agg"), HOST)
    ingest(store, iter_transcripts([claude]))
    res = forget(store, ["s1"])
    assert store.conversations() == [] and store.forgotten_at("s1") == res["conversations"][0]["forgotten_at"]
    with pytest.raises(NotFound):
        store.resolve_conversation("s1")
    soon = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + 3600))
    write(path, [user("s1", "old-late", "an old line appended", at="2026-03-01T10:00:02.000Z")], append=True)
    write(path, [user("s1", "u2", "a new question", at=soon)], append=True)
    rep = ingest(store, iter_transcripts([claude]))
    assert (rep.events_added, rep.forgotten) == (1, 1)
    assert [raw for _, raw in store.replay("s1")] == [Path(path).read_bytes().splitlines()[-1]]
    view = store.projection("s1")
    assert view[b"events"] == b"1" and b"usage_output" not in view
    assert store.stats()["conversations"] == 1
    # another machine reading the whole file: only the line after the forget is there
    rep2 = ingest(Store(r, Keys("agg"), "other-host"), iter_transcripts([claude]))
    assert (rep2.events_added, rep2.duplicates, rep2.forgotten) == (0, 1, 3)
    rebuild_reproduces_live(store)
    assert [eid for eid, _ in store.replay("s1")] == [uid("u2")]


def test_a_batch_shared_with_another_conversation_keeps_the_others_entries(r: redis.Redis, tmp_path: Path) -> None:
    """A file holding lines of two sessions: forgetting one rewrites the log batch they share —
    the other's entries keep their seqs and bytes, the forgotten one's content is gone."""
    claude = tmp_path / "claude" / "projects"
    recs = [
        user("keep", "k1", "keep this"),
        user("gone", "g1", "forget the zebra", at="2026-03-01T10:00:05.000Z"),
        assistant("keep", "k2", "mk", "rk", tokens(1, 2), parent=None),
        assistant("gone", "g2", "mg", "rg", tokens(3, 4), at="2026-03-01T10:00:06.000Z"),
    ]
    write(session_file(claude, "keep"), recs)
    store = Store(r, Keys("agg"), HOST)
    ingest(store, iter_transcripts([claude]))
    before = [(e.seq, e.envelope, e.digest) for e in store.entries_after(0) if e.env()["conv"] == "keep"]
    res = forget(store, ["gone"])
    assert res["events"] == 2 and res["usage"]["output"] == 4
    after = [(e.seq, e.envelope, e.digest) for e in store.entries_after(0) if not e.is_forget]
    assert after == before
    assert [e.env()["conv"] for e in store.entries_after(0) if e.is_forget] == ["gone"]
    assert b"zebra" not in _log_text(r, "agg") and b'"gone"' not in _log_text(r, "agg").replace(
        b'"conv":"gone","conv_seq":0,"id":"forget:', b""
    )
    assert [len(b) for b in store.batches_at([before[0][0]])] == [2]
    assert [e.env()["id"] for e in store.conversation_entries("keep", 0)] == [uid("k1"), uid("k2")]
    assert report(store, "model")["total"]["output"] == 2
    rebuild_reproduces_live(store)
    forget(store, ["keep"])  # the batch held nothing else: it goes, with its patch
    assert r.zcard("agg:log:patched") == 0 and list(r.scan_iter("agg:log:patch:*")) == []
    assert [e.env()["type"] for e in store.entries_after(0)] == ["agg-forget", "agg-forget"]
    rebuild_reproduces_live(store)


def test_search_indexes_drop_the_conversation(r: redis.Redis, tmp_path: Path) -> None:
    """This machine's index (``agg forget`` takes the texts' words out of it, read while the store
    still has them) and another machine's (which applies the forget entry from the log: rows gone,
    words left unmatchable) both lose its hits, and keep the others'."""
    claude = tmp_path / "claude" / "projects"
    write(session_file(claude, "z1"), [user("z1", "u1", "the aardvark sleeps"), user("z1", "u1b", "common word")])
    write(session_file(claude, "s2"), [user("s2", "u2", "common word", at="2026-03-01T10:05:00.000Z")])
    store = Store(r, Keys("agg"), HOST)
    ingest(store, iter_transcripts([claude]))
    here, there = SearchIndex.open(store, tmp_path / "here"), SearchIndex.open(store, tmp_path / "there")
    for index in (here, there):
        index.catch_up(store)
        assert index.query('"aardvark"')[0] == 1 and index.query('"common"')[0] == 2
    texts = here.indexed_texts(store, "z1")
    assert sorted(text for _, _, text in texts) == ["common word", "the aardvark sleeps"]
    assert here.purge(texts) == 2  # as agg forget does it: before the forget
    forget(store, ["z1"])  # read last: the last event both indexes hold
    words = "SELECT count(*) FROM fts WHERE fts MATCH 'aardvark'"
    for index, words_left, orphans in ((here, 0, 0), (there, 1, 2)):
        assert index.catch_up(store) == 1  # the forget entry alone: the index was not built again
        assert index.query('"aardvark"')[0] == 0
        total, rows = index.query('"common"')
        assert total == 1 and [row.conv for row in rows] == ["s2"]
        assert index.db.execute(words).fetchone()[0] == words_left and index.size()["orphans"] == orphans
        index.db.execute("INSERT INTO fts(fts) VALUES('integrity-check')")  # its structure is sound
        assert index.in_step(store)  # the forget entry is the last one indexed: no rebuild next time
        assert index.catch_up(store) == 0
        index.close()


def test_forget_by_project_and_what_does_not_exist(r: redis.Redis, tmp_path: Path) -> None:
    claude = tmp_path / "claude" / "projects"
    write(session_file(claude, "a1", "-home-user-alpha"), [user("a1", "x1", "one")])
    write(session_file(claude, "a2", "-home-user-alpha"), [user("a2", "x2", "two")])
    write(session_file(claude, "b1", "-home-user-beta"), [user("b1", "x3", "three")])
    store = Store(r, Keys("agg"), HOST)
    ingest(store, iter_transcripts([claude]))
    assert project_conversations(store, "alpha") == ["a1", "a2"]
    forget(store, project_conversations(store, "alpha"))
    assert store.conversations() == ["b1"] and store.projects() == ["-home-user-beta"]
    with pytest.raises(NotFound):
        forget(store, ["a1"])
    assert IngestReport().forgotten == 0
    rebuild_reproduces_live(store)


def test_a_forget_racing_a_tailer_lets_no_line_slip_in(r: redis.Redis, tmp_path: Path) -> None:
    """A tailer keeps appending and committing lines of the conversation (dated before any forget)
    while it is forgotten: each line is either committed before the forget and removed by it, or
    dropped by the tombstone after it — none stays, none is counted twice."""
    claude = tmp_path / "claude" / "projects"
    path = session_file(claude, "s1")
    write(path, [user("s1", "first", "hello")])
    store = Store(r, Keys("agg"), HOST)
    ingest(store, iter_transcripts([claude]))
    (sf,) = list(iter_transcripts([claude]))
    written = 1
    stop = threading.Event()
    tailer = Tailer(Store(r, Keys("agg"), HOST))

    def keep_writing() -> None:
        nonlocal written
        while not stop.is_set() or written < 400:
            write(path, [user("s1", f"line{written}", "more", at=ts(1))], append=True)
            written += 1
            if written % 20 == 0:
                tailer.sync(sf)
        tailer.sync(sf)

    thread = threading.Thread(target=keep_writing)
    thread.start()
    while written < 100:
        time.sleep(0.01)
    res = forget(store, ["s1"])
    stop.set()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert store.conversations() == [] and list(store.replay("s1")) == []
    assert res["events"] > 1 and store.stats()["forgotten"] > 0  # lines on both sides of the forget
    assert res["events"] + store.stats()["forgotten"] == written
    assert store.stats()["events"] == 0 and store.stats()["lines"] == store.stats()["forgotten"]
    rebuild_reproduces_live(store)


def test_links_to_the_forgotten_conversation_go(r: redis.Redis, tmp_path: Path) -> None:
    """A conversation resumed from the forgotten one loses its ``resumed_from`` link (its reference
    stays pending, as in a store that never read the forgotten one)."""
    claude = tmp_path / "claude" / "projects"
    write(session_file(claude, "later"), [user("later", "j1", "go on", parent=uid("k2"), at=ts(5))])
    write(
        session_file(claude, "first"), [user("first", "k1", "start"), assistant("first", "k2", "m", "q", tokens(1, 1))]
    )
    later_file, first_file = (list(iter_transcripts([claude / PROJECT / f"{s}.jsonl"])) for s in ("later", "first"))
    store, without = Store(r, Keys("agg"), HOST), Store(r, Keys("ref"), HOST)
    ingest(store, later_file)
    ingest(store, first_file)
    ingest(without, later_file)
    assert b"from.resumed.first" in store.projection("later")
    forget(store, ["first"])
    assert b"from.resumed.first" not in store.projection("later")
    assert _figures(store) == _figures(without)
    rebuild_reproduces_live(store)


def test_a_response_copied_into_a_fork_goes_to_the_fork(r: redis.Redis, tmp_path: Path) -> None:
    """A fork holds copies of the original's responses (same message and request ids): they were
    counted once, toward the original. Forgetting the original hands them to the fork, with the
    copies' own counts — the usage of a store that only ever read the fork."""
    claude = tmp_path / "claude" / "projects"
    write(
        session_file(claude, "orig"),
        [user("orig", "o1", "start"), assistant("orig", "o2", "m1", "r1", tokens(100, 50, 1000, 10))],
    )
    write(
        session_file(claude, "fork"),
        [
            user("fork", "f1", "start", at=ts(3)),
            assistant("fork", "f2", "m1", "r1", tokens(100, 60, 1000, 10), at=ts(3, 30)),  # the copy, final usage
            assistant("fork", "f3", "m2", "r2", tokens(5, 5), at=ts(4)),
        ],
    )
    orig, fork = (list(iter_transcripts([claude / PROJECT / f"{s}.jsonl"])) for s in ("orig", "fork"))
    store, without = Store(r, Keys("agg"), HOST), Store(r, Keys("ref"), HOST)
    ingest(store, orig)
    ingest(store, fork)
    ingest(without, fork)
    assert report(store, "conversation")["total"]["responses"] == 2  # m1 once, toward orig
    res = forget(store, ["orig"])
    assert res["usage"]["output"] == 60 and res["usage"]["responses"] == 1  # what orig held
    mine_report, their_report = report(store, "conversation"), report(without, "conversation")
    assert mine_report["rows"] == their_report["rows"] and mine_report["total"] == their_report["total"]
    mine, theirs = _projections(store), _projections(without)
    usage_keys = [key for key in theirs if "usage" in key]
    assert len(usage_keys) >= 5 and {k: mine[k] for k in usage_keys} == {k: theirs[k] for k in usage_keys}
    assert usage_by_conversation(store) == usage_by_conversation(without)
    rebuild_reproduces_live(store)


def test_a_summary_title_from_the_forgotten_conversation_goes(r: redis.Redis, tmp_path: Path) -> None:
    """A session's file opens with a summary of the previous session (its leafUuid is there): that
    summary titles the previous one. Forgetting the later session takes its summary off the
    earlier one's title, which falls back to what a store without it shows."""
    claude = tmp_path / "claude" / "projects"
    write(
        session_file(claude, "before"),
        [user("before", "b1", "plan the trip"), assistant("before", "b2", "m", "q", None)],
    )
    write(
        session_file(claude, "after"),
        [
            {"type": "summary", "summary": "Trip planning", "leafUuid": uid("b2")},
            user("after", "a1", "and now the budget", at=ts(9)),
        ],
    )
    before, after = (list(iter_transcripts([claude / PROJECT / f"{s}.jsonl"])) for s in ("before", "after"))
    store, without = Store(r, Keys("agg"), HOST), Store(r, Keys("ref"), HOST)
    ingest(store, before)
    ingest(store, after)
    ingest(without, before)
    assert store.projection("before")[b"title"] == b"Trip planning"
    forget(store, ["after"])
    assert store.projection("before")[b"title"] == b"plan the trip"
    assert _figures(store) == _figures(without)
    rebuild_reproduces_live(store)


def test_a_sealed_conversation_is_forgotten_with_its_chunks(r: redis.Redis, tmp_path: Path) -> None:
    """Bodies sealed into compressed chunks (agg compact) go with the rest; the index's texts are
    read back from the chunks."""
    claude = tmp_path / "claude" / "projects"
    write(
        session_file(claude, "k"),
        [user("k", "k1", "the sealed pangolin"), assistant("k", "k2", "m", "q", tokens(1, 2))],
    )
    write(session_file(claude, "o"), [user("o", "o1", "another one", at=ts(7))])
    store = Store(r, Keys("agg"), HOST)
    ingest(store, iter_transcripts([claude]))
    assert Compactor(store).run(0).conversations == 2 and r.hlen(store.keys.body("k")) == 0
    index = SearchIndex.open(store, tmp_path / "data")
    index.catch_up(store)
    texts = index.indexed_texts(store, "k")
    assert any("pangolin" in text for _, _, text in texts) and index.purge(texts) == len(texts)
    forget(store, ["k"])
    assert [key for key in r.scan_iter("agg:{c:k}:*")] == [b"agg:{c:k}:forgot"]
    assert (
        index.catch_up(store) == 1
        and index.db.execute("SELECT count(*) FROM fts WHERE fts MATCH 'pangolin'").fetchone()[0] == 0
    )
    index.close()
    assert [raw for _, raw in store.replay("o")] == Path(session_file(claude, "o")).read_bytes().splitlines()
    rebuild_reproduces_live(store)


def test_an_archived_conversation_is_forgotten_from_its_segments(r: redis.Redis, corpus: Path) -> None:
    """Compaction moved the log into archived segments (and sealed every body): the forget scrubs
    the segments as FORGET scrubs the stream, and the store still equals one that never read it."""
    conv, mine, others = _split(r, corpus)
    store, without = _with_and_without(r, mine, others)
    Projector(store).catch_up()
    report_ = Compactor(store, segment_batches=7).run(0, keep_log=0)
    assert report_.log_batches > 10 and r.xlen("agg:log") == 0
    marker = f'"conv":"{conv}","conv_seq":'.encode()
    assert marker in _log_text(r, "agg")

    forget(store, [conv])

    log = _log_text(r, "agg")
    assert log.count(marker) == 1 and marker + b'0,"id":"forget:' in log  # only its agg-forget entry
    assert _figures(store) == _figures(without)
    rebuild_reproduces_live(store)
    assert _figures(store) == _figures(without)


def test_nothing_is_archived_while_a_forget_or_rebuild_holds_the_lock(r: redis.Redis, tmp_path: Path) -> None:
    """agg forget scrubs the archive, then runs FORGET: a segment archived in between from the
    stream would keep the forgotten entries; and a copy of the stream read before a forget is
    refused after it (a batch it deleted or patched is no longer there)."""
    claude = tmp_path / "claude" / "projects"
    write(session_file(claude, "a"), [user("a", f"a{i}", f"line {i}") for i in range(3)])
    write(session_file(claude, "b"), [user("b", f"b{i}", f"line {i}") for i in range(3)])
    store = Store(r, Keys("agg"), HOST)
    ingest(store, iter_transcripts([claude]))
    Projector(store).catch_up()
    compactor = Compactor(store)
    r.set("agg:proj:lock", "someone")
    assert compactor.run(0, keep_log=0).log_batches == 0 and r.xlen("agg:log") == 2
    r.delete("agg:proj:lock")
    stale = r.xrange("agg:log")  # read before the forget, archived after it
    forget(store, ["a"])
    archive = r.register_script(scripts.LOG_ARCHIVE)
    call = scripts.log_archive_call(
        log="agg:log",
        archive="agg:log:archive",
        segments="agg:log:segments",
        proj_lock="agg:proj:lock",
        segment=b"stale copy",
        firsts=[int(i.split(b"-")[0]) for i, _ in stale],
    )
    assert archive(keys=call.keys, args=call.args) == 0 and not r.exists("agg:log:archive")
    assert compactor.run(0, keep_log=0).log_batches == 2  # b's batch and the agg-forget entry
    assert [e.env()["conv"] for e in store.entries_after(0)] == ["b"] * 3 + ["a"]


def _shared_batch(claude: Path) -> None:
    """A file holding lines of two sessions, keep and gone (one log batch for both)."""
    recs = [
        user("keep", "k1", "keep this"),
        user("gone", "g1", "forget the zebra", at="2026-03-01T10:00:05.000Z"),
        assistant("keep", "k2", "mk", "rk", tokens(1, 2), parent=None),
        assistant("gone", "g2", "mg", "rg", tokens(3, 4), at="2026-03-01T10:00:06.000Z"),
    ]
    write(session_file(claude, "keep"), recs)


def test_every_script_touches_only_the_keys_it_is_given(r: redis.Redis, corpus: Path, tmp_path: Path) -> None:
    """On a Redis Cluster a script may only touch the keys it is given (KEYS): ingest, the
    projector, sealing, archiving, a forget scrubbing the archive and patching a shared batch, a
    rebuild — no script spells a key name of its own (aggregator.keys spells them all)."""
    store = Store(r, Keys("agg"), HOST)
    claude = tmp_path / "shared" / "projects"
    _shared_batch(claude)
    with watch_scripts(r) as seen:
        ingest(store, iter_transcripts([corpus, claude]))
        Projector(store).catch_up()
        done = Compactor(store, segment_batches=3).run(0, keep_log=1)
        forget(store, [store.conversations()[0], "gone"])
        forget(store, ["keep"])  # the patched batch held nothing else: it goes
        Projector(store).rebuild()
    assert done.log_segments > 2 and r.zcard("agg:log:patched") == 0
    scripts_run = {len(declared) for declared, _ in seen.calls}
    assert len(seen.calls) > 50 and len(scripts_run) > 4
    assert seen.undeclared() == set()


def test_a_forget_whose_timeline_grew_meanwhile_reads_it_again(r: redis.Redis, tmp_path: Path) -> None:
    """FORGET is given the patch keys of the timeline its caller read: a commit adding a batch to
    the conversation in between makes it refuse, writing nothing, and the forget reads it again."""
    claude = tmp_path / "claude" / "projects"
    _shared_batch(claude)
    store = Store(r, Keys("agg"), HOST)
    ingest(store, iter_transcripts([claude]))
    script = store._forget
    replies: list[bytes] = []

    def late_commit(**kwargs: object) -> object:
        if not replies:
            path = write(session_file(claude, "gone"), [user("gone", "g3", "the late zebra", at=ts(9))])
            ingest(store, [sf for sf in iter_transcripts([claude]) if sf.path == str(path)])
        res = script(**kwargs)
        replies.append(res[0])
        return res

    store._forget = late_commit  # type: ignore[method-assign]
    res = forget(store, ["gone"])
    assert replies == [b"moved", b"ok"] and res["events"] == 3
    assert b"zebra" not in _log_text(r, "agg") and store.conversations() == ["keep"]
    rebuild_reproduces_live(store)
