"""`agg search | list | show | export | usage | tail --format text` through the real command, on the
corpus: the JSON contract (docs/design.md §9), what a terminal shows, and one line for every bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from aggregator.text import display_width
from devtools.agg import REPO, agg_env, run_agg
from devtools.redisproc import RedisProcess
from tests.support import oracle
from tests.support.records import assistant, session_file, tokens, uid, user, write

HIT_FIELDS = {"conv", "project", "title", "seq", "id", "role", "ts", "snippet"}
ANSI = re.compile("\x1b\\[")


@pytest.fixture
def env(redis_server: RedisProcess, r: redis.Redis, corpus: Path, tmp_path: Path) -> dict[str, str]:
    env = agg_env(redis_server, tmp_path)  # its claude dir holds the corpus copy
    run_agg(["ingest"], env)
    return env


def test_search_json_is_the_contract(env: dict[str, str]) -> None:
    res = json.loads(run_agg(["search", "tailwind", "css", "--limit", "3", "--json"], env).stdout)
    assert set(res) == {"query", "total", "took_ms", "hits"}
    assert res["query"] == "tailwind css" and res["total"] >= 3 and len(res["hits"]) == 3
    for hit in res["hits"]:
        assert set(hit) >= HIT_FIELDS
        assert "⟦" in hit["snippet"] and hit["title"] and hit["ts"].endswith("Z")
    everything = json.loads(run_agg(["search", "tailwind", "css", "--limit", "0", "--json"], env).stdout)
    assert len(everything["hits"]) == everything["total"] == res["total"]


def test_search_on_a_terminal_shows_title_project_time_role_and_snippet(env: dict[str, str]) -> None:
    out = run_agg(["search", "pomodoro", "timer", "--limit", "2"], env).stdout
    lines = out.splitlines()
    assert lines[0].startswith("Build a simple Pomodoro timer")
    assert re.search(r"^36d9e1bc · /Users/yoavfarhi/dev/pomodoro/claude · \d{4}-\d\d-\d\d \d\d:\d\d · \w+", lines[1])
    assert "pomodoro" in lines[2].lower() and "⟦" not in out and not ANSI.search(out)  # no colour into a pipe
    assert re.search(r"2 of \d+ hits", lines[-1])
    nothing = run_agg(["search", "zyzzyvaqq"], env)
    assert nothing.stdout == "" and re.fullmatch(r"no match for zyzzyvaqq \(\d+ ms\)\n", nothing.stderr)


HOSTILE = ['"', "NEAR(", "a OR", "-", ":", "(", "*", "col:val", "NOT", '"unclosed', "x" * 3000, "\x01", "😀"]


@pytest.mark.parametrize("query", HOSTILE)
def test_typed_query_syntax_never_crashes_the_command(env: dict[str, str], query: str) -> None:
    proc = run_agg(["search", "--json", "--", query], env, check=False)
    assert proc.returncode in (0, 2), proc.stderr
    assert "Traceback" not in proc.stderr
    if proc.returncode == 2:
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("agg: nothing to search for")
    else:
        assert json.loads(proc.stdout)["query"] == query


def test_search_bad_input_is_one_line(env: dict[str, str]) -> None:
    for args, code, says in [
        (["search", "x", "--role", "robot"], 2, "Error: Invalid value for '--role'"),
        (["search", "x", "--since", "last tuesday"], 2, "Error: Invalid value for '--since': use YYYY-MM-DD"),
        (["list", "--since", "2026-13-45"], 2, "Error: Invalid value for '--since'"),
        (["usage", "--until", "soon"], 2, "Error: Invalid value for '--until'"),
        (["search", "x", "--conversation", "deadbeef"], 4, "agg: no conversation 'deadbeef'"),
    ]:
        proc = run_agg(args, env, check=False)
        assert proc.returncode == code, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert [ln for ln in proc.stderr.splitlines() if ln.startswith(("Error", "agg:"))] == [
            next(ln for ln in proc.stderr.splitlines() if ln.startswith(says))
        ]


def test_list_newest_first_with_cost(env: dict[str, str], tmp_path: Path) -> None:
    res = json.loads(run_agg(["list", "--json", "--limit", "0"], env).stdout)
    convs = res["conversations"]
    assert res["total"] == len(convs) == 27  # the corpus' conversations with a message
    assert [c["last_ts"] for c in convs] == sorted((c["last_ts"] for c in convs), reverse=True)
    for c in convs:
        assert {"key", "project", "project_path", "title", "last_ts", "messages", "usage", "cost_usd", "active"} <= set(
            c
        )
        assert c["cost_usd"] is not None and (c["cost_usd"] > 0) == (c["responses"] > 0)
    spotter = json.loads(run_agg(["list", "--json", "--project", "spotter", "--limit", "0"], env).stdout)
    assert spotter["total"] and all("spotter" in c["project_path"] for c in spotter["conversations"])
    assert json.loads(run_agg(["list", "--json", "--since", "2026-02-12"], env).stdout)["total"] == 2
    assert json.loads(run_agg(["list", "--json", "--active"], env).stdout)["total"] == 0
    none = run_agg(["list", "--active"], env)
    assert none.stdout == "" and none.stderr == "no conversations match\n"  # said, not an empty screen
    # A conversation written now is active.
    s = uid("now")
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    write(session_file(tmp_path / "claude" / "projects", s), [user(s, "now", "a live question", at=now)])
    run_agg(["ingest"], env)
    active = json.loads(run_agg(["list", "--json", "--active"], env).stdout)["conversations"]
    assert [c["key"] for c in active] == [s] and active[0]["title"] == "a live question"
    text = run_agg(["list", "--limit", "3"], env).stdout.splitlines()
    assert text[0].endswith("a live question") and "3 of 28 conversations" in text[-1]
    assert all(display_width(line) <= 80 for line in text)


def test_show_reads_like_a_transcript(env: dict[str, str]) -> None:
    out = run_agg(["show", "4d5611e5"], env).stdout
    assert not ANSI.search(out)
    assert out.splitlines()[0].startswith("Work on bead spotter-dov")
    assert re.search(r"^user · 2026-02-12 \d\d:\d\d$", out, re.M)
    assert re.search(r"^assistant · 2026-02-12 \d\d:\d\d · claude-opus-4-6$", out, re.M)
    assert re.search(r"^  ⏺ Bash \S", out, re.M)  # a tool call: its name and its command
    assert re.search(r"^  ⏺ Read /\S+", out, re.M)  # … its file
    assert re.search(r"^    ↳ ", out, re.M)  # a result, folded
    assert "┌─ subagent a2898e3" in out and re.search(r"^│ ", out, re.M)
    assert all(display_width(line) <= 100 for line in out.splitlines())
    by_file = run_agg(["show", "projects/-x/4d5611e5-241a-462a-8d15-5122611a9569.jsonl"], env).stdout
    assert by_file == out
    ambiguous = run_agg(["show", ""], env, check=False)
    assert ambiguous.returncode == 4 and "Traceback" not in ambiguous.stderr


def test_export_markdown_html_and_jsonl(env: dict[str, str], tmp_path: Path, corpus: Path) -> None:
    md = run_agg(["export", "36d9e1bc", "--format", "markdown"], env).stdout
    assert md.startswith("# Build a simple Pomodoro timer") and "\n## user · 2025-10-21" in md
    assert "**Write** `/Users/yoavfarhi/dev/pomodoro/claude/index.html`" in md
    out = tmp_path / "conv.html"
    run_agg(["export", "36d9e1bc", "--format", "html", "--output", str(out)], env)
    page = out.read_text()
    assert out.stat().st_mode & 0o777 == 0o600
    assert page.startswith("<!DOCTYPE html>") and "Content-Security-Policy" in page
    assert "<script" not in page and "http://" not in page and "https://" not in page.split("<body>")[0]
    raw = run_agg(["export", "36d9e1bc", "--format", "jsonl"], env).stdout.encode()
    src = (corpus / "-Users-yoavfarhi-dev-pomodoro-claude" / "36d9e1bc-63bf-4e97-8a3e-2b20ba8583f2.jsonl").read_bytes()
    assert raw == src  # the original lines, byte for byte
    bad = run_agg(
        ["export", "36d9e1bc", "--format", "html", "--output", str(tmp_path / "no" / "dir" / "x")], env, check=False
    )
    assert bad.returncode == 2 and bad.stderr.startswith("agg: cannot write") and "Traceback" not in bad.stderr


def test_usage_fits_80_columns_and_aligns_cjk_titles(env: dict[str, str], tmp_path: Path) -> None:
    s = uid("cjk")
    title = "東京都の設定ファイルを最新の状態にアップデートしてください"
    write(
        session_file(tmp_path / "claude" / "projects", s),
        [user(s, "q", title), assistant(s, "a", "msg_cjk", "req_cjk", tokens(10, 2000, 30_000, 5_000))],
    )
    run_agg(["ingest"], env)
    for by in ("conversation", "project", "model", "day", "week", "month"):
        lines = run_agg(["usage", "--by", by], env).stdout.splitlines()
        assert lines and all(display_width(line) <= 80 for line in lines), by
        table = [ln for ln in lines[:-1] if not ln.startswith("-")]
        ends = {display_width(ln) for ln in table}
        assert ends == {80}, (by, ends)  # every row ends in the cost column's last character
        assert lines[-2].startswith("TOTAL")
    rows = run_agg(["usage"], env).stdout.splitlines()
    cjk = next(ln for ln in rows if ln.startswith(s[:8]))
    assert cjk.startswith(f"{s[:8]} 東京都の設定") and "…" in cjk  # cut on display width
    assert cjk.endswith("$0.10") and display_width(cjk) == display_width(rows[0]) == 80  # aligned under COST
    in_col = display_width(rows[0][: rows[0].index(" IN ") + 3])
    assert display_width(cjk[: cjk.index(" 10 ") + 3]) == in_col  # the first number ends under IN


def test_usage_dates_weeks_and_months(env: dict[str, str], corpus: Path) -> None:
    exp = oracle.usage(oracle.transcripts(corpus))
    days = exp.by["day"]
    feb = {d: v for d, v in days.items() if d.startswith("2026-02")}
    rep = json.loads(
        run_agg(["usage", "--by", "day", "--since", "2026-02-01", "--until", "2026-02-28", "--json"], env).stdout
    )
    assert {r["key"]: r["output"] for r in rep["rows"]} == {d: v["output"] for d, v in feb.items()}
    assert rep["total"]["output"] == sum(v["output"] for v in feb.values())
    assert (rep["since"], rep["until"]) == ("2026-02-01", "2026-02-28")
    month = json.loads(run_agg(["usage", "--by", "month", "--json"], env).stdout)
    assert {r["key"]: r["input"] for r in month["rows"]} == {
        m: sum(v["input"] for d, v in days.items() if d[:7] == m) for m in {d[:7] for d in days}
    }
    week = json.loads(run_agg(["usage", "--by", "week", "--json"], env).stdout)
    assert sum(r["responses"] for r in week["rows"]) == exp.total["responses"]
    assert all(time.strptime(r["key"], "%Y-%m-%d").tm_wday == 0 for r in week["rows"])  # Mondays


def test_tail_text_shows_role_and_preview(env: dict[str, str], redis_server: RedisProcess) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "tail", "--since", "0", "--format", "text", "--conversation", "36d9e1bc"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(6)]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    user_line = next(ln for ln in lines if " user " in ln)
    assert re.match(r"^\d+ 20:04:\d\d 36d9e1bc user  Build a simple Pomodoro timer web app", user_line)
    assert any(re.search(r" assistant  .*⏺ TodoWrite", ln) for ln in lines) or any(" tool " in ln for ln in lines)


def test_rebuild_rebuilds_the_search_index(env: dict[str, str]) -> None:
    before = json.loads(run_agg(["search", "tailwind", "--json", "--limit", "0"], env).stdout)["hits"]
    res = json.loads(run_agg(["replay", "--rebuild", "--json"], env).stdout)
    assert res["search_index"]["docs"] > 1000 and res["search_index"]["entries"] == res["seq"]
    assert json.loads(run_agg(["search", "tailwind", "--json", "--limit", "0"], env).stdout)["hits"] == before
    text = run_agg(["replay", "--rebuild"], env).stdout
    assert "search index:" in text and os.path.exists(res["search_index"]["path"])
