"""Start-up: ``agg --help``, ``agg status --json`` and ``agg usage --json``, whole commands.

Each command runs as a real subprocess — the ``agg`` console script next to this interpreter, as a
user runs it — against a throwaway redis-server (unix socket, a password) holding the shared corpus
ingested and projected, and again against the embedded server of a throwaway data dir holding the
same. The floor, ``python -c pass`` with the same interpreter, runs in the same rounds: every
round runs every command once, in turn, so that the machine's load falls on all of them alike.
Prints each command's median and [min–max] wall time in ms, and the median over the floor.

Then the options for the Redis client, each imported alone in a fresh interpreter (ms of
``import``, median of the same rounds): any part of redis-py (``redis.connection``: its package
imports its asyncio client first, whatever is asked for), hiredis' parser, and agg's quick client
with all it imports.

agg's own modules are byte-compiled first (``compileall``, as pip does when it installs a wheel):
where ``PYTHONDONTWRITEBYTECODE`` is set and nothing compiled them, every run compiles them again.

The quick rows run with ``AGG_QUICK=only`` (the command fails rather than fall back to redis-py:
the figure is the quick path's), the ``redis-py`` rows with ``AGG_QUICK=0`` (the path every
command took before the quick client, for comparison).

Usage::

    python -m scripts.bench.cli --runs 31
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devtools.agg import REPO, agg_env, embedded_env
from devtools.gen_corpus import default_source
from devtools.redisproc import RedisProcess

AGG = Path(sys.executable).parent / "agg"


def _agg_argv() -> list[str]:
    return [str(AGG)] if AGG.exists() else [sys.executable, "-m", "cli"]


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) ms of one run of ``argv``."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = (time.perf_counter() - t0) * 1000
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {err.read().decode()[-400:]}")
    return wall, (usage.ru_utime + usage.ru_stime) * 1000


IMPORTS = {
    "redis (redis-py)": "redis",
    "redis.connection alone": "redis.connection",
    "rq": "rq",
    "hiredis": "hiredis",
    "aggregator.quickredis (hiredis, socket, agg's URL parsing)": "aggregator.quickredis",
    "click": "click",
}
"""What each option costs to import: label → module."""


def _import_ms(module: str, env: dict[str, str]) -> float:
    code = f"import time\nt = time.perf_counter()\nimport {module}\nprint((time.perf_counter() - t) * 1000)"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=True)
    return float(out.stdout)


def _prepare(env: dict[str, str]) -> None:
    for args in (["ingest"], ["usage", "--json"]):  # usage catches the projections up
        proc = subprocess.run([*_agg_argv(), *args], env=env, cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"agg {' '.join(args)} failed: {proc.stderr}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=31, help="rounds (each runs every command once)")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = ap.parse_args()
    corpus = default_source()
    if not corpus.is_dir():
        raise SystemExit(f"no corpus at {corpus}")
    agg = _agg_argv()
    subprocess.run([sys.executable, "-m", "compileall", "-q", "aggregator", "workers", "cli"], cwd=REPO, check=True)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        shutil.copytree(corpus, tmp / "claude" / "projects")
        emb_dir = tmp / "emb"
        shutil.copytree(corpus, emb_dir / "claude" / "projects")
        emb_env = embedded_env(emb_dir)
        with RedisProcess(tmp / "redis", password="bench") as server:
            env = agg_env(server, tmp)
            _prepare(env)
            _prepare(emb_env)  # starts the embedded server of the throwaway data dir
            try:
                quick = {**env, "AGG_QUICK": "only"}
                full = {**env, "AGG_QUICK": "0"}
                cases: dict[str, tuple[list[str], dict[str, str]]] = {
                    "python -c pass (floor)": ([sys.executable, "-c", "pass"], env),
                    "agg --help": ([*agg, "--help"], env),
                    "agg status --json": ([*agg, "status", "--json"], quick),
                    "agg usage --json": ([*agg, "usage", "--json"], quick),
                    "agg status --json (embedded Redis)": (
                        [*agg, "status", "--json"],
                        {**emb_env, "AGG_QUICK": "only"},
                    ),
                    "agg usage --json (embedded Redis)": ([*agg, "usage", "--json"], {**emb_env, "AGG_QUICK": "only"}),
                    "agg status --json (redis-py: AGG_QUICK=0)": ([*agg, "status", "--json"], full),
                    "agg usage --json (redis-py: AGG_QUICK=0)": ([*agg, "usage", "--json"], full),
                }
                wall: dict[str, list[float]] = {name: [] for name in cases}
                cpu: dict[str, list[float]] = {name: [] for name in cases}
                imports: dict[str, list[float]] = {name: [] for name in IMPORTS}
                for argv, e in cases.values():  # one warm-up each: the page cache, .pyc files
                    _run(argv, e)
                load0 = os.getloadavg()[0]
                for _ in range(args.runs):
                    for name, (argv, e) in cases.items():
                        w, c = _run(argv, e)
                        wall[name].append(w)
                        cpu[name].append(c)
                    for name, module in IMPORTS.items():
                        imports[name].append(_import_ms(module, env))
                load1 = os.getloadavg()[0]
            finally:
                subprocess.run([*agg, "redis", "stop"], env=emb_env, cwd=REPO, capture_output=True)
    _report(args, wall, cpu, (load0, load1))
    width = max(len(n) for n in imports)
    print(f"\n{'import, in a fresh interpreter':<{width}}  ms: median [min–max]")
    for name, ts in imports.items():
        print(f"{name:<{width}}  {statistics.median(ts):.1f} [{min(ts):.1f}–{max(ts):.1f}]")
    if args.json:
        print(json.dumps({name: round(statistics.median(ts), 1) for name, ts in imports.items()}))


def _report(
    args: argparse.Namespace, wall: dict[str, list[float]], cpu: dict[str, list[float]], load: tuple[float, float]
) -> None:
    floor_name = next(iter(wall))
    floor = statistics.median(wall[floor_name])
    print(
        f"{args.runs} rounds of {' '.join(_agg_argv()[-1:])}; load average {load[0]:.1f} at the start, "
        f"{load[1]:.1f} at the end (2 cores: above 2, every figure is inflated)"
    )
    width = max(len(n) for n in wall)
    print(f"{'':<{width}}  {'wall ms: median [min–max]':<27} {'over floor':>10}  {'CPU ms: median':>14}")
    report = {}
    for name, ts in wall.items():
        med, cmed = statistics.median(ts), statistics.median(cpu[name])
        over = "" if name == floor_name else f"+{med - floor:.0f}"
        spread = f"{med:.0f} [{min(ts):.0f}–{max(ts):.0f}]"
        print(f"{name:<{width}}  {spread:<27} {over:>10}  {cmed:14.0f}")
        report[name] = {
            "wall_median_ms": round(med, 1),
            "wall_min_ms": round(min(ts), 1),
            "wall_max_ms": round(max(ts), 1),
            "cpu_median_ms": round(cmed, 1),
        }
    if args.json:
        print(json.dumps({"runs": args.runs, "load": load, "commands": report}))


if __name__ == "__main__":
    main()
