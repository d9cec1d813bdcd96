"""Full-text search on both sides: what of a record is indexed (and as which role), how its text is
prepared for SQLite FTS5's ``unicode61`` tokenizer, and how what a user types becomes a safe query.

**Words** are what ``unicode61`` makes of the text (letters and digits; case-insensitive; accents
kept): ``redis_url`` holds the words ``redis`` and ``url``. **Chinese, Japanese and Korean** text
has no spaces between words, so every CJK character is made a word of its own (a zero-width
space, :data:`SEP`, on each side, in the indexed copy only) and a run of them in a query is
searched as a phrase: ``設定ファイル`` finds that substring anywhere.

The index does not keep the text (it is in the store): **snippets** are cut from the stored record
by :func:`snippet`, which finds the query's words with the same rules.

**Queries** are never handed to FTS5 as written. Each whitespace-separated term, or each
``"quoted phrase"``, becomes an FTS5 string (which FTS5 tokenizes like the text, so ``foo-bar`` or
``a:b`` is the phrase of its words), a trailing ``*`` makes its last word a prefix, and all terms
must match. Every other character — ``-``, ``:``, ``(``, ``^``, ``NEAR``, ``OR``, ``AND``, ``NOT`` — is
literal text; a query with no word at all is refused with one line (:class:`QueryError`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from typing import Any

from aggregator import defaults
from aggregator.errors import QueryError

ROLES = ("user", "assistant", "tool", "title", "summary")
"""What an indexed text is: a user's or the assistant's words (message text, thinking), a tool
call's input or a tool's result, a title (Claude Code's ``summary`` / ``custom-title`` /
``ai-title`` records, agg's titles), agg's summary of the conversation. Its index is the part
number of the text within its event."""

MESSAGE_ROLES = ("user", "assistant")

INDEXED_TYPES = frozenset({"user", "assistant", "summary", "custom-title", "ai-title", "agg-turn"})
"""Record types with text to index (other records — progress, snapshots, hooks — have none)."""

SEP = "\u200b"
"""Put around each CJK character so that ``unicode61`` makes it a word of its own."""

MARK = ("⟦", "⟧")
"""How a snippet marks a match (these two characters are replaced by ``[`` and ``]`` in the snippet's
text, so a mark is always one of ours)."""

_CJK_RUN = re.compile(
    "[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\uff66-\uff9f\U00020000-\U0002fa1f]+"
)
"""Hiragana, katakana, CJK ideographs (with extensions and compatibility forms), Hangul syllables,
half-width katakana."""

_CJK_CHARS = _CJK_RUN.pattern[:-1]
_TOKEN = re.compile(f"{_CJK_CHARS}|(?:(?!{_CJK_CHARS})[^\\W_])+")
"""A word as :func:`snippet` finds them: one CJK character, or a run of other letters and digits."""

_UNSHOWN = re.compile("[\x00-\x08\x0b-\x1f\x7f\u200b⟦⟧]")
_SPACE = re.compile(r"\s+")
_CONTROLS = re.compile("[\x00-\x1f\x7f]")


def _spaced_run(m: re.Match[str]) -> str:
    return SEP + SEP.join(m.group(0)) + SEP


def prepare(text: str, limit: int = defaults.SEARCH_PART_CHARS) -> str:
    """``text`` as it is indexed: cut to ``limit`` characters, each CJK character a word of its own."""
    text = text[:limit]
    return _CJK_RUN.sub(_spaced_run, text) if not text.isascii() else text


# --- what is indexed -----------------------------------------------------------------------------------
def _strings(value: Any, out: list[str], depth: int = 0) -> None:
    """Every string (and number) inside a tool call's input, in order."""
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int | float):
        out.append(str(value))
    elif depth < 20 and isinstance(value, dict):
        for v in value.values():
            _strings(v, out, depth + 1)
    elif depth < 20 and isinstance(value, list):
        for v in value:
            _strings(v, out, depth + 1)


def result_text(content: Any) -> str:
    """The text of a ``tool_result`` block's content (a string, or text blocks; images skipped)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str))
    return ""


def _message_parts(obj: dict[str, Any], role: str) -> Iterator[tuple[str, str]]:
    msg = obj.get("message")
    content = msg.get("content") if isinstance(msg, dict) else None
    if isinstance(content, str):
        yield role, content
        return
    if not isinstance(content, list):
        return
    words: list[str] = []
    tools: list[str] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            words.append(block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            words.append(block["thinking"])
        elif kind == "tool_use":
            name = block.get("name")
            tools.append(name if isinstance(name, str) else "")
            _strings(block.get("input"), tools)
        elif kind == "tool_result":
            tools.append(result_text(block.get("content")))
    if words:
        yield role, "\n".join(words)
    if tools:
        yield "tool", "\n".join(t for t in tools if t)


def parts(obj: Any) -> list[tuple[str, str]]:
    """``(role, text)`` of each text of a record worth indexing (empty texts left out)."""
    if not isinstance(obj, dict):
        return []
    kind = obj.get("type")
    out: list[tuple[str, Any]] = []
    if kind in MESSAGE_ROLES:
        out += _message_parts(obj, kind)
    elif kind == "summary":
        out.append(("title", obj.get("summary")))
    elif kind == "custom-title":
        out.append(("title", obj.get("customTitle")))
    elif kind == "ai-title":
        out.append(("title", obj.get("aiTitle")))
    elif kind == "agg-turn":
        turn = obj.get("turn")
        if isinstance(turn, dict) and turn.get("kind") == "summary":
            out += [("title", turn.get("title")), ("summary", turn.get("summary"))]
    return [(role, text) for role, text in out if isinstance(text, str) and text.strip()]


# --- queries ---------------------------------------------------------------------------------------------
def _has_word(text: str) -> bool:
    """Whether ``unicode61`` finds a word in ``text`` (letters, digits, marks, private use)."""
    for ch in text:
        cat = unicodedata.category(ch)
        if cat[0] in "LNM" or cat == "Co":
            return True
    return False


def terms(query: str) -> list[tuple[str, bool, bool]]:
    """The query's terms: ``(text, is_phrase, is_prefix)``; an unclosed quote runs to the end."""
    out: list[tuple[str, bool, bool]] = []
    i, n = 0, len(query)
    while i < n:
        ch = query[i]
        if ch.isspace():
            i += 1
            continue
        if ch == '"':
            end = query.find('"', i + 1)
            end = n if end < 0 else end
            text, phrase = query[i + 1 : end], True
            i = end + 1
        else:
            j = i
            while j < n and not query[j].isspace() and query[j] != '"':
                j += 1
            text, phrase = query[i:j], False
            i = j
        prefix = False
        if phrase:
            while i < n and query[i] == "*":
                prefix, i = True, i + 1
        else:
            stripped = text.rstrip("*")
            prefix, text = stripped != text, stripped
        if _has_word(text):
            out.append((text, phrase, prefix))
    return out


