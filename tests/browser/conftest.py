"""Fixtures of the browser tests: Debian's chromium, headless, driven by Playwright."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from devtools.browser import chromium_path, launch


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """One chromium for the browser tests (``apt-get install -y chromium``; the tests fail without
    it). Package-scoped: Playwright's sync API runs an event loop on the main thread while it is
    open, and later tests that run their own (``asyncio.run``: the MCP client) must not find one."""
    if chromium_path() is None:
        pytest.fail("no chromium: apt-get install -y chromium (or set AGG_CHROMIUM)")
    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()
