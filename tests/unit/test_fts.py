"""What is indexed and how a typed query becomes an FTS5 query (aggregator.fts), on a real SQLite FTS5
table with the index's tokenizer: hostile syntax never errors, CJK matches by substring, prefixes
and phrases work, snippets mark what matched."""

from __future__ import annotations

import sqlite3

import pytest

from aggregator import defaults
from aggregator.errors import QueryError
from aggregator.fts import MARK, parts, prepare, snippet, terms, translate

DOCS = [
    "the redis_url setting of agg",
    "foo-bar and baz: a component test",
    "東京都の設定ファイルを最新の状態に",
    "Redisの設定",
    "near the or operator, not and",
    "C++ and foo@bar.com cost $5",
]


@pytest.fixture
def fts() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5(body, content='', tokenize='unicode61 remove_diacritics 0')")
    db.executemany("INSERT INTO t(rowid, body) VALUES (?, ?)", [(i, prepare(d)) for i, d in enumerate(DOCS)])
    return db


def found(db: sqlite3.Connection, query: str) -> set[str]:
    return {DOCS[r[0]] for r in db.execute("SELECT rowid FROM t WHERE t MATCH ?", (translate(query),))}


HOSTILE = [
    '"unclosed phrase',
    "a OR b",
    "a AND b",
    "NOT x",
    "NEAR(a b)",
    'NEAR("a" "b", 2)',
    "NEAR(",
    "-x",
    "col:val",
    "{body}: redis",
    "body:redis",
    "^start",
    "x*y",
    "(redis",
    "redis)",
    "'single",
    "back\\slash",
    "C++",
    "foo@bar.com",
    "$var #tag 50%",
    "redis\x00url",
    "😀 redis",
    "a" * 5000,
]


@pytest.mark.parametrize("query", HOSTILE)
def test_typed_syntax_is_literal_text_and_never_an_fts5_error(fts: sqlite3.Connection, query: str) -> None:
    expr = translate(query)
    fts.execute("SELECT count(*) FROM t WHERE t MATCH ?", (expr,)).fetchone()  # raises if not valid FTS5
    assert all(text.strip("*") for text, _, _ in terms(query))


@pytest.mark.parametrize("query", ["", "   ", "*", "***", "-", ":", "()", '""', '"  "', "😀", "- : ( ) *"])
def test_a_query_without_a_word_is_refused_with_one_line(query: str) -> None:
    with pytest.raises(QueryError) as e:
        translate(query)
    assert "\n" not in str(e.value) and e.value.exit_code == 2


def test_too_many_terms_are_refused() -> None:
    with pytest.raises(QueryError, match="too many terms"):
        translate(" ".join(f"w{i}" for i in range(defaults.SEARCH_MAX_TERMS + 1)))


def test_operators_match_as_words(fts: sqlite3.Connection) -> None:
    assert found(fts, "near OR not") == {DOCS[4]}  # the words themselves, all required
    assert found(fts, "redis OR nothing") == set()  # OR is not an operator: "or" is missing there
    assert found(fts, "NEAR(the") == {DOCS[4]}


def test_words_are_whole_and_case_insensitive(fts: sqlite3.Connection) -> None:
    assert found(fts, "REDIS") == {DOCS[0], DOCS[3]}  # redis_url holds the word redis; Redisの too
    assert found(fts, "redi") == set()
    assert found(fts, "redi*") == {DOCS[0], DOCS[3]}
    assert found(fts, "compon*") == {DOCS[1]}


def test_punctuated_terms_are_phrases_of_their_words(fts: sqlite3.Connection) -> None:
    assert found(fts, "foo-bar") == {DOCS[1], DOCS[5]}  # foo@bar.com holds the words foo, bar too
    assert found(fts, "bar-foo") == set()
    assert found(fts, "foo@bar.com") == {DOCS[5]}
    assert found(fts, "redis_url") == {DOCS[0]}


def test_quoted_phrases(fts: sqlite3.Connection) -> None:
    assert found(fts, '"component test"') == {DOCS[1]}
    assert found(fts, '"test component"') == set()
    assert found(fts, '"setting of ag"*') == {DOCS[0]}


def test_cjk_matches_any_substring(fts: sqlite3.Connection) -> None:
    assert found(fts, "設定") == {DOCS[2], DOCS[3]}
    assert found(fts, "京都の設") == {DOCS[2]}
    assert found(fts, "定設") == set()  # the characters, but not in this order
    assert found(fts, "Redisの設定") == {DOCS[3]}
    assert found(fts, "ファイルを最新") == {DOCS[2]}


def test_snippets_mark_the_matches() -> None:
    text = "Some text before. " * 20 + "Here the Redis setting (redis_url) is set. " + "after " * 50
    snip = snippet(text, terms("redis url"))
    assert f"{MARK[0]}Redis{MARK[1]}" in snip and f"{MARK[0]}url{MARK[1]}" in snip
    assert snip.startswith("…") and snip.endswith("…")
    cjk = snippet("東京都の設定ファイルを最新の状態に", terms("設定ファイル"))
    assert f"{MARK[0]}設定ファイル{MARK[1]}" in cjk
    # The text's own marks cannot pass for ours; control characters are not shown.
    own = snippet("⟦fake⟧ real \x1b[31m", terms("real"))
    assert own == f"[fake] {MARK[0]}real{MARK[1]} [31m"


def test_parts_give_each_text_its_role() -> None:
    user = {"type": "user", "message": {"content": "hello"}}
    assert parts(user) == [("user", "hello")]
    result = {
        "type": "user",
        "message": {"content": [{"type": "tool_result", "content": [{"type": "text", "text": "out"}]}]},
    }
    assert parts(result) == [("tool", "out")]
    reply = {
        "type": "assistant",
        "message": {
            "content": [
                {"type": "thinking", "thinking": "hmm"},
                {"type": "text", "text": "done"},
                {"type": "tool_use", "name": "Bash", "input": {"command": "ls -la", "timeout": 5}},
            ]
        },
    }
    assert parts(reply) == [("assistant", "hmm\ndone"), ("tool", "Bash\nls -la\n5")]
    turn = {"type": "agg-turn", "turn": {"kind": "summary", "title": "T", "summary": "S"}}
    assert parts(turn) == [("title", "T"), ("summary", "S")]
    assert parts({"type": "summary", "summary": "A title"}) == [("title", "A title")]
    assert parts({"type": "progress", "data": {"message": user}}) == []
    assert parts([1, 2]) == []
