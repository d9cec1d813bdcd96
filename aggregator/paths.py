"""Every file agg keeps under its data dir — the on-disk counterpart of :mod:`aggregator.keys`.

==================================== ==========================================================
path (under the data dir)            what
==================================== ==========================================================
``current.json``                     the writer's snapshot (``agg writer --output`` changes it)
``state/<role>-<ns>.json``           a long-running part's state (``watch``, ``writer``), read
                                     by ``agg status`` even while Redis is down
``state/<role>-<ns>.lock``           held (``flock``) while that part runs
``state/web-<ns>.token``             ``agg serve``'s access token (0600)
``state/seq-<ns>.json``              the highest ``seq`` this data dir's processes have seen
                                     (:mod:`aggregator.seqfloor`)
``redis/``, ``run/``                 the embedded redis-server (:mod:`aggregator.embedded`)
``index/search-<ns>-<id>.sqlite``    this machine's search index of the store with id ``<id>``
                                     (:mod:`aggregator.searchindex`; ``-wal``/``-shm`` beside it)
==================================== ==========================================================

Directories are created 0700 when first asked for; the data dir itself is created but not
chmod'ed (it may be one the user chose).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aggregator.files import private_dir


def state_dir(data_dir: Path) -> Path:
    """``<data dir>/state`` (0700), created if needed."""
    private_dir(Path(data_dir), chmod=False)
    return private_dir(Path(data_dir) / "state")


@dataclass(frozen=True)
class DataPaths:
    """The files of one data dir and namespace."""

    data_dir: Path
    namespace: str

    def state(self, role: str) -> Path:
        """State file of a long-running part (``watch``, ``writer``)."""
        return state_dir(self.data_dir) / f"{role}-{self.namespace}.json"

    def lock(self, role: str) -> Path:
        """Lock file held while that part runs."""
        return state_dir(self.data_dir) / f"{role}-{self.namespace}.lock"

    @property
    def floor(self) -> Path:
        """Where the processes of this data dir keep the highest seq they have seen."""
        return state_dir(self.data_dir) / f"seq-{self.namespace}.json"

    def search_index(self, store_id: str) -> Path:
        """The search index of the store whose id (``<ns>:store``) is ``store_id``."""
        return private_dir(Path(self.data_dir) / "index") / f"search-{self.namespace}-{store_id}.sqlite"

    @property
    def current_json(self) -> Path:
        """The default ``current.json``."""
        return Path(self.data_dir) / "current.json"

    @property
    def web_token(self) -> Path:
        """``agg serve``'s access token (:mod:`aggregator.live.web.access`)."""
        return state_dir(self.data_dir) / f"web-{self.namespace}.token"