def translate(query: str) -> str:
    """The FTS5 expression that finds ``query``'s terms (see the module docstring).

    Raises :class:`QueryError` if the query holds no word, or more terms than
    :data:`~aggregator.defaults.SEARCH_MAX_TERMS`.
    """
    found = terms(query)
    if not found:
        raise QueryError(f"nothing to search for in {query[:60]!r}: give at least one word")
    if len(found) > defaults.SEARCH_MAX_TERMS:
        raise QueryError(f"too many terms ({len(found)}): at most {defaults.SEARCH_MAX_TERMS}")
    out = []
    for text, _phrase, prefix in found:
        # FTS5 reads a string up to a NUL: control characters (never words) become spaces.
        quoted = '"' + prepare(_CONTROLS.sub(" ", text)).replace('"', '""') + '"'
        out.append(quoted + ("*" if prefix else ""))
    return " ".join(out)


# --- snippets --------------------------------------------------------------------------------------------
def _words(text: str) -> list[str]:
    return [m.group(0).casefold() for m in _TOKEN.finditer(text)]


def snippet(text: str, query_terms: list[tuple[str, bool, bool]], width: int = 24) -> str:
    """The part of ``text`` (about ``width`` words) that holds the most of the query's terms, on one
    line, each match between :data:`MARK`'s two characters, ``…`` where text was left out.

    A long text is not read whole: the snippet is cut from the :data:`SNIPPET_REGION_CHARS` around
    the first place one of the query's words appears."""
    full = len(text)
    lo, text = _region(text[: defaults.SEARCH_PART_CHARS], query_terms)
    tokens = list(_TOKEN.finditer(text))
    words = [t.group(0).casefold() for t in tokens]
    spans: list[tuple[int, int, int]] = []  # (first token, last token, term number)
    for n, (term, _phrase, prefix) in enumerate(query_terms):
        want = _words(term)
        k = len(want)
        if not k:
            continue
        for i in range(len(words) - k + 1):
            if words[i : i + k - 1] == want[:-1] and (
                words[i + k - 1].startswith(want[-1]) if prefix else words[i + k - 1] == want[-1]
            ):
                spans.append((i, i + k - 1, n))
    if not tokens:
        return _show(text[:200])
    start = 0
    if spans:
        best = (-1, 0)
        for first, _, _ in spans[:200]:
            first_lo = max(0, first - width // 4)
            covered = len({n for a, b, n in spans if a >= first_lo and b < first_lo + width})
            if covered > best[0]:
                best = (covered, first_lo)
        start = best[1]
    end = min(len(tokens), start + width) - 1
    out = ["…" if start > 0 or lo > 0 else ""]
    pos = tokens[start].start() if start > 0 else 0
    for a, b, _ in sorted(sp for sp in spans if sp[0] >= start and sp[1] <= end):
        ca, cb = tokens[a].start(), tokens[b].end()
        if ca < pos:
            continue  # overlaps a mark already made
        out += [_show(text[pos:ca]), MARK[0], _show(text[ca:cb]), MARK[1]]
        pos = cb
    stop = tokens[end].end() if end < len(tokens) - 1 else len(text)
    out += [_show(text[pos:stop]), "…" if lo + stop < full else ""]
    return "".join(out).strip()


SNIPPET_REGION_CHARS = 2000
"""Characters around the first match that a snippet is cut from."""


def _region(text: str, query_terms: list[tuple[str, bool, bool]]) -> tuple[int, str]:
    """``(offset, part)``: ``text`` itself, or for a long one the part around the first place one of
    the query's terms appears (a quick case-insensitive search for its words in a row; :func:`snippet`
    checks the words themselves)."""
    if len(text) <= SNIPPET_REGION_CHARS:
        return 0, text
    found = None
    for term, _, _ in query_terms:
        words = _words(term)
        if words:
            m = re.search(r"[\W_]*".join(map(re.escape, words)), text, re.IGNORECASE)
            if m and (found is None or m.start() < found):
                found = m.start()
    lo = max(0, (found or 0) - SNIPPET_REGION_CHARS // 4)
    return lo, text[lo : lo + SNIPPET_REGION_CHARS]


def _show(text: str) -> str:
    """``text`` as a snippet shows it: whitespace as single spaces, no control characters or marks."""
    return _SPACE.sub(" ", _UNSHOWN.sub(_unshown, text))


def _unshown(m: re.Match[str]) -> str:
    return {"⟦": "[", "⟧": "]"}.get(m.group(0), " ")
