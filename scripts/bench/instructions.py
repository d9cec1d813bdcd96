"""Instructions one ``agg ingest`` costs, counted by valgrind (callgrind ``Ir``), per source tree.

CPU seconds on a shared machine move by ±30 % from run to run (other jobs, steal time), so they
cannot show a change of a few per cent between two versions. Instruction counts are the same on
every run of the same code and input: this runs the real ``agg ingest`` of ``--corpus`` under
callgrind (``--trace-children``, so the forked projecting child is counted too) against a fresh
redis-server, once per ``--tree`` (a checkout of any version, e.g. a ``git worktree add --detach``),
and the same for the corpus' smallest file alone, whose counts it subtracts: the interpreter's
start and the imports (which the forked child carries in its count too) are set apart from what
the history costs. It prints, per tree, the instructions of the parent (reading, parsing,
committing), of the projecting child, and in total, and each one's change from the first tree.

Usage (valgrind must be installed; about 3 minutes per tree on the shared corpus)::

    git worktree add --detach /tmp/agg-before e170fbe
    python -m scripts.bench.instructions --tree /tmp/agg-before --tree .
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from aggregator.keys import Keys
from devtools.gen_corpus import default_source
from devtools.redisproc import RedisProcess

COLLECTED = re.compile(r"==(\d+)== Collected : (\d+)")
PARENT = re.compile(r"==(\d+)== Parent PID: (\d+)")


def _callgrind(tree: Path, args: list[str], env: dict[str, str], out: Path) -> list[int]:
    """Instructions of ``python -m cli ARGS`` run from ``tree``: the process's own first, then
    those of the processes it forked."""
    proc = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}/cg.%p",
            "--trace-children=yes",
            sys.executable,
            "-m",
            "cli",
            *args,
        ],
        cwd=tree,
        env={**env, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"agg {' '.join(args)} failed under valgrind in {tree}:\n{proc.stderr[-2000:]}")
    counts = {int(m.group(1)): int(m.group(2)) for m in COLLECTED.finditer(proc.stderr)}
    parents = {int(m.group(1)): int(m.group(2)) for m in PARENT.finditer(proc.stderr)}
    first = [pid for pid in counts if pid in parents]  # valgrind announces only the process it started
    return [counts[pid] for pid in first] + [ir for pid, ir in counts.items() if pid not in first]


def _ingest(tree: Path, corpus: Path) -> tuple[int, int, int]:
    """``(parent, child, events)`` of one ``agg ingest CORPUS`` into an empty Redis, run from ``tree``."""
    tmp = Path(tempfile.mkdtemp(prefix="agg-instr-"))
    server = RedisProcess(tmp / "redis", password="instr").start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGG_")}
        env.update(AGG_REDIS_URL=server.url, AGG_DATA_DIR=str(tmp / "data"))
        (tmp / "cg").mkdir()
        procs = _callgrind(tree, ["ingest", str(corpus)], env, tmp / "cg")
        events = int(server.client().hget(Keys("agg").stats, "events") or 0)
    finally:
        server.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    if len(procs) != 2:
        raise SystemExit(f"expected the ingest and its projecting child, got {procs}")
    return procs[0], procs[1], events


def measure(tree: Path, corpus: Path, small: Path) -> dict[str, Any]:
    """Instructions per process of ingesting ``corpus`` minus those of ingesting ``small`` (one
    file): what the history costs, without the interpreter's start and the imports — which a forked
    child also carries in its count (callgrind does not reset it at ``fork``)."""
    parent, child, events = _ingest(tree, corpus)
    parent0, child0, _ = _ingest(tree, small)
    return {"tree": str(tree), "parent": parent - parent0, "child": child - child0, "events": events}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", type=Path, action="append", required=True, help="a checkout of agg (repeatable)")
    ap.add_argument(
        "--corpus", type=Path, default=default_source(), help="a projects/ dir (default: the shared corpus)"
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="agg-instr-small-") as tmp:
        smallest = min(args.corpus.resolve().glob("*/*.jsonl"), key=lambda p: p.stat().st_size)
        small = Path(tmp) / "projects" / smallest.parent.name
        small.mkdir(parents=True)
        shutil.copy(smallest, small)
        rows = [measure(t.resolve(), args.corpus.resolve(), small.parent) for t in args.tree]
    if args.json:
        print(json.dumps({"corpus": str(args.corpus), "rows": rows}))
        return
    first = rows[0]
    print(f"instructions (callgrind Ir, millions) that agg ingest {args.corpus} costs beyond one small file:")
    print(f"{'tree':<40} {'parent':>9} {'child':>9} {'total':>9}  vs first: parent, child, total")
    for r in rows:
        total, first_total = r["parent"] + r["child"], first["parent"] + first["child"]
        change = ", ".join(
            f"{(a / b - 1) * 100:+.1f} %" for a, b in ((r["parent"], first["parent"]), (r["child"], first["child"]))
        )
        print(
            f"{r['tree'][-40:]:<40} {r['parent'] / 1e6:9.0f} {r['child'] / 1e6:9.0f} {total / 1e6:9.0f}  "
            f"{change}, {(total / first_total - 1) * 100:+.1f} %"
        )


if __name__ == "__main__":
    main()
