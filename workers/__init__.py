"""LLM turns per conversation, run on RQ workers (dispatch, jobs, providers, rate limits)."""

from __future__ import annotations


def queue_name(namespace: str) -> str:
    """The one RQ queue turn jobs go on, per agg namespace."""
    return f"{namespace}-turns"
