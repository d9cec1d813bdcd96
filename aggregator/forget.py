"""``agg forget`` as a library call: conversations removed from the store, for good (docs/design.md §9).

A forget is an event: :meth:`aggregator.store.Store.forget` removes the conversation's events,
bodies, counters and log content and leaves its tombstone in one atomic script, and appends one
``agg-forget`` entry to the log (its own ``seq``, published to subscribers like an envelope). Every
projection applies that entry in seq order — the Redis projections
(:meth:`aggregator.projections.Projector.catch_up` drops the conversation's hash and takes its usage,
recent messages, project membership and references off the global ones), and every machine's
search index (:mod:`aggregator.searchindex` drops its rows) — so that nobody needs a side channel,
and ``agg replay --rebuild`` over the scrubbed log gives the same projections.

Log batches compaction archived (:mod:`aggregator.compaction`) cannot be rewritten by a Lua script
(they are compressed): they are scrubbed the same way here, just before it.

Here the forget runs under the projections' lock (as a rebuild does): the projections are caught
up first, so what the forget step takes off is everything they hold of the conversation, and no
other projector applies a step in between.

On a Redis Cluster a conversation is forgotten in its bucket (:mod:`aggregator.buckets`): the
bucket's log gets the ``agg-forget`` entry, and the bucket's projections — caught up and locked
here, as on a single Redis — apply it. :func:`project_conversations_in` finds conversations over
every bucket (a name: :meth:`Buckets.find <aggregator.buckets.Buckets.find>`), :func:`summary`
sums what each bucket's :func:`forget` removed.
"""

from __future__ import annotations

from typing import Any

from aggregator.buckets import Buckets
from aggregator.compaction import forget_archived
from aggregator.errors import NotFound
from aggregator.projections import USAGE_FIELDS, Projector
from aggregator.projects import matches, project_paths
from aggregator.store import Store

USAGE_REPORTED = (*USAGE_FIELDS, "cache_creation_1h", "responses")
"""The usage counts ``agg forget --json`` reports as subtracted."""


def project_conversations(store: Store, query: str) -> list[str]:
    """The conversations of the projects ``--project query`` selects (as ``agg list --project``)."""
    Projector(store).catch_up()
    chosen = [p for p, path in project_paths(store).items() if matches(query, p, path)]
    convs: set[str] = set()
    for p in chosen:
        convs |= {c.decode() for c in store.r.smembers(store.keys.project_convs(p))}
    held = set(store.conversations())
    return sorted(convs & held)


def project_conversations_in(buckets: Buckets, query: str) -> list[tuple[Store, str]]:
    """:func:`project_conversations` over every bucket (``query`` may select projects of several),
    each with its bucket's store, in key order."""
    found = [(store, conv) for store in buckets for conv in project_conversations(store, query)]
    return sorted(found, key=lambda sc: sc[1])


def resolve_every(buckets: Buckets, name: str) -> list[tuple[Store, str]]:
    """What ``agg forget`` means by ``name`` (:meth:`Buckets.find <aggregator.buckets.Buckets.find>`),
    with every bucket holding the key: the same session file read in projects of different buckets
    is in each of them, and a forget must leave no copy."""
    store, key = buckets.find(name)
    if not buckets.cluster:
        return [(store, key)]
    return [(s, key) for s in buckets.holding(key)] or [(store, key)]


def forget(store: Store, convs: list[str]) -> dict[str, Any]:
    """Forget each of ``convs`` (conversation keys); returns what was removed: ``conversations``
    (each with its ``seq``, ``forgotten_at`` ms, ``events``, ``revisions``, ``usage``), ``events``,
    ``revisions`` and ``usage`` (summed over them).

    Raises :class:`NotFound` if one of them is not (or no longer) in the store; those before it
    are forgotten.
    """
    projector = Projector(store)
    out: list[dict[str, Any]] = []
    with projector.locked() as token:
        projector.catch_up(token=token)
        for conv in dict.fromkeys(convs):
            fields = [f"usage_{name}" for name in USAGE_REPORTED]
            (row,) = store.projection_fields([conv], fields)
            usage = {name: int(v or 0) for name, v in zip(USAGE_REPORTED, row, strict=True)}
            # Its archived log batches (compaction) first, found by its timeline: nothing is
            # archived while the lock is held (aggregator.compaction.forget_archived).
            forget_archived(store, conv, [int(b) for b in store.r.zrange(store.keys.timeline(conv), 0, -1)])
            try:
                done = store.forget(conv)
            except NotFound:
                raise NotFound(f"no conversation {conv!r}") from None
            out.append(
                {
                    "conv": conv,
                    "seq": done.seq,
                    "forgotten_at": done.at_ms,
                    "events": done.events,
                    "revisions": done.revisions,
                    "usage": usage,
                }
            )
            projector.catch_up(token=token)  # applies the forget entry: its projections go
    return summary(out)


def summary(out: list[dict[str, Any]]) -> dict[str, Any]:
    """A :func:`forget` result for the conversations ``out`` (as its ``conversations`` lists them):
    how several calls, one per bucket, report as one."""
    return {
        "conversations": out,
        "events": sum(c["events"] for c in out),
        "revisions": sum(c["revisions"] for c in out),
        "usage": {name: sum(c["usage"][name] for c in out) for name in USAGE_REPORTED},
    }
