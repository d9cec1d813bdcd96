"""Debian's headless chromium driven by Playwright, for the ``agg serve`` tests, benchmark and screenshots.

Playwright's own browser download cannot be used here: it drives the system's ``chromium``
(``apt-get install chromium``) through ``executable_path``.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
"""Headless, no calls home, no first-run work."""


def chromium_path() -> str | None:
    """The system chromium (``AGG_CHROMIUM`` overrides), or None if there is none."""
    explicit = os.environ.get("AGG_CHROMIUM")
    if explicit:
        return explicit
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def launch(playwright: Any, extra_args: list[str] | None = None) -> Any:
    """A Playwright ``Browser`` on the system chromium (``extra_args`` added to :data:`CHROMIUM_ARGS`)."""
    path = chromium_path()
    if path is None:
        raise RuntimeError("no chromium found: apt-get install -y chromium (or set AGG_CHROMIUM)")
    return playwright.chromium.launch(executable_path=path, args=[*CHROMIUM_ARGS, *(extra_args or [])])
