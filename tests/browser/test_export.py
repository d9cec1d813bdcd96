"""`agg export --format html` of a conversation full of hostile markup, opened in a real headless
browser (Debian's chromium, driven by Playwright): the markup is shown as text, nothing runs, no dialog
opens, nothing is fetched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

from devtools.agg import agg_env, run_agg
from devtools.redisproc import RedisProcess
from tests.support.records import assistant, session_file, uid, user, write

HOSTILE = [
    "<script>window.__pwned = 1; alert('script')</script>",
    "<img src=x onerror=\"window.__pwned = 2; alert('img')\">",
    "</div></pre></details><script>window.__pwned = 3</script>",
    "<iframe src=\"javascript:alert('iframe')\"></iframe>",
    "<svg onload=\"alert('svg')\"></svg><a href=\"javascript:alert('link')\">x</a>",
    '<meta http-equiv="refresh" content="0;url=https://example.com/">',
]


def test_hostile_html_export_runs_nothing_in_a_real_browser(
    redis_server: RedisProcess, r: redis.Redis, tmp_path: Path, browser: Any
) -> None:
    s = uid("hostile")
    records = [user(s, "u0", HOSTILE[0])]
    for i, text in enumerate(HOSTILE[1:], 1):
        reply = assistant(s, f"a{i}", f"msg_{i}", f"req_{i}", None)
        reply["message"]["content"] = [
            {"type": "text", "text": text},
            {"type": "tool_use", "id": f"t{i}", "name": "Bash", "input": {"command": text}},
        ]
        result = user(s, f"r{i}", [{"type": "tool_result", "tool_use_id": f"t{i}", "content": text}])
        records += [reply, result]
    records.append({"type": "custom-title", "customTitle": HOSTILE[1], "sessionId": s})
    write(session_file(tmp_path / "claude" / "projects", s), records)
    env = agg_env(redis_server, tmp_path)
    run_agg(["ingest"], env)
    page_file = tmp_path / "export.html"
    run_agg(["export", s, "--format", "html", "--output", str(page_file)], env)

    dialogs: list[str] = []
    requests: list[str] = []
    page = browser.new_page()
    try:
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("request", lambda req: requests.append(req.url))
        page.goto(page_file.as_uri(), wait_until="load")
        page.wait_for_timeout(500)  # give any handler that would fire time to fire
        pwned = page.evaluate("() => window.__pwned === undefined ? null : window.__pwned")
        counts = page.evaluate(
            "() => ['script', 'img', 'iframe', 'svg', 'a', 'meta[http-equiv=refresh]']"
            ".map(s => document.querySelectorAll(s).length)"
        )
        text = page.evaluate("() => document.body.innerText")
        details = page.evaluate("() => document.querySelectorAll('details pre').length")
        url = page.url
    finally:
        page.close()
    assert dialogs == [] and pwned is None
    assert counts == [0, 0, 0, 0, 0, 0]
    assert requests == [page_file.as_uri()] and url == page_file.as_uri()  # nothing fetched, no redirect
    for hostile in HOSTILE:
        assert hostile in text or hostile in text.replace("\n", "")  # shown, as text
    assert details == len(HOSTILE) - 1  # each tool result folded in the page, no script needed
