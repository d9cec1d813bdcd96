"""Helpers of the turn tests: transcripts to ingest, real `agg worker` processes, waiting."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aggregator.ingest import ingest
from aggregator.layout import classify
from aggregator.store import Store
from aggregator.text import now_iso
from devtools.agg import agg_env, wait_until
from devtools.redisproc import RedisProcess
from workers.history import TURN_TYPE, _newest_first

FAST = {
    "AGG_TURN_DEBOUNCE_S": "0.2",
    "AGG_TURN_COOLDOWN_S": "0",
    "AGG_TURN_DISPATCH_INTERVAL_S": "0.05",
    "AGG_TURN_RECONCILE_INTERVAL_S": "0.2",
    "AGG_TURN_LEASE_S": "1.5",
    "AGG_TURN_PARK_S": "0.5",
    "AGG_TURN_QUEUED_GRACE_S": "3",
    "AGG_LLM_BACKOFF_S": "0.05",
    "AGG_LLM_TIMEOUT_S": "1",
    "AGG_LLM_RPM": "0",
    "AGG_LLM_TPM": "0",
    "AGG_TURN_CONCURRENCY": "8",
}
"""Worker settings that make the tests quick (same mechanisms, shorter times)."""


def record(conv: str, text: str | list[Any], role: str = "user", ts: str | None = None) -> dict[str, Any]:
    return {
        "type": role,
        "uuid": str(uuid.uuid4()),
        "sessionId": conv,
        "timestamp": ts or now_iso(),
        "message": {"role": role, "content": text},
    }


@dataclass
class Transcripts:
    """Transcript files under ``<root>/claude/projects/-proj/``, ingested in-process."""

    store: Store
    root: Path
    appended: dict[str, int] = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        d = self.root / "claude" / "projects" / "-proj"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def append(self, conv: str, *records: dict[str, Any], commit: bool = True) -> None:
        """Append ``records`` to ``conv``'s file and (``commit``) ingest that file."""
        path = self.dir / f"{conv}.jsonl"
        with open(path, "a") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
        self.appended[conv] = self.appended.get(conv, 0) + len(records)
        if commit:
            self.ingest(conv)

    def ingest(self, *convs: str) -> None:
        sources = [classify(str(self.dir / f"{c}.jsonl")) for c in convs]
        ingest(self.store, [s for s in sources if s is not None], project=False)

    def burst(self, conv: str, b: int, lines: int) -> None:
        """``lines`` messages (alternating roles) of burst ``b``, each ingested as its own batch."""
        for i in range(lines):
            role = "user" if i % 2 == 0 else "assistant"
            self.append(conv, record(conv, f"{conv} b{b} l{i} talks about item {i}", role))


def turn_records(store: Store, conv: str) -> list[dict[str, Any]]:
    """The conversation's turn records (parsed), in order."""
    out = []
    for _, body in store.replay(conv):
        obj = json.loads(body)
        if obj.get("type") == TURN_TYPE:
            out.append(obj)
    return out


def last_event_seq(store: Store, conv: str) -> int:
    """Seq of the conversation's newest entry that is not a turn event."""
    for entry, env in _newest_first(store, conv, 0):
        if env["type"] != TURN_TYPE:
            return entry.seq
    return 0


@dataclass
class WorkerProc:
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def logs(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@dataclass
class Workers:
    """Factory of real `agg worker` processes against the test Redis; stops them at teardown."""

    redis_server: RedisProcess
    """The Redis of the turn queue (the store's too, unless :meth:`env` says otherwise)."""
    tmp_path: Path
    procs: list[WorkerProc] = field(default_factory=list)
    queue: str = "agg-turns"
    """The RQ queue the workers register on."""

    def env(self, **extra: str) -> dict[str, str]:
        return agg_env(self.redis_server, self.tmp_path, **{**FAST, **extra})

    def start(self, n: int = 1, *args: str, **extra: str) -> list[WorkerProc]:
        started = []
        for _ in range(n):
            i = len(self.procs)
            out, err = self.tmp_path / f"worker{i}.out", self.tmp_path / f"worker{i}.err"
            proc = subprocess.Popen(
                [sys.executable, "-m", "cli", "worker", *args],
                env=self.env(**extra),
                stdout=open(out, "wb"),  # noqa: SIM115 (closed with the process)
                stderr=open(err, "wb"),  # noqa: SIM115
            )
            wp = WorkerProc(proc, out, err)
            self.procs.append(wp)
            started.append(wp)
        client = self.redis_server.client()
        try:
            wait_until(
                lambda: client.scard(f"rq:workers:{self.queue}") >= len(self.live()) or self._dead(started),
                timeout=60,
                what="workers to register",
            )
        finally:
            client.close()
        dead = self._dead(started)
        assert not dead, f"worker exited at start: {dead[0].logs()[-2000:]}"
        return started

    def live(self) -> list[WorkerProc]:
        return [w for w in self.procs if w.proc.poll() is None]

    @staticmethod
    def _dead(ws: list[WorkerProc]) -> list[WorkerProc]:
        return [w for w in ws if w.proc.poll() is not None]

    def logs(self) -> str:
        return "\n".join(w.logs() for w in self.procs)

    def stop_all(self) -> None:
        for w in self.procs:
            w.stop()
