"""Checks on a store that several test modules make."""

from __future__ import annotations

from aggregator.projections import Projector
from aggregator.store import Store
from aggregator.views import conversation_views


def rebuild_reproduces_live(store: Store) -> None:
    """Assert that ``agg replay --rebuild`` recomputes exactly the live projections (digests)."""
    p = Projector(store)
    live = p.digest()
    assert p.rebuild()["digest"] == live


def usage_by_conversation(store: Store) -> dict[str, dict[str, int]]:
    """Each conversation's usage counts and responses, as the projections hold them."""
    return {v["key"]: {**v["usage"], "responses": v["responses"]} for v in conversation_views(store)}
