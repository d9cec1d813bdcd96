"""``agg serve``: local web pages and a JSON API over the store, live through server-sent events.

Modules: :mod:`~aggregator.live.web.access` (the token, the URL, which Host headers are ours),
:mod:`~aggregator.live.web.data` (everything the pages and the API read from the store: the
library's answers, the ones the commands print), :mod:`~aggregator.live.web.indexer` (keeps the
search index following the log while the server runs), :mod:`~aggregator.live.web.render` (events
as :mod:`aggregator.transcript` reads them, as escaped HTML), :mod:`~aggregator.live.web.pages` and
:mod:`~aggregator.live.web.charts` (the pages), :mod:`~aggregator.live.web.events` (``/api/events``),
:mod:`~aggregator.live.web.security` (token, Host check, headers), :mod:`~aggregator.live.web.openapi`,
:mod:`~aggregator.live.web.app` (routes) and :mod:`~aggregator.live.web.server` (uvicorn).

Only :mod:`~aggregator.live.web.access` is light: the rest imports Starlette and is loaded by
``agg serve`` alone, never by ``agg --help``.
"""
