"""Benchmark of ``agg serve``: append → visible in a real browser, the conversation list of a big
store, a long conversation's first screen, and the server's RSS over a long run of appends.

A throwaway redis-server, the real ``agg watch`` and ``agg serve`` processes, and headless chromium
(``devtools.browser``):

1. **store**: ``--conversations`` small conversations (6 records each) and one conversation of
   ``--messages`` messages (text, tool calls and results) are written and read in with ``agg ingest``;
2. **list**: once the server's search indexer has taken the store in (its time is printed, and a
   search's), ``GET /`` (the conversation list, rendered on the server) timed ``--requests`` times
   over one keep-alive connection, next to ``GET /static/app.css`` through the same stack (the
   floor); and the browser's navigation to it (response end, load event);
3. **first screen**: the long conversation's page, by HTTP and by the browser (load event);
4. **live**: ``--sessions`` sessions, each with its conversation page open in the browser (a
   context of its own: a browser keeps at most six connections to one server), append
   one line each in turn (``--rate`` lines/s in all) for ``--minutes``; a MutationObserver in each
   page notes the frame in which each line's text appears. Latency = that moment − just before the
   line's write (one clock: the machine's). Floor: the same lines' envelopes reaching a plain
   HTTP client of ``/api/events`` (the watcher, Redis and the server's stream, no page work). The
   server's RSS is sampled every ``--rss-every`` seconds.

    python -m scripts.bench.web                      # about 4 minutes
    python -m scripts.bench.web --minutes 15         # the long run for RSS
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from playwright.sync_api import sync_playwright

from aggregator.keys import Keys
from aggregator.searchindex import SearchIndex
from aggregator.store import Store
from devtools.agg import HOST, REPO, agg_env, run_agg
from devtools.browser import launch
from devtools.redisproc import RedisProcess

OBSERVE = """() => {
  window.benchSeen = {};
  const pending = [];
  new MutationObserver((muts) => {
    for (const m of muts) for (const n of m.addedNodes) {
      const marks = (n.textContent || "").match(/bench-[0-9]+-[0-9]+/g) || [];
      for (const mk of marks) if (!(mk in window.benchSeen) && !pending.includes(mk)) pending.push(mk);
    }
    if (pending.length) requestAnimationFrame(() => {
      const t = performance.timeOrigin + performance.now();
      for (const mk of pending.splice(0)) window.benchSeen[mk] = t;
    });
  }).observe(document.getElementById("events"), { childList: true, subtree: true });
}"""
"""Installed in each page (through the DevTools protocol, not a page script): when each line shows."""

NO_THROTTLE = [
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]
"""Twenty tabs are open at once: none of them is to be treated as a background tab."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record(session: str, n: int, text: str, *, kind: str = "user", at: str | None = None) -> dict[str, Any]:
    """A transcript record as Claude Code writes it (user prompt or assistant reply)."""
    rec: dict[str, Any] = {
        "parentUuid": None,
        "isSidechain": False,
        "userType": "external",
        "cwd": "/home/user/bench",
        "sessionId": session,
        "version": "2.1.39",
        "type": kind,
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{session}/{n}")),
        "timestamp": at or now_iso(),
    }
    if kind == "user":
        rec["message"] = {"role": "user", "content": text}
    else:
        rec["requestId"] = f"req_{session[:8]}_{n}"
        rec["message"] = {
            "id": f"msg_{session[:8]}_{n}",
            "model": "claude-opus-4-6",
            "role": "assistant",
            "type": "message",
            "content": [{"type": "text", "text": text}],
            "usage": {"input_tokens": 10, "output_tokens": 50, "cache_read_input_tokens": 1000},
        }
    return rec


