"""Which user records are real prompts, and what text they give (pure functions, no Redis)."""

from __future__ import annotations

from typing import Any

import pytest

from aggregator.parse import facts
from aggregator.titles import prompt_candidate


def rec(content: Any, **kw: Any) -> dict[str, Any]:
    return {"type": "user", "message": {"role": "user", "content": content}, **kw}


@pytest.mark.parametrize(
    ("content", "extra", "expected"),
    [
        ("fix the login bug", {}, ("p", "fix the login bug")),
        ("  several\n\n  lines   here ", {}, ("p", "several lines here")),
        (
            [{"type": "text", "text": "<ide_opened_file>a.py</ide_opened_file>"}, {"type": "text", "text": "why?"}],
            {},
            ("p", "why?"),
        ),
        ("<system-reminder>be brief</system-reminder>\nrename foo", {}, ("p", "rename foo")),
        ("<ide_selection>an unterminated selection", {}, None),
        ("<b>bold</b> is html the user typed", {}, ("p", "<b>bold</b> is html the user typed")),
        ("<local-command-caveat>Caveat: …</local-command-caveat>", {}, None),
        ("<local-command-stdout>ok</local-command-stdout>", {}, None),
        ("<task-notification><task-id>a1</task-id></task-notification>", {}, None),
        ([{"type": "text", "text": "[Request interrupted by user for tool use]"}], {}, None),
        (
            "<command-message>o is running…</command-message>\n"
            "<command-name>/o</command-name>\n<command-args>do X</command-args>",
            {},
            ("p", "/o do X"),
        ),
        (
            "<command-message>init is analyzing…</command-message>\n<command-name>/init</command-name>",
            {},
            ("c", "/init"),
        ),
        ("<command-name>init</command-name>", {}, ("c", "/init")),
        ("<bash-input>ls -la</bash-input>", {}, ("p", "! ls -la")),
        ([{"type": "tool_result", "tool_use_id": "t", "content": "x"}], {}, None),
        ([{"type": "text", "text": "see"}, {"type": "tool_result", "tool_use_id": "t", "content": "x"}], {}, None),
        ([{"type": "image", "source": {}}], {}, None),
        ("a skill's instructions", {"isMeta": True}, None),
        ("This session is being continued…", {"isCompactSummary": True}, None),
        ("x" * 500, {}, ("p", "x" * 199 + "…")),
        (None, {}, None),
    ],
)
def test_prompt_candidate(content: Any, extra: dict[str, Any], expected: tuple[str, str] | None) -> None:
    assert prompt_candidate(rec(content, **extra)) == expected


def test_facts_place_prompts_by_where_the_record_is() -> None:
    assert facts(rec("hello"), None)["p"] == "hello"
    assert "p" not in facts(rec("hello"), "a1b2c3d") and facts(rec("hello"), "a1b2c3d")["sp"] == "hello"
    assert facts(rec("hello", isSidechain=True), None)["sp"] == "hello"
    assert "sp" not in facts(rec("<command-name>/init</command-name>", isSidechain=True), None)


def test_usage_facts() -> None:
    line = {
        "type": "assistant",
        "requestId": "req_1",
        "message": {
            "id": "msg_1",
            "model": "m",
            "usage": {
                "input_tokens": 3,
                "output_tokens": 2.0,
                "cache_read_input_tokens": -1,
                "cache_creation_input_tokens": True,
            },
        },
    }
    assert facts(line, None)["u"] == ["msg_1", "req_1", "m", 3, 2, 0, 0, 0]
    # The 1-hour share of cache writes is kept; a zero flat total is replaced by the breakdown's sum.
    line["message"]["usage"]["cache_creation"] = {  # type: ignore[index]
        "ephemeral_5m_input_tokens": 7,
        "ephemeral_1h_input_tokens": 5,
    }
    assert facts(line, None)["u"] == ["msg_1", "req_1", "m", 3, 2, 0, 12, 5]
    line["message"]["model"] = "<synthetic>"  # type: ignore[index]
    assert "u" not in facts(line, None)
    assert "u" not in facts({"type": "progress", "data": {"message": line}}, None)
