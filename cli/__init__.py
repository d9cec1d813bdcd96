"""The ``agg`` command line (click)."""
