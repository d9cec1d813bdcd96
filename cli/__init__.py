"""The ``agg`` command line (click).

:mod:`cli.main` (the ``agg`` group and the table of its commands, each imported when it runs),
:mod:`cli.app` (what every command shares: settings, the connection, one-line errors),
:mod:`cli.quick` (``agg status`` and ``agg usage`` on the quick client first), :mod:`cli.formats`
(output and date options); the commands: :mod:`cli.ingest`, :mod:`cli.status`, :mod:`cli.usage`,
:mod:`cli.replay`, :mod:`cli.rejects`, :mod:`cli.forget`, :mod:`cli.read` (search, list, show, export, mcp),
:mod:`cli.live` (run, watch, writer, tail, service), :mod:`cli.worker`, :mod:`cli.web` (serve),
:mod:`cli.embedded` (``agg redis``).
"""
