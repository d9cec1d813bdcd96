"""Finding transcripts: the three subagent layouts, odd names, FIFOs, symlink loops."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aggregator.errors import ConfigError
from aggregator.layout import classify, iter_transcripts


def touch(path: Path, data: bytes = b'{"uuid":"x"}\n') -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_classify_the_layouts(tmp_path: Path) -> None:
    root = tmp_path / "projects" / "-home-me-proj"
    main = classify(str(root / "s1.jsonl"))
    legacy = classify(str(root / "agent-a1b2c3d.jsonl"))
    sub = classify(str(root / "s1" / "subagents" / "agent-ad1.jsonl"))
    wf = classify(str(root / "s1" / "subagents" / "workflows" / "wf_1" / "agent-aw.jsonl"))
    assert main and (main.kind, main.session, main.agent, main.project) == ("main", "s1", None, "-home-me-proj")
    assert legacy and (legacy.kind, legacy.session, legacy.agent) == ("legacy-agent", None, "a1b2c3d")
    assert sub and (sub.kind, sub.session, sub.agent, sub.project) == ("subagent", "s1", "ad1", "-home-me-proj")
    assert wf and (wf.session, wf.agent, wf.project) == ("s1", "aw", "-home-me-proj")
    assert classify(str(root / "s1" / "subagents" / "workflows" / "wf_1" / "journal.jsonl")) is None
    assert classify(str(root / "s1" / "subagents" / "agent-ad1.meta.json")) is None
    assert classify(str(root / "sessions-index.json")) is None


def test_walk_finds_transcripts_and_skips_everything_else(tmp_path: Path) -> None:
    claude = tmp_path / "claude"
    proj = claude / "projects" / "p"
    want = {
        touch(proj / "s1.jsonl"),
        touch(proj / "agent-old.jsonl"),
        touch(proj / "s1" / "subagents" / "agent-a.jsonl"),
        touch(proj / "s2" / "subagents" / "agent-orphan.jsonl"),
    }
    touch(proj / "s1" / "subagents" / "agent-a.meta.json", b"{}")
    touch(proj / "s1" / "tool-results" / "x.jsonl")
    touch(proj / "memory" / "m.jsonl")
    touch(proj / "sessions-index.json", b"{}")
    touch(claude / "history.jsonl")  # not under projects/
    os.mkfifo(proj / "fifo.jsonl")
    os.symlink(proj, proj / "loop")  # a directory symlink loop
    found = {Path(sf.path) for sf in iter_transcripts([claude])}
    assert found == want


def test_non_utf8_file_names(tmp_path: Path) -> None:
    proj = tmp_path / "projects" / "p"
    proj.mkdir(parents=True)
    bad = os.fsdecode(b"s\xff\xfe.jsonl")
    (proj / bad).write_bytes(b'{"type":"user"}\n')
    [sf] = list(iter_transcripts([tmp_path]))
    assert sf.session == "s\\xff\\xfe"
    assert "\\xff" in sf.display


def test_missing_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        list(iter_transcripts([tmp_path / "nope"]))


def test_a_file_path_is_taken_as_a_main_transcript(tmp_path: Path) -> None:
    f = touch(tmp_path / "odd-name.jsonl")
    [sf] = list(iter_transcripts([f]))
    assert (sf.session, sf.kind) == ("odd-name", "main")
