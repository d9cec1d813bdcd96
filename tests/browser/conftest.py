"""Fixtures of the browser tests: Debian's chromium, headless, driven by Playwright."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from devtools.browser import chromium_path, launch


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One chromium for the session (``apt-get install -y chromium``; the tests fail without it)."""
    if chromium_path() is None:
        pytest.fail("no chromium: apt-get install -y chromium (or set AGG_CHROMIUM)")
    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()
