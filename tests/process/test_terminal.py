"""What `agg show` and `agg search` do on a real terminal (a pseudo-terminal the test opens): a long
transcript goes through the pager, a short one is printed with colour, and search highlights the
matched words — while the same commands into a pipe stay plain (tests/process/test_read_cli.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis

from devtools.agg import agg_env, run_agg
from devtools.redisproc import RedisProcess
from tests.support.cli import on_a_terminal

ANSI = re.compile("\x1b\\[[0-9;]*m")
BOLD_YELLOW = "\x1b[1;33m"


@pytest.fixture
def env(redis_server: RedisProcess, r: redis.Redis, corpus: Path, tmp_path: Path) -> dict[str, str]:
    env = agg_env(redis_server, tmp_path)  # its claude dir holds the corpus copy
    run_agg(["ingest"], env)
    return env


def plain(text: str) -> list[str]:
    """``text`` without colour, as lines without trailing blanks, ending at its last non-blank line."""
    return "\n".join(line.rstrip() for line in ANSI.sub("", text).splitlines()).rstrip("\n").splitlines()


def test_a_long_transcript_opens_in_the_pager(env: dict[str, str], tmp_path: Path) -> None:
    paged = tmp_path / "paged.txt"
    pager = tmp_path / "pager.sh"
    pager.write_text(f"#!/bin/sh\ncat > {paged}\n")
    pager.chmod(0o700)
    piped = run_agg(["show", "4d5611e5"], env).stdout
    code, screen = on_a_terminal(["show", "4d5611e5"], {**env, "PAGER": str(pager)}, rows=40)
    assert code == 0, screen
    assert paged.exists(), "the long transcript did not go through $PAGER"
    # The pager got the whole transcript (colour is left to a pager that shows it, as less -R does).
    assert plain(paged.read_text()) == plain(piped)
    assert "Work on bead spotter-dov" not in screen  # nothing printed past the pager


def test_a_short_transcript_is_printed_in_colour_on_a_terminal(env: dict[str, str], tmp_path: Path) -> None:
    never = tmp_path / "never-run"
    code, screen = on_a_terminal(["show", "36d9e1bc"], {**env, "PAGER": f"touch {never}"}, rows=5000)
    assert code == 0, screen
    assert not never.exists()  # it fits the screen: no pager
    assert ANSI.search(screen), "no colour on a terminal"
    assert plain(screen) == plain(run_agg(["show", "36d9e1bc"], env).stdout)


def test_search_highlights_the_matched_words_on_a_terminal(env: dict[str, str]) -> None:
    code, screen = on_a_terminal(["search", "pomodoro", "--limit", "1"], env, rows=50)
    assert code == 0, screen
    assert re.search(re.escape(BOLD_YELLOW) + "pomodoro", screen, re.I), screen
    assert "⟦" not in screen
