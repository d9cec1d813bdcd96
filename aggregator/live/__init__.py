"""The long-running roles, above the library and :mod:`workers`.

Modules: :mod:`aggregator.live.watcher` (``agg watch``: the claude dirs into the store, all day),
:mod:`aggregator.live.writer` (``agg writer``: ``current.json``), :mod:`aggregator.live.subscribe`
(:class:`~aggregator.live.subscribe.Subscription`, ``agg tail``: every event once, in order, live),
:mod:`aggregator.live.supervisor` (``agg run``: the parts as supervised processes),
:mod:`aggregator.live.service` (the loop the watcher and the writer share),
:mod:`aggregator.live.liveredis` (a connection that waits Redis' outages out),
:mod:`aggregator.live.notify` (file notifications: hints for the watcher),
:mod:`aggregator.live.install` (systemd, launchd and Procfile set-ups),
:mod:`aggregator.live.status` (``agg status``).

These are the only library modules that may import :mod:`workers`
(``tests/unit/test_layers.py``).
"""