def long_record(session: str, n: int) -> dict[str, Any]:
    """Record ``n`` of the long conversation: prompts, replies with markdown, tool calls and results."""
    at = f"2026-01-{1 + n // 200 % 28:02d}T{n // 60 % 24:02d}:{n % 60:02d}:00.000Z"
    if n % 4 == 0:
        return record(session, n, f"Question {n}: how does part {n} of the system work? Explain briefly.", at=at)
    if n % 4 == 1:
        rec = record(session, n, "", kind="assistant", at=at)
        rec["message"]["content"] = [
            {"type": "text", "text": f"Let me look at `part_{n}.py`."},
            {"type": "tool_use", "id": f"toolu_{n}", "name": "Read", "input": {"file_path": f"/src/part_{n}.py"}},
        ]
        return rec
    if n % 4 == 2:
        rec = record(session, n, "", at=at)
        body = "\n".join(f"{i:4d}  def handler_{i}(event):  # part {n}" for i in range(40))
        rec["message"]["content"] = [{"type": "tool_result", "tool_use_id": f"toolu_{n - 1}", "content": body}]
        return rec
    text = f"## Part {n}\n\nIt **reads** events and *writes* them:\n\n```python\nprint({n})\n```\n\n- one\n- two\n"
    return record(session, n, text, kind="assistant", at=at)


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        for rec in records:
            f.write(json.dumps(rec, separators=(",", ":")).encode() + b"\n")


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def summary(values: list[float]) -> str:
    return f"p50 {pct(values, 50):7.1f} ms  p99 {pct(values, 99):7.1f} ms  max {max(values):7.1f} ms  (n={len(values)})"


def timed_gets(http: httpx.Client, path: str, n: int) -> list[float]:
    for _ in range(3):
        http.get(path).raise_for_status()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        http.get(path).raise_for_status()
        out.append(1000 * (time.perf_counter() - t0))
    return out


def browser_load(page: Any, url: str, n: int) -> tuple[list[float], list[float]]:
    """(response end, load event) in ms from navigation start, ``n`` navigations."""
    ends, loads = [], []
    for _ in range(n):
        page.goto(url, wait_until="load")
        t = page.evaluate(
            "() => { const e = performance.getEntriesByType('navigation')[0]; return [e.responseEnd, e.loadEventEnd]; }"
        )
        ends.append(t[0])
        loads.append(t[1])
    return ends, loads


