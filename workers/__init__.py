"""LLM turns per conversation, run on RQ workers (see the README's "LLM turns" section).

Modules: :mod:`workers.dispatch` (scheduler and reconciler inside every ``agg worker``),
:mod:`workers.lease` (single flight with a fencing epoch), :mod:`workers.turns` (one turn: read,
call the turn function, commit as an event; the RQ job :func:`workers.turns.run_turn`),
:mod:`workers.history` (what a turn reads), :mod:`workers.prompt` (the default turn's prompt),
:mod:`workers.providers` (offline, OpenAI-compatible, Anthropic; retries), :mod:`workers.limits`
(shared rate limits), :mod:`workers.budget` (the daily token budget), :mod:`workers.scripts`
(their Lua), :mod:`workers.config` (``AGG_LLM_*`` / ``AGG_TURN_*``), :mod:`workers.worker`
(``agg worker``), :mod:`workers.pool` (N worker processes for a supervisor:
:func:`workers.pool.run_workers`), :mod:`workers.status` (``agg status``).
"""

from __future__ import annotations
