"""Supervised child ``agg`` processes: the one supervisor ``agg run`` and ``agg worker --count`` configure.

Each child is ``agg_argv(*args)`` (this interpreter, ``-m cli``; no reliance on PATH), started in
its own session with the environment it is given (:meth:`aggregator.config.Settings.to_env` plus
``AGG_PARENT_PID``, so it stops by itself if the supervisor dies; secrets travel there, never on
a command line). :class:`Children`

* reaps children that exited (:meth:`Children.reap`) and schedules their restart with a backoff
  (:class:`RestartPolicy`: ``first_s`` doubling up to ``cap_s``; at once after a child ran
  ``healthy_s``) — the caller decides first whether an exit is worth a restart (a usage error,
  exit 2, is not: it would only fail again);
* stops them all (:meth:`Children.stop`): one SIGTERM each (a warm stop: they commit what they
  hold), a wait of up to ``timeout`` seconds, then SIGKILL to each child's whole process group, so
  no grandchild (a forked helper) survives.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from aggregator import defaults
from aggregator.backoff import Backoff
from aggregator.lifecycle import PARENT_ENV, agg_argv


@dataclass(frozen=True)
class RestartPolicy:
    """When a child that exited is started again."""

    first_s: float = defaults.SUPERVISOR_RESTART_MIN_S
    cap_s: float = defaults.SUPERVISOR_RESTART_MAX_S
    healthy_s: float = defaults.SUPERVISOR_HEALTHY_S
    """A child that ran this long before exiting is restarted at once (its backoff resets)."""


@dataclass
class Child:
    """One supervised process."""

    name: str
    args: tuple[str, ...]
    backoff: Backoff
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    exits: list[int] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass(frozen=True)
class Exit:
    """A child that exited: its exit code, and in how many seconds it will be started again."""

    child: Child
    code: int
    restart_in: float


class Children:
    """Child ``agg`` processes; see the module docstring."""

    def __init__(
        self,
        env: Mapping[str, str],
        policy: RestartPolicy | None = None,
        *,
        log: logging.Logger | None = None,
        stdout: IO[Any] | int | None = None,
        stderr: IO[Any] | int | None = None,
    ) -> None:
        self.env = {**env, PARENT_ENV: str(os.getpid())}
        self.policy = policy or RestartPolicy()
        self.log = log or logging.getLogger("agg.run")
        self.stdout = stdout
        self.stderr = stderr
        self.children: list[Child] = []

    def add(self, name: str, *args: str) -> Child:
        """Declare a child (started by :meth:`start`)."""
        child = Child(name, args, Backoff(self.policy.first_s, self.policy.cap_s))
        self.children.append(child)
        return child

    def start(self) -> Children:
        """Start every child not running."""
        for child in self.children:
            if not child.running:
                self._spawn(child)
        return self

    def _spawn(self, child: Child) -> None:
        child.proc = subprocess.Popen(
            agg_argv(*child.args),
            env=self.env,
            stdout=self.stdout,
            stderr=self.stderr,
            start_new_session=True,
        )
        child.started_at = time.monotonic()
        child.restart_at = None
        self.log.debug("started %s (pid %d)", child.name, child.proc.pid)

    def reap(self) -> list[Exit]:
        """Children that exited since the last call, each with its restart scheduled."""
        out = []
        now = time.monotonic()
        for child in self.children:
            proc = child.proc
            if proc is None or proc.poll() is None:
                continue
            code = proc.returncode
            child.exits.append(code)
            child.proc = None
            if now - child.started_at >= self.policy.healthy_s:
                child.backoff.reset()
                wait = 0.0
            else:
                wait = child.backoff.fail()
            child.restart_at = now + wait
            out.append(Exit(child, code, wait))
        return out

    def restart_due(self) -> list[Child]:
        """Start the children whose restart is due; returns them."""
        now = time.monotonic()
        due = [c for c in self.children if c.proc is None and c.restart_at is not None and now >= c.restart_at]
        for child in due:
            self._spawn(child)
        return due

    def stop(self, timeout: float = defaults.SUPERVISOR_STOP_TIMEOUT_S) -> list[int | None]:
        """One SIGTERM each, wait up to ``timeout`` s, then SIGKILL each child's process group;
        returns the children's exit codes (None: never started)."""
        for child in self.children:
            child.restart_at = None
            if child.running:
                assert child.proc is not None
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.log.warning("%s did not stop within %.0f s; killing it", child.name, timeout)
        for child in self.children:
            if child.proc is None:
                continue
            # The child led its own session: kill its whole process group (forked helpers too).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(timeout=5)
        return [c.proc.returncode if c.proc is not None else (c.exits[-1] if c.exits else None) for c in self.children]