class EnvelopeClock(threading.Thread):
    """The floor: when each line's envelope reaches a plain client of ``/api/events``."""

    def __init__(self, base: str, token: str, ids: dict[str, str], since: int) -> None:
        super().__init__(daemon=True)
        self.base, self.token, self.ids, self.since = base, token, ids, since
        self.seen: dict[str, float] = {}
        self.ready = threading.Event()

    def run(self) -> None:
        headers = {"authorization": f"Bearer {self.token}"}
        with (
            httpx.Client(base_url=self.base, timeout=httpx.Timeout(10, read=None)) as http,
            http.stream("GET", "/api/events", params={"since": self.since}, headers=headers) as res,
        ):
            self.ready.set()
            for line in res.iter_lines():
                if line.startswith("data:"):
                    env = json.loads(line[5:])
                    mark = self.ids.get(env["id"])
                    if mark is not None:
                        self.seen.setdefault(mark, time.time())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conversations", type=int, default=2000)
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--rate", type=float, default=20.0, help="appended lines per second, all sessions together")
    ap.add_argument("--minutes", type=float, default=2.0, help="length of the live phase")
    ap.add_argument("--rss-every", type=float, default=30.0)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}

    with tempfile.TemporaryDirectory(prefix="agg-bench-web-") as tmp_name:
        tmp = Path(tmp_name)
        server = RedisProcess(tmp / "redis").start()
        env = agg_env(server, tmp)
        projects = tmp / "claude" / "projects"
        t0 = time.perf_counter()
        for i in range(args.conversations):
            s = str(uuid.uuid5(uuid.NAMESPACE_URL, f"small/{i}"))
            at = f"2026-01-{1 + i % 28:02d}T10:{i % 60:02d}:00.000Z"
            recs = [
                record(s, n, f"Conversation {i}, message {n}", kind="user" if n % 2 == 0 else "assistant", at=at)
                for n in range(6)
            ]
            write_jsonl(projects / f"-home-user-p{i % 20}" / f"{s}.jsonl", recs)
        long_session = str(uuid.uuid5(uuid.NAMESPACE_URL, "long"))
        write_jsonl(
            projects / "-home-user-long" / f"{long_session}.jsonl",
            [long_record(long_session, n) for n in range(args.messages)],
        )
        run_agg(["ingest"], env, timeout=900)
        print(
            f"store: {args.conversations} + 1 conversations ({args.messages} messages in the long one), "
            f"written and ingested in {time.perf_counter() - t0:.1f} s"
        )

        watch = subprocess.Popen(
            [sys.executable, "-m", "cli", "watch"],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp / "watch.log", "wb"),  # noqa: SIM115 - lives with the process
        )
        started = time.perf_counter()
        serve = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", "--port", "0"],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=open(tmp / "serve.log", "wb"),  # noqa: SIM115 - lives with the process
        )
        try:
            assert serve.stdout is not None
            url = serve.stdout.readline().decode().strip()
            base, token = url.split("/?")[0], url.rsplit("token=", 1)[1]
            proc = psutil.Process(serve.pid)
            store = Store(server.client(), Keys("agg"), HOST)
            index = SearchIndex.open(store, tmp / "data")
            while index.checkpoint() < store.last_seq():  # the server's indexer takes the store in first
                time.sleep(0.05)
            indexed_s = time.perf_counter() - started
            index.close()
            with httpx.Client(base_url=base, headers={"authorization": f"Bearer {token}"}, timeout=60) as http:
                search_ms = timed_gets(http, "/api/search?q=message", args.requests)
                floor = timed_gets(http, "/static/app.css", args.requests)
                listing = timed_gets(http, "/", args.requests)
                first = timed_gets(http, f"/conversations/{long_session}", args.requests)
                size = len(http.get("/").content)
            print(f"\nthe server's indexer took in all {store.last_seq():,} lines {indexed_s:.1f} s after its start")
            print(f"GET /api/search?q=message           {summary(search_ms)}")
            print(f"GET /static/app.css (floor)        {summary(floor)}")
            print(f"GET / ({args.conversations + 1} conversations, {size // 1024} KB) {summary(listing)}")
            print(f"GET /conversations/<{args.messages} messages>  {summary(first)}")
            report["http"] = {"floor_ms": floor, "list_ms": listing, "long_ms": first, "list_bytes": size}
            report["search"] = {"indexed_s": indexed_s, "search_ms": search_ms}

            with sync_playwright() as p:
                browser = launch(p, extra_args=NO_THROTTLE)
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                page = context.new_page()
                page.goto(url)
                ends, loads = browser_load(page, base + "/", 10)
                lends, lloads = browser_load(page, f"{base}/conversations/{long_session}", 10)
                print(
                    f"\nbrowser: the list      response end {summary(ends)}\n"
                    f"                       load event   {summary(loads)}"
                )
                print(
                    f"browser: long conv.    response end {summary(lends)}\n"
                    f"                       load event   {summary(lloads)}"
                )
                report["browser"] = {
                    "list_end_ms": ends,
                    "list_load_ms": loads,
                    "long_end_ms": lends,
                    "long_load_ms": lloads,
                }
                report["live"] = live_phase(args, projects, base, token, browser, proc)
                browser.close()
        finally:
            for p_ in (serve, watch):
                p_.terminate()
                p_.wait(timeout=30)
            server.stop()
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


