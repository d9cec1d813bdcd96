"""devtools/gen_corpus.py: the size profile, consistent renaming, layouts, determinism; and a
smoke run of scripts/bench_ingest.py (which prints figures; nothing here asserts a speed)."""

from __future__ import annotations

import json
import math
import re
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from aggregator.ingest import ingest
from aggregator.layout import iter_transcripts
from aggregator.store import Store
from devtools import gen_corpus as g
from devtools.agg import REPO
from tests.support import CORPUS, oracle

IDS = re.compile(
    rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    rb"|(?:msg|req|toolu)_[A-Za-z0-9]{20,}|(?<![0-9A-Za-z])a(?:compact-)?[0-9a-f]{6}(?![0-9A-Za-z])"
)

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"corpus not found at {CORPUS}")


def _generate(out: Path, *args: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-m", "devtools.gen_corpus", str(out), "--json", "--source", str(CORPUS), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    report: dict[str, object] = json.loads(proc.stdout)
    return report


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_heavy_user_profile_matches_the_published_figures() -> None:
    sizes = g.heavy_sizes(g.HEAVY_FILES)
    assert len(sizes) == 3100
    assert statistics.median(sizes) == pytest.approx(105_000, rel=0.01)
    assert sizes[math.ceil(0.99 * len(sizes)) - 1] == pytest.approx(5_400_000, rel=0.03)
    assert max(sizes) == 87_000_000


@pytest.mark.parametrize("total", [5_000_000, 130_000_000, 600_000_000])
def test_smaller_sizes_keep_the_distribution_and_take_fewer_files(total: int) -> None:
    sizes = g.heavy_sizes_for_total(total)
    assert sum(sizes) >= total > sum(g.heavy_sizes(len(sizes) - 1))  # the fewest files that reach it
    assert statistics.median(sizes) == pytest.approx(105_000, rel=0.05)
    assert max(sizes) < 87_000_000
    assert len(sizes) < 3100


def test_plan_uses_every_layout() -> None:
    planned = g.plan(g.heavy_sizes(3100), seed=1)
    layouts = defaultdict(int)
    for p in planned:
        layouts[p.layout] += 1
    assert set(layouts) == {"main", "subagents", "workflow", "legacy", "summary-only"}
    mains = {(p.project, p.session) for p in planned if p.kind == "main"}
    for p in planned:
        if p.kind == "subagent":
            assert (p.project, p.session) in mains  # a subagent belongs to a session of its project
            assert p.agent and re.fullmatch(r"a[0-9a-f]{6}", p.agent)
    assert g.plan(g.heavy_sizes(500), seed=7) == g.plan(g.heavy_sizes(500), seed=7)


@pytest.fixture(scope="module")
def heavy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    out = tmp_path_factory.mktemp("gen") / "projects"
    return out, _generate(out, "--size", "12MB", "--seed", "3")


def test_generated_files_are_whole_real_lines_with_ids_renamed_per_file(heavy: tuple[Path, dict[str, object]]) -> None:
    out, report = heavy
    files = sorted(out.rglob("*.jsonl"))
    assert report["files"] == len(files) > 10
    assert report["bytes"] == sum(p.stat().st_size for p in files)
    real = {IDS.sub(b"I", line) for p in CORPUS.rglob("*.jsonl") for line in p.read_bytes().splitlines()}
    owner: dict[object, Path] = {}
    for path in files:
        data = path.read_bytes()
        assert data.endswith(b"\n")
        for line in data.splitlines():
            assert IDS.sub(b"I", line) in real  # a real line, only its ids changed
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict):
                continue
            msg = rec.get("message")
            keys = [rec.get("uuid"), (msg.get("id"), rec.get("requestId")) if isinstance(msg, dict) else None]
            for key in keys:
                if key and key != (None, None):
                    assert owner.setdefault(key, path) == path, f"{key} in {owner[key]} and {path}"
    assert len(owner) > 1000


def test_generated_layouts_place_records_consistently(heavy: tuple[Path, dict[str, object]]) -> None:
    out, _ = heavy
    seen = 0
    for path in out.rglob("*.jsonl"):
        parts = path.relative_to(out).parts
        for line in path.read_bytes().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # the corpus' non-JSON lines are kept as they are
            if not isinstance(rec, dict):
                continue
            if "subagents" in parts:
                assert rec.get("sessionId") in (None, parts[parts.index("subagents") - 1])
            elif not path.name.startswith("agent-"):
                assert rec.get("sessionId") in (None, path.stem)
            if path.name.startswith("agent-") and rec.get("agentId"):
                assert rec["agentId"] == path.stem[len("agent-") :]
            seen += 1
    assert seen > 1000


def test_generated_corpus_ingests_exactly(heavy: tuple[Path, dict[str, object]], store: Store) -> None:
    out, _ = heavy
    sources = list(iter_transcripts([out]))
    exp = oracle.read([Path(s.path) for s in sources])
    report = ingest(store, sources)
    assert (report.events_added, report.duplicates, report.revisions, report.rejected) == (
        exp.events,
        exp.duplicates,
        exp.revisions,
        exp.rejected,
    )
    assert store.stats()["conversations"] == len(exp.conversations)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a, b, c = (tmp_path / n / "projects" for n in "abc")
    _generate(a, "--size", "2MB", "--seed", "5")
    _generate(b, "--size", "2MB", "--seed", "5")
    _generate(c, "--size", "2MB", "--seed", "6")
    assert _tree(a) == _tree(b)
    assert _tree(a) != _tree(c)


def test_copies_profile_renames_whole_copies_of_the_corpus(tmp_path: Path) -> None:
    source_bytes = sum(p.stat().st_size for p in CORPUS.rglob("*.jsonl"))
    out = tmp_path / "projects"
    report = _generate(out, "--profile", "copies", "--size", str(2 * source_bytes))
    assert report["bytes"] == 2 * source_bytes  # renamed ids keep their lengths
    src = oracle.read(oracle.transcripts(CORPUS))
    got = oracle.read(oracle.transcripts(out))
    assert (got.events, got.rejected, got.lines) == (2 * src.events, 2 * src.rejected, 2 * src.lines)
    assert len(got.conversations) == 2 * len(src.conversations)


def test_rejects_a_non_empty_output_dir(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("keep me")
    proc = subprocess.run(
        [sys.executable, "-m", "devtools.gen_corpus", str(tmp_path), "--size", "1MB"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "not empty" in proc.stderr
    assert (tmp_path / "x").read_text() == "keep me"


def test_bench_ingest_runs_both_sides_on_one_corpus(tmp_path: Path) -> None:
    corpus = tmp_path / "projects"
    _generate(corpus, "--size", "3MB", "--seed", "2")
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.bench.ingest", "--corpus", str(corpus), "--repeat", "1", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    res = json.loads(proc.stdout)["results"][0]
    assert res["bytes"] == sum(p.stat().st_size for p in corpus.rglob("*.jsonl"))
    exp = oracle.read(oracle.transcripts(corpus))
    assert res["events"] == exp.events + exp.revisions
    for side in ("floor", "agg"):
        assert res[side]["mb_per_s"]["median"] > 0
        assert res[side]["peak_rss_mb"]["max"] > 0
    assert res["ratio"]["median"] > 0 and res["sync_ratio"]["median"] >= res["ratio"]["median"]
    assert "agg/floor" in proc.stderr
