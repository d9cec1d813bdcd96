"""``agg ingest``: the backfill."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from aggregator.errors import ConfigError, Interrupted
from aggregator.ingest import IngestReport, discover, ingest_buckets, pending_bytes_all
from aggregator.live.status import record_ingest
from cli.app import app_context, emit_json


@click.command("ingest")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the totals.")
@click.pass_context
def ingest_cmd(ctx: click.Context, paths: tuple[Path, ...], as_json: bool) -> None:
    """Backfill: store every line of the claude dirs (or of PATHS) not stored yet.

    PATH may be a transcript file, a project dir, a `projects/` dir or a claude config dir.
    """
    with app_context(ctx) as app:
        roots = list(paths) or list(app.settings.claude_dirs)
        if not roots:
            raise ConfigError("no claude dirs found: pass a PATH or --claude-dir")
        for p in roots:
            if not os.path.lexists(p):
                raise ConfigError(f"no such file or directory: {p}")
        buckets = app.buckets()
        buckets.keep_floors(app.settings.data_dir)
        sources, walk = discover(roots)
        report = IngestReport()
        try:
            if sys.stderr.isatty():
                total = pending_bytes_all(buckets, sources)
                with click.progressbar(
                    length=total, label="ingesting", file=sys.stderr, show_pos=False, show_percent=True, show_eta=True
                ) as bar:
                    ingest_buckets(buckets, sources, progress=bar.update, report=report, walk=walk)
            else:
                ingest_buckets(buckets, sources, report=report, walk=walk)
        except KeyboardInterrupt:
            # Every batch is committed atomically with its file's cursor: what Redis took stays,
            # and the next run reads each file from its cursor on
            # (tests/process/test_rejects_and_interrupts.py::test_ctrl_c_during_ingest_keeps_what_was_committed).
            raise Interrupted(
                f"interrupted after {report.files} of {len(sources)} files ({report.lines:,} lines); every "
                "batch Redis committed is kept, and the next agg ingest continues from there"
            ) from None
        record_ingest(app.settings, report.skipped)
        if as_json:
            emit_json(report.as_dict())
            return
        click.echo(report.summary())
        for s in report.skipped:
            click.echo(f"skipped {s['file']}: {s['reason']}", err=True)
