"""The default data dir: agg's own XDG rule gives what platformdirs gives, without its import cost."""

from __future__ import annotations

import sys
from pathlib import Path

import platformdirs
import pytest

from aggregator.config import default_data_dir

pytestmark = pytest.mark.skipif(sys.platform in ("darwin", "win32", "cygwin"), reason="XDG platforms only")


@pytest.mark.parametrize("xdg", [None, "", "   ", "/srv/data", "relative/data", " /srv/x"])
def test_default_data_dir_is_platformdirs_answer(xdg: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    if xdg is None:
        monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_DATA_HOME", xdg)
    expected = Path(platformdirs.user_data_dir("agg", appauthor=False))
    assert default_data_dir() == expected
    assert default_data_dir({"XDG_DATA_HOME": xdg} if xdg is not None else {}) == expected
