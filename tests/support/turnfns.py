"""Turn functions plugged in by tests through ``AGG_TURN=tests.support.turnfns:<name>``."""

from __future__ import annotations

from typing import Any

from workers.turns import TurnContext


def echo_bot(ctx: TurnContext) -> dict[str, Any] | None:
    """A bot that answers in each conversation: it repeats the newest message."""
    if not ctx.messages:
        return None
    return {"kind": "reply", "text": f"you said: {ctx.messages[-1].text} ({len(ctx.messages)} new messages)"}


def nothing(ctx: TurnContext) -> None:
    """Records nothing (the turn is skipped, its messages count as seen)."""
    return None


def broken(ctx: TurnContext) -> dict[str, Any]:
    raise RuntimeError("the bot fell over")


def lone_surrogate(ctx: TurnContext) -> dict[str, Any]:
    """Returns text as found in real transcripts: a lone UTF-16 surrogate (valid JSON as an escape)."""
    return {"kind": "reply", "text": "half an emoji: \ud83d"}


def not_json(ctx: TurnContext) -> dict[str, Any]:
    return {"kind": "reply", "value": object()}
