"""Screenshots of ``agg serve``'s pages for the README, taken by the browser the tests use.

A throwaway redis-server gets the shared corpus (``agg ingest``), a real ``agg serve`` serves it, and
headless chromium (``devtools.browser``) saves each page to ``docs/web/<page>.png``::

    python -m scripts.screenshots [--out docs/web]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from aggregator.keys import Keys
from aggregator.lifecycle import agg_argv
from aggregator.store import Store
from aggregator.views import conversation_views
from devtools.agg import HOST, REPO, agg_env, run_agg
from devtools.browser import launch
from devtools.gen_corpus import default_source
from devtools.redisproc import RedisProcess

VIEWPORT = {"width": 1280, "height": 860}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "web")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="agg-shots-") as tmp_name, RedisProcess(Path(tmp_name) / "redis") as server:
        tmp = Path(tmp_name)
        shutil.copytree(default_source(), tmp / "claude" / "projects")
        env = agg_env(server, tmp)
        run_agg(["ingest"], env)
        store = Store(server.client(), Keys("agg"), HOST)
        views = conversation_views(store)
        busy = max(views, key=lambda v: (len(v["subagents"]), v["messages"]))
        parts = [subprocess.Popen(agg_argv(*args), env=env, cwd=REPO) for args in (["watch"], ["writer"])]
        serve = subprocess.Popen(agg_argv("serve", "--port", "0"), env=env, stdout=subprocess.PIPE, cwd=REPO)
        parts.append(serve)
        try:
            assert serve.stdout is not None
            url = serve.stdout.readline().decode().strip()
            base = url.split("/?")[0]
            with sync_playwright() as p:
                browser = launch(p)
                page = browser.new_context(viewport=VIEWPORT, device_scale_factor=1).new_page()
                page.goto(url)
                page.wait_for_selector("#live[data-state=live]")
                page.screenshot(path=args.out / "conversations.png")
                page.goto(f"{base}/conversations/{busy['key']}")
                page.wait_for_selector("#live[data-state=live]")
                page.locator("section#events > .chunk > article.ev details.tool").first.evaluate("d => d.open = true")
                page.evaluate("window.scrollTo(0, 0)")
                page.screenshot(path=args.out / "conversation.png")
                page.goto(f'{base}/search?q="tool results"')
                page.screenshot(path=args.out / "search.png")
                page.goto(f"{base}/usage")
                page.screenshot(path=args.out / "usage.png", full_page=True)
                page.goto(f"{base}/status")
                page.wait_for_timeout(2500)  # one refresh: the parts' states settle
                page.screenshot(path=args.out / "status.png")
                browser.close()
        finally:
            for part in parts:
                part.terminate()
                part.wait(timeout=30)
    for f in sorted(args.out.glob("*.png")):
        print(f.relative_to(REPO) if f.is_relative_to(REPO) else f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
