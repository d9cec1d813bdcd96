"""Helpers of the test suite (no fixtures: those are in ``tests/conftest.py``).

:mod:`tests.support.oracle` (an independent reading of transcript files, stdlib only),
:mod:`tests.support.records` (transcript records to write), :mod:`tests.support.live` (real
``agg`` processes and readers for the live-service tests), :mod:`tests.support.store` (checks on a
store), :mod:`tests.support.turnfns` (turn functions the worker tests load by name).
"""

from __future__ import annotations

from devtools.gen_corpus import default_source

CORPUS = default_source()
"""The shared corpus (``projects/`` layout): read it, never change it (copy it first)."""
