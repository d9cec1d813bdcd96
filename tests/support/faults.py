"""Causing faults for real: a small disk (a tmpfs; the tests run as root), a full one, a process
without the root powers that bypass file permissions."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

NO_DAC = [
    "setpriv",
    "--inh-caps=-dac_override,-dac_read_search",
    "--bounding-set=-dac_override,-dac_read_search",
    "--",
]
"""Command prefix: run as root but subject to file permissions like any user (for a root-owned
file, its owner bits), so ``chmod 000`` makes a file unreadable to it."""


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (e.g. ``"4m"``) mounted at ``path`` while the block runs."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)  # still busy: detach it


def fill(directory: Path, leave: int = 0) -> Path:
    """Fill the file system of ``directory`` up to ``leave`` free bytes; returns the filler file
    (delete it to give the space back)."""
    filler = directory / "filler"
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    with open(filler, "ab") as f:
        chunk = b"\0" * (1 << 16)
        todo = max(0, free - leave)
        while todo > 0:
            try:
                todo -= f.write(chunk[: min(len(chunk), todo)])
                f.flush()
            except OSError:  # full already
                break
    return filler


def free_bytes(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize
