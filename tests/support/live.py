"""Helpers for the live-service tests: real `agg` processes, waiting, appending transcript lines."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import psutil

from aggregator.lifecycle import PARENT_ENV
from aggregator.store import Store
from devtools.agg import REPO
from tests.support.records import line


class Reader(threading.Thread):
    """Collects the JSON lines a process prints."""

    def __init__(self, stream: Any) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.envs: list[dict[str, Any]] = []

    def run(self) -> None:
        for raw in self.stream:
            self.envs.append(json.loads(raw))


def gone(pid: int) -> bool:
    """Whether process ``pid`` has ended: no such process, or a zombie its parent has not reaped
    yet (the container's first process may reap late, or never)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


class Agg:
    """A real long-running `agg` process (watch, writer, tail, run) started by a test."""

    def __init__(
        self, args: list[str], env: dict[str, str], logdir: Path, *, name: str | None = None, prefix: Sequence[str] = ()
    ) -> None:
        self.args = args
        self.prefix = list(prefix)  # e.g. tests.support.faults.NO_DAC
        self.env = dict(env)
        # If the test process dies, the service stops by itself (no stray watchers between tests).
        self.env[PARENT_ENV] = str(os.getpid())
        self.name = name or args[0]
        self.logdir = logdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, *, stdout: int | None = None) -> Agg:
        self.starts += 1
        err = open(self.logdir / f"{self.name}.{self.starts}.log", "wb")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "cli", *self.args],
            env=self.env,
            cwd=REPO,
            stdout=stdout if stdout is not None else subprocess.DEVNULL,
            stderr=err,
        )
        err.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the process and wait for it; returns its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
                raise AssertionError(f"agg {self.name} did not stop within {timeout} s") from None
        return self.proc.returncode

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logdir.glob(f"{self.name}.*.log")))

    def __enter__(self) -> Agg:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        if self.alive():
            with contextlib.suppress(AssertionError):
                self.stop(timeout=10)
        self.kill9()


@contextlib.contextmanager
def running(*procs: Agg) -> Iterator[None]:
    try:
        for p in procs:
            if p.proc is None:
                p.start()
        yield
    finally:
        for p in procs:
            p.__exit__()


def record(session: str, n: int, *, kind: str = "user", text: str | None = None, **extra: Any) -> dict[str, Any]:
    """A transcript record of ``session`` with uuid ``<session>-<n>``."""
    obj: dict[str, Any] = {
        "type": kind,
        "uuid": f"{session}-{n}",
        "sessionId": session,
        "timestamp": f"2025-06-01T10:{n // 60 % 60:02d}:{n % 60:02d}.000Z",
        "message": {"role": kind, "content": text if text is not None else f"line {n} of {session}"},
    }
    obj.update(extra)
    return obj


def append(path: Path, data: bytes) -> None:
    """Append ``data`` with one write (what Claude Code does per line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        f.write(data)


def replayed(store: Store) -> dict[str, list[bytes]]:
    """Every conversation's stored events (newest bytes), in conversation order."""
    return {conv: [body for _, body in store.replay(conv)] for conv in store.conversations()}


def file_lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    return [ln for ln in data[: data.rfind(b"\n") + 1].split(b"\n")[:-1] if ln.strip()]


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def state(data_dir: Path, name: str, ns: str = "agg") -> dict[str, Any]:
    try:
        data = json.loads((data_dir / "state" / f"{name}-{ns}.json").read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


class Appender(threading.Thread):
    """Appends ``count`` records to one session file, optionally splitting each line in two writes."""

    def __init__(
        self, path: Path, session: str, count: int, *, pause: float = 0.01, split: bool = False, first: int = 0
    ) -> None:
        super().__init__(daemon=True)
        self.path, self.session, self.count, self.pause, self.split = path, session, count, pause, split
        self.first = first
        self.written = 0
        self.stop_flag = threading.Event()

    def run(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab", buffering=0) as f:
            for i in range(self.first, self.first + self.count):
                if self.stop_flag.is_set():
                    return
                data = line(record(self.session, i, kind="user" if i % 2 == 0 else "assistant"))
                if self.split and i % 3 == 0:
                    half = len(data) // 2
                    f.write(data[:half])
                    time.sleep(self.pause)  # the watcher may look now: half a line must wait
                    f.write(data[half:])
                else:
                    f.write(data)
                self.written += 1
                time.sleep(self.pause)


class Poller(threading.Thread):
    """Reads current.json in a tight loop, as a consumer would, and records what it saw."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.stop = threading.Event()
        self.reads = 0
        self.seqs: list[int] = []
        self.bad: list[str] = []
        self.modes: set[int] = set()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with open(self.path, "rb") as f:
                    data = f.read()
                    self.modes.add(stat.S_IMODE(os.fstat(f.fileno()).st_mode))
            except FileNotFoundError:
                continue
            self.reads += 1
            try:
                doc = orjson.loads(data)
            except orjson.JSONDecodeError as e:
                self.bad.append(f"{len(data)} bytes: {e}")
                continue
            if not self.seqs or doc["seq"] != self.seqs[-1]:
                self.seqs.append(doc["seq"])