def live_phase(args: Any, projects: Path, base: str, token: str, browser: Any, proc: psutil.Process) -> dict[str, Any]:
    sessions = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"live/{i}")) for i in range(args.sessions)]
    paths = [projects / "-home-user-live" / f"{s}.jsonl" for s in sessions]
    for s, path in zip(sessions, paths, strict=True):
        write_jsonl(path, [record(s, 0, "first line")])
    with httpx.Client(base_url=base, headers={"authorization": f"Bearer {token}"}) as http:
        deadline = time.monotonic() + 60
        while any(http.get(f"/api/conversations/{s}").status_code != 200 for s in sessions):
            if time.monotonic() > deadline:
                raise SystemExit("the live sessions never arrived")
            time.sleep(0.2)
        head = int(http.get("/api/status").json()["seq"])  # the floor's stream starts here: none missed
    pages = []
    for s in sessions:
        # One browser context (a window of its own, with its own connections) per page: a browser
        # holds at most six connections to one server, and each open page keeps one for its stream.
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.goto(f"{base}/conversations/{s}?token={token}")  # a new context has no cookie yet
        page.wait_for_selector("#live[data-state=live]")
        page.evaluate(OBSERVE)
        pages.append(page)
    ids: dict[str, str] = {}
    clock = EnvelopeClock(base, token, ids, head)
    clock.start()
    clock.ready.wait(30)
    written: dict[str, float] = {}
    rss: list[tuple[float, int]] = []
    step = 1.0 / args.rate
    start = time.monotonic()
    end = start + args.minutes * 60
    next_rss = start
    n = 0
    with_files = [open(p, "ab", buffering=0) for p in paths]  # noqa: SIM115 - closed below
    try:
        while time.monotonic() < end:
            i = n % len(sessions)
            k = n // len(sessions) + 1
            mark = f"bench-{i}-{k}"
            rec = record(sessions[i], k, f"line {mark} of a live session")
            ids[rec["uuid"]] = mark
            data = json.dumps(rec, separators=(",", ":")).encode() + b"\n"
            written[mark] = time.time()
            with_files[i].write(data)
            n += 1
            now = time.monotonic()
            if now >= next_rss:
                rss.append((now - start, proc.memory_info().rss))
                next_rss += args.rss_every
            time.sleep(max(0.0, start + n * step - time.monotonic()))
    finally:
        for f in with_files:
            f.close()
    pages[0].wait_for_timeout(5000)  # the last lines' grace
    rss.append((time.monotonic() - start, proc.memory_info().rss))
    seen: dict[str, float] = {}
    for pg in pages:
        seen.update({k: v / 1000 for k, v in pg.evaluate("window.benchSeen").items()})
    browser_ms = [1000 * (seen[m] - t) for m, t in written.items() if m in seen]
    floor_ms = [1000 * (clock.seen[m] - t) for m, t in written.items() if m in clock.seen]
    missing = len(written) - len(browser_ms)
    print(
        f"\nlive: {args.sessions} sessions, {args.sessions} pages open, "
        f"{n} lines in {args.minutes:g} min ({args.rate:g}/s)"
    )
    print(f"append → envelope at an /api/events client (floor)   {summary(floor_ms)}")
    print(f"append → visible on its open page (browser)          {summary(browser_ms)}  missing {missing}")
    mb = [(t, r / 2**20) for t, r in rss]
    warm = [r for t, r in mb if t >= 60] or [r for _, r in mb]
    slope = (
        (statistics.linear_regression([t for t, _ in mb if t >= 60], warm).slope * 60)
        if len(warm) > 2
        else float("nan")
    )
    print(f"server RSS (MB) every {args.rss_every:g} s:", " ".join(f"{r:.0f}" for _, r in mb))
    print(
        f"server RSS after the first minute: min {min(warm):.1f}, max {max(warm):.1f}, last {warm[-1]:.1f} MB; "
        f"trend {slope:+.2f} MB/min"
    )
    return {"lines": n, "browser_ms": browser_ms, "floor_ms": floor_ms, "missing": missing, "rss_mb": mb}


if __name__ == "__main__":
    sys.exit(main())
