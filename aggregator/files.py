"""Private files and directories: transcripts' derivatives are the user's private data.

Directories agg owns are 0700, files it writes are 0600 and replaced atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path


def private_dir(path: Path, *, chmod: bool = True) -> Path:
    """Create ``path`` (and parents) as 0700; with ``chmod``, make an existing one 0700 too."""
    if not path.is_dir():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if chmod:
        os.chmod(path, 0o700)
    return path


def write_private(path: Path, data: bytes | str, *, durable: bool = True) -> None:
    """Replace ``path`` atomically with ``data``, mode 0600.

    The bytes go to a temp file in the same directory, which is (with ``durable``) fsynced and
    then renamed over ``path``, and the directory is fsynced: a reader sees the old file or the new
    one, never a part, and a crash leaves one of the two (``tests/process/test_snapshot_writer.py``).
    """
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask or an earlier leftover said
        view = memoryview(raw)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    if durable:
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created 0600) while the block runs; waits for it.
    Released on close, so also when the process dies."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
