"""Single flight per conversation: a lease with a fencing epoch, renewed while the turn runs.

A turn holds its conversation's lease from :meth:`Fence.acquire` to its :meth:`Lease.commit` or
:meth:`Lease.release`; a heartbeat thread renews it every third of its lifetime. Both ends are
checked inside Redis against the exact lease value ``<epoch>:<token>`` and the conversation's
current epoch, so a holder that lost the lease — it was paused past the TTL and another worker
redid the turn (``tests/process/test_workers.py::test_paused_worker_cannot_commit_over_newer_turn``),
or its commit is retried after a lost reply — can never write.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from aggregator.keys import Keys
from aggregator.parse import Event, dumps
from workers import scripts

log = logging.getLogger("agg.turns")


class Fence:
    """The fenced turn-state operations of one namespace."""

    def __init__(self, client: redis.Redis, keys: Keys, heartbeat: Heartbeat | None = None) -> None:
        self.client = client
        self.keys = keys
        self._acquire = client.register_script(scripts.ACQUIRE)
        self._renew = client.register_script(scripts.RENEW)
        self._commit = client.register_script(scripts.COMMIT)
        self._release = client.register_script(scripts.RELEASE)
        self.heartbeat = heartbeat or Heartbeat()
        """Renews the leases taken here (the fences of a cluster store's buckets share one)."""

    def acquire(self, conv: str, gen: int, ttl_ms: int, holder: str) -> Lease | None:
        """The lease of ``conv`` for the job of generation ``gen``; None if that job is stale."""
        k = self.keys
        token = secrets.token_hex(8)
        call = scripts.acquire_call(
            turn=k.turn(conv),
            lease=k.lease(conv),
            queued=k.turns_queued,
            running=k.turns_running,
            stats=k.turns_stats,
            dirty=k.dirty,
            due=k.turns_due,
            gen=gen,
            token=token,
            lease_ms=ttl_ms,
            conv=conv,
            holder=holder,
        )
        res: Any = self._acquire(keys=call.keys, args=call.args)
        if res[0] != b"ok":
            return None
        epoch = int(res[1])
        last = res[3]
        return Lease(
            self,
            conv,
            epoch,
            f"{epoch}:{token}",
            ttl_ms,
            done=int(res[2]),
            last=_json_dict(last) if last else None,
        )


class Heartbeat:
    """One thread per process renewing the leases it holds (started on first use, not per turn)."""

    def __init__(self) -> None:
        self._leases: set[Lease] = set()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None

    def add(self, lease: Lease) -> None:
        with self._lock:
            lease.renew_at = time.monotonic() + lease.ttl_ms / 3000
            self._leases.add(lease)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="agg-lease-heartbeat", daemon=True)
                self._thread.start()
            self._wake.notify()

    def discard(self, lease: Lease) -> None:
        with self._lock:
            self._leases.discard(lease)

    def _run(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                due = [x for x in self._leases if x.renew_at <= now]
                for x in due:
                    x.renew_at = now + x.ttl_ms / 3000
                nxt = min((x.renew_at for x in self._leases), default=now + 60)
                if not due:
                    self._wake.wait(max(0.0, nxt - now))
                    continue
            for x in due:  # outside the lock: a slow Redis must not block turns ending
                if not (x.lost or x.ended):
                    x.renew()


def _json_dict(raw: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


@dataclass(eq=False)
class Lease:
    """A held conversation lease (see the module docstring); compared by identity."""

    fence: Fence
    conv: str
    epoch: int
    value: str
    ttl_ms: int
    done: int
    """Last seq the previous committed turn saw (0: none)."""
    last: dict[str, Any] | None
    """The previous committed turn's result (the ``turn`` object of its record)."""
    lost: bool = False
    ended: bool = False
    """Set once the turn commits or releases (a renewal racing with that is not a loss)."""
    renew_at: float = 0.0

    # --- heartbeat ---------------------------------------------------------------------------
    def __enter__(self) -> Lease:
        self.fence.heartbeat.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.ended = True
        self.fence.heartbeat.discard(self)

    def renew(self) -> None:
        """Extend the lease (the heartbeat thread calls this every third of its lifetime)."""
        k = self.fence.keys
        try:
            call = scripts.renew_call(
                lease=k.lease(self.conv),
                running=k.turns_running,
                value=self.value,
                lease_ms=self.ttl_ms,
                conv=self.conv,
            )
            ok = self.fence._renew(keys=call.keys, args=call.args)
        except redis.RedisError as e:
            # Keep trying: the commit is fenced, so renewing late (or not at all) is safe.
            log.warning("cannot renew the lease of %s: %s", self.conv, e)
            return
        if not ok and not self.ended:
            self.lost = True
            log.warning("lost the lease of %s (epoch %d): another worker took the turn over", self.conv, self.epoch)

    # --- ending the turn -------------------------------------------------------------------------
    def commit(
        self, event: Event, *, project: str, upto_seq: int, result: dict[str, Any], cooldown_ms: int
    ) -> tuple[str, int]:
        """Append ``event`` (the turn's record) and end the turn; ``(status, seq)``.

        ``status`` is ``ok``, ``already`` (this epoch committed before) or ``stale`` (lease lost:
        nothing was written).
        """
        self.ended = True
        f = self.fence
        k = f.keys
        conv = self.conv
        call = scripts.commit_call(
            seq=k.seq,
            log=k.log,
            stats=k.stats,
            convs=k.convs,
            cur=k.cur(conv),
            tl=k.timeline(conv),
            body=k.body(conv),
            meta=k.meta(conv),
            turn=k.turn(conv),
            lease=k.lease(conv),
            running=k.turns_running,
            due=k.turns_due,
            parked=k.turns_parked,
            turn_stats=k.turns_stats,
            value=self.value,
            epoch=self.epoch,
            conv=conv,
            conv_json=dumps(conv),
            event_id=event.id,
            digest=event.digest,
            raw=event.raw,
            tail=event.tail,
            facts=event.facts,
            file="",
            project=project,
            agent="",
            events_channel=k.events_channel,
            conv_channel_prefix=k.conv_channel(""),
            upto_seq=upto_seq,
            result=dumps(result),
            cooldown_ms=cooldown_ms,
        )
        res: Any = f._commit(keys=call.keys, args=call.args)
        status = res[0].decode()
        return status, int(res[1]) if status == "ok" else 0

    def release(
        self,
        mode: str,
        *,
        done: int | None = None,
        error: str = "",
        park_base_ms: int = 0,
        park_max_ms: int = 0,
    ) -> list[Any]:
        """End the turn without an event (modes in :data:`workers.scripts.RELEASE`)."""
        self.ended = True
        f = self.fence
        k = f.keys
        call = scripts.release_call(
            turn=k.turn(self.conv),
            lease=k.lease(self.conv),
            running=k.turns_running,
            due=k.turns_due,
            parked=k.turns_parked,
            stats=k.turns_stats,
            value=self.value,
            epoch=self.epoch,
            conv=self.conv,
            mode=mode,
            done="" if done is None else done,
            error=error,
            park_base_ms=park_base_ms,
            park_max_ms=park_max_ms,
        )
        res: Any = f._release(keys=call.keys, args=call.args)
        return [x.decode() if isinstance(x, bytes) else x for x in res]
