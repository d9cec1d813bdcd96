"""Checks on what the real ``agg`` command printed."""

from __future__ import annotations

import subprocess


def one_line_error(proc: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    """``proc`` exited ``code`` with exactly one ``agg: …`` line on stderr holding ``needle``."""
    assert proc.returncode == code, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agg: ") and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
