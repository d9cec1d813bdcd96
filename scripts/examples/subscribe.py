#!/usr/bin/env python3
"""Subscribe to agg's events with catch-up: every stored event after --since, then live ones.

The same Redis and namespace as the `agg` command (AGG_REDIS_URL, AGG_NAMESPACE, AGG_DATA_DIR for
the embedded server). Prints one line per event: seq, conversation, type, id (on a Redis Cluster
the seq is per bucket and printed as bucket:seq).

    python -m scripts.examples.subscribe --since 0                 # everything, then live
    python -m scripts.examples.subscribe --conversation 4d5611e5   # one conversation, live only
    python -m scripts.examples.subscribe --since 3:120,7:55        # Redis Cluster: after a position
"""

from __future__ import annotations

import argparse
import contextlib

from aggregator.config import Settings
from aggregator.connection import open_redis
from aggregator.live.subscribe import Subscription


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--since",
        type=lambda v: int(v) if v.isdigit() else v,
        default=None,
        help="start after this seq (0 = from the first event); on a Redis Cluster 0 or bucket:seq,…",
    )
    ap.add_argument("--conversation", default=None, help="only this conversation's events")
    ap.add_argument("--count", type=int, default=0, help="stop after this many events (0 = never)")
    args = ap.parse_args()

    settings = Settings.from_env()
    conn = open_redis(settings)  # --redis-url / AGG_REDIS_URL, else the embedded server
    sub = Subscription(conn.client, settings.keys, since=args.since, conversation=args.conversation)
    for n, env in enumerate(sub, start=1):
        # env: seq, conv, conv_seq, id, type, ts, agent, revision (and bucket on a Redis Cluster)
        # — in increasing seq (per bucket), each once
        seq = f"{env['bucket']}:{env['seq']}" if "bucket" in env else env["seq"]
        print(seq, env["conv"], env["type"], env["id"], flush=True)
        if n == args.count:
            break


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
