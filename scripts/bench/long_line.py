"""An unterminated long last line that keeps growing: what it costs the watcher.

A real ``agg watch`` on a throwaway redis-server; one transcript ends in an unterminated line of
``--mb`` MB, and 1 KB is appended to it every ``--every`` seconds for ``--seconds`` seconds (a
tool writing a huge line in pieces). Prints the watcher's CPU seconds and the bytes it read
(``/proc/<pid>/io`` ``rchar``) over that time, next to the bytes appended — the floor: a watcher
that reads each byte once would read about that much (plus small fingerprints), one that re-reads
the line from its start reads ``--mb`` MB per look.

Usage::

    python -m scripts.bench.long_line --mb 60 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from devtools.agg import REPO, agg_env, wait_until
from devtools.redisproc import RedisProcess


def _rchar(pid: int) -> int:
    for ln in Path(f"/proc/{pid}/io").read_text().splitlines():
        if ln.startswith("rchar:"):
            return int(ln.split()[1])
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=60, help="size of the unterminated line (MB)")
    ap.add_argument("--seconds", type=float, default=10.0, help="how long to keep appending")
    ap.add_argument("--every", type=float, default=0.1, help="seconds between 1 KB appends")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        with RedisProcess(tmp / "redis", password="bench") as server:
            env = agg_env(server, tmp)
            path = tmp / "claude" / "projects" / "p" / "long.jsonl"
            path.parent.mkdir(parents=True)
            with open(path, "wb") as f:
                f.write(b'{"type":"user","uuid":"u0","sessionId":"long","message":{"role":"user","content":"hi"}}\n')
                f.write(b'{"type":"user","uuid":"u1","sessionId":"long","message":{"role":"user","content":"')
                f.write(b"x" * (args.mb << 20))
            argv = [sys.executable, "-m", "cli", "watch"]
            proc = subprocess.Popen(argv, env=env, cwd=REPO, stderr=subprocess.DEVNULL)
            try:
                client = server.client()
                wait_until(lambda: client.get("agg:seq") == b"1", "the first line", timeout=120)
                time.sleep(1.0)  # the first sync has scanned the unterminated line
                watcher = psutil.Process(proc.pid)
                cpu0, read0 = sum(watcher.cpu_times()[:2]), _rchar(proc.pid)
                appended = 0
                end = time.monotonic() + args.seconds
                with open(path, "ab", buffering=0) as f:
                    while time.monotonic() < end:
                        appended += f.write(b"y" * 1024)
                        time.sleep(args.every)
                time.sleep(1.5)  # the last append's sync (the hot-file stat runs every second)
                cpu, read = sum(watcher.cpu_times()[:2]) - cpu0, _rchar(proc.pid) - read0
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    report = {
        "line_mb": args.mb,
        "seconds": args.seconds,
        "appended_bytes": appended,
        "watcher_cpu_s": round(cpu, 2),
        "watcher_read_bytes": read,
        "read_per_appended_byte": round(read / max(1, appended), 1),
    }
    print(
        f"{args.mb} MB unterminated line, 1 KB appended every {args.every:g} s for {args.seconds:g} s "
        f"({appended / 1024:.0f} KB): watcher {cpu:.2f} CPU-s, read {read / 1e6:.1f} MB "
        f"({report['read_per_appended_byte']} bytes read per byte appended; floor ~1)"
    )
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
