"""The current.json writer in process: what it reads to keep its message previews current."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import orjson
import pytest

from aggregator.ingest import ingest
from aggregator.layout import iter_transcripts
from aggregator.live.writer import SnapshotWriter
from aggregator.projections import Projector
from aggregator.store import Store
from tests.support.live import append, line, record


def _previews(out: Path) -> dict[str, str]:
    doc = orjson.loads(out.read_bytes())
    return {m["id"]: m["preview"] for m in doc["messages"] if not m.get("separator")}


def test_a_revision_renews_its_preview_without_reading_the_log(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message revised after a write gets its new preview, and the writer reads no log entry to
    learn it: another process projected the revision, so the writer's projector has nothing to
    read either; which version is newest comes from the store's index of versions."""
    src = tmp_path / "claude" / "projects" / "p" / "a.jsonl"
    append(src, line(record("a", 0)) + line(record("a", 1, kind="assistant", text="first answer")))
    ingest(store, iter_transcripts([src]))
    out = tmp_path / "current.json"
    w = SnapshotWriter(store, out)
    assert w.write_if_changed() is not None
    assert _previews(out)["a-1"] == "first answer"

    append(src, line(record("a", 1, kind="assistant", text="the revised answer")))  # same uuid: a revision
    assert ingest(store, iter_transcripts([src])).revisions == 1
    Projector(store).catch_up()  # another projector (agg serve, another writer) applied it

    def no_log_read(*_: Any, **__: Any) -> NoReturn:
        raise AssertionError("the writer read the log")

    for name in ("entries_after", "log_batches", "conversation_entries", "batches_at"):
        monkeypatch.setattr(store, name, no_log_read)
    notice = w.write_if_changed()
    assert notice is not None and notice["seq"] == store.last_seq() == 3
    assert _previews(out) == {"a-0": "line 0 of a", "a-1": "the revised answer"}


def test_an_unchanged_message_keeps_its_preview_and_a_new_one_is_added(store: Store, tmp_path: Path) -> None:
    """Previews of messages not revised are reused (their bodies are not fetched again)."""
    src = tmp_path / "claude" / "projects" / "p" / "a.jsonl"
    append(src, line(record("a", 0)))
    ingest(store, iter_transcripts([src]))
    out = tmp_path / "current.json"
    w = SnapshotWriter(store, out)
    w.write_if_changed()
    kept = next(iter(w.previews.values()))
    append(src, line(record("a", 1, kind="assistant")))
    ingest(store, iter_transcripts([src]))
    w.write_if_changed()
    assert any(m is kept for m in w.messages)  # the same object: built once
    assert _previews(out) == {"a-0": "line 0 of a", "a-1": "line 1 of a"}
