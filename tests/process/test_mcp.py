"""`agg mcp` driven by the MCP SDK's own client over stdio: the four read-only tools answer as the
commands' JSON does, pages of a conversation join up, and bad arguments are tool errors, not crashes."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from devtools.agg import REPO, agg_env, run_agg
from devtools.redisproc import RedisProcess

mcp = pytest.importorskip("mcp", reason="the MCP SDK is in the test extras")


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    data = result.structured_content
    data = data.get("result", data) if isinstance(data, dict) else data
    # The text content carries the same JSON, for clients that read only text.
    assert json.loads(result.content[0].text) == data
    return dict(data)


async def session(env: dict[str, str]) -> dict[str, Any]:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    params = StdioServerParameters(command=sys.executable, args=["-m", "cli", "mcp"], env=env, cwd=str(REPO))
    out: dict[str, Any] = {}
    async with Client(params) as client:
        tools = await client.list_tools()
        out["tools"] = {t.name: t for t in tools.tools}
        out["search"] = structured(await client.call_tool("search", {"query": "pomodoro timer", "limit": 3}))
        out["role"] = structured(
            await client.call_tool("search", {"query": "pomodoro", "role": "user", "since": "2025-10-01"})
        )
        out["list"] = structured(await client.call_tool("list_conversations", {"limit": 5}))
        pages = []
        offset: int | None = 0
        while offset is not None:
            page = structured(
                await client.call_tool("get_conversation", {"conversation": "36d9e1bc", "offset": offset, "limit": 40})
            )
            pages.append(page)
            offset = page["next_offset"]
        out["pages"] = pages
        out["usage"] = structured(await client.call_tool("usage", {"by": "model"}))
        out["missing"] = await client.call_tool("get_conversation", {"conversation": "deadbeef"})
        out["no_word"] = await client.call_tool("search", {"query": "***"})
        out["bad_by"] = await client.call_tool("usage", {"by": "year"})
    return out


def test_mcp_tools_over_stdio(redis_server: RedisProcess, r: redis.Redis, corpus: Path, tmp_path: Path) -> None:
    env = agg_env(redis_server, tmp_path)
    run_agg(["ingest"], env)
    got = asyncio.run(session(env))

    assert set(got["tools"]) == {"search", "list_conversations", "get_conversation", "usage"}
    assert all(t.annotations and t.annotations.read_only_hint for t in got["tools"].values())
    assert "query" in got["tools"]["search"].input_schema["required"]

    cli = json.loads(run_agg(["search", "pomodoro", "timer", "--limit", "3", "--json"], env).stdout)
    assert [h["id"] for h in got["search"]["hits"]] == [h["id"] for h in cli["hits"]]
    assert got["search"]["total"] == cli["total"] > 3
    assert got["role"]["hits"] and all(h["role"] == "user" for h in got["role"]["hits"])

    listed = got["list"]["conversations"]
    assert [c["key"] for c in listed] == [
        c["key"] for c in json.loads(run_agg(["list", "--json", "--limit", "5"], env).stdout)["conversations"]
    ]
    assert all("cost_usd" in c for c in listed)

    messages = [m for page in got["pages"] for m in page["messages"]]
    assert len(got["pages"]) > 1 and got["pages"][0]["conversation"]["key"].startswith("36d9e1bc")
    assert [p["offset"] for p in got["pages"]] == list(range(0, 40 * len(got["pages"]), 40))
    assert messages[0]["role"] == "user" and messages[0]["blocks"][0]["text"].startswith("Build a simple Pomodoro")
    calls = [b for m in messages for b in m["blocks"] if b["kind"] == "tool_use"]
    assert any(b["name"] == "Write" and b["text"].endswith("index.html") for b in calls)
    assert len({m["id"] for m in messages}) == len(messages)  # pages do not overlap

    usage = json.loads(run_agg(["usage", "--by", "model", "--json"], env).stdout)
    assert got["usage"]["rows"] == usage["rows"] and got["usage"]["total"]["cost_usd"] == usage["total"]["cost_usd"]

    for name in ("missing", "no_word", "bad_by"):
        res = got[name]
        assert res.is_error, name
    assert "no conversation 'deadbeef'" in got["missing"].content[0].text
    assert "nothing to search for" in got["no_word"].content[0].text
