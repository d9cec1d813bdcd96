"""What people read: dates they type, text measured in terminal columns (CJK takes two), projects as
paths, compact numbers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aggregator.dates import parse_when, week_of
from aggregator.errors import ConfigError
from aggregator.projects import encode, matches, readable
from aggregator.text import cut_left, cut_width, display_width, pad_width, wrap_width
from cli.read import compact, money


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def test_dates_as_users_type_them() -> None:
    now = ms(2026, 2, 12, 15, 30) / 1000
    assert parse_when("2026-02-12") == ms(2026, 2, 12)
    assert parse_when("2026-02-12", end=True) == ms(2026, 2, 13) - 1
    assert parse_when("2026-02", end=True) == ms(2026, 3, 1) - 1
    assert parse_when("2026-12", end=True) == ms(2027, 1, 1) - 1
    assert parse_when("2026-02-12T10:00:00Z") == ms(2026, 2, 12, 10)
    assert parse_when("2026-02-12T10:00:00+01:00") == ms(2026, 2, 12, 9)
    assert parse_when("7d", now=now) == ms(2026, 2, 5, 15, 30)
    assert parse_when("12h", now=now) == ms(2026, 2, 12, 3, 30)
    assert parse_when("yesterday", now=now) == ms(2026, 2, 11)
    assert parse_when("today", end=True, now=now) == ms(2026, 2, 13) - 1
    for bad in ("last week", "2026-13-01", "12", "", "7y"):
        with pytest.raises(ConfigError, match="bad date"):
            parse_when(bad)


def test_weeks_are_named_by_their_monday() -> None:
    assert week_of("2026-02-12") == "2026-02-09"  # a Thursday
    assert week_of("2026-02-09") == "2026-02-09"
    assert week_of("2026-02-15") == "2026-02-09"  # Sunday
    assert week_of("") == ""


def test_cjk_text_is_measured_and_cut_in_columns() -> None:
    title = "/orchestrator @CLAUDE.md を最新の状態にアップデート"
    assert display_width("最新") == 4 and display_width("abc") == 3 and display_width("é") == 1
    for width in range(5, 45):
        assert display_width(cut_width(title, width)) <= width
        assert display_width(pad_width(title, width)) == width
        assert display_width(pad_width("x", width, right=True)) == width
    assert cut_width(title, 100) == title
    assert cut_left("/home/u/projects/spotter", 12) == "…cts/spotter"
    for line in wrap_width("東京都の設定ファイルを最新の状態にアップデートしてください and more words", 17):
        assert display_width(line) <= 17


def test_projects_show_as_the_path_that_encodes_to_them() -> None:
    project = encode("/home/u/my.app")
    assert project == "-home-u-my-app"
    assert readable(project, ["/home/u/my.app"], home="/nobody") == "/home/u/my.app"
    assert readable(project, ["/home/u/my.app/src/lib"], home="/nobody") == "/home/u/my.app"  # started deeper
    assert readable(project, ["/elsewhere"], home="/nobody") == "/home/u/my/app"  # a guess, no cwd proves it
    assert readable(project, ["/home/u/my.app"], home="/home/u") == "~/my.app"
    assert matches("my.app", project, "~/my.app") and matches("/home/u/my.app/", project, "/home/u/my.app")
    assert not matches("other", project, "~/my.app")


def test_numbers_fit_their_columns() -> None:
    assert [compact(n) for n in (0, 9_999, 12_345, 156_641, 16_175_673, 2_049_403_000)] == [
        "0",
        "9,999",
        "12.3k",
        "157k",
        "16.2M",
        "2.0G",
    ]
    assert money(10.512349) == "$10.51" and money(None) == "n/a"
