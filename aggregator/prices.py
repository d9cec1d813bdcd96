"""What tokens cost: the price table shipped with agg (``prices.json``), ``AGG_PRICES`` overrides.

Offline and dated: agg never fetches prices. Each model has list prices per million tokens for
input, output, cache reads, 5-minute and 1-hour cache writes, and — for models that have them —
``long_context`` rates, which apply to a whole response whose prompt exceeded
:data:`~aggregator.defaults.LONG_CONTEXT_TOKENS` (the projections keep those responses apart).

``AGG_PRICES`` names a JSON file of the same shape: its ``models`` are added to the shipped ones
or replace them (a model missing from the table, a negotiated price), and its ``date`` replaces
the table's. A model with no price has no cost: its rows say ``null`` and the model is named
(:class:`Costing`), never counted as $0.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aggregator.errors import ConfigError

RATE_NAMES = ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h")
"""Prices of a model, per :data:`PER_TOKENS` tokens."""

PER_TOKENS = 1_000_000

PRICES_ENV = "AGG_PRICES"

_DATE_SUFFIX = re.compile(r"(-\d{8}|-latest|@\d{8}|-v\d+(:\d+)?|\[[^\]]*\])+$")
"""What a model id may carry after its name: a snapshot date (``-20250514``), ``-latest``, a
Vertex (``@20250514``) or Bedrock (``-v1:0``) version, a context variant (``[1m]``)."""


@dataclass(frozen=True)
class Rates:
    """USD per :data:`PER_TOKENS` tokens of each kind; ``long`` for over-threshold prompts, if any."""

    input: float
    output: float
    cache_read: float
    cache_write_5m: float
    cache_write_1h: float
    long: Rates | None = None

    def cost(self, counts: dict[str, int], long: bool = False) -> float:
        """USD for ``counts`` (``input``, ``output``, ``cache_read``, ``cache_creation`` and its
        1-hour share ``cache_creation_1h``), at the long-context rates if ``long`` and the model
        has them."""
        r = self.long if long and self.long is not None else self
        c1h = counts.get("cache_creation_1h", 0)
        c5m = counts.get("cache_creation", 0) - c1h
        return (
            counts.get("input", 0) * r.input
            + counts.get("output", 0) * r.output
            + counts.get("cache_read", 0) * r.cache_read
            + c5m * r.cache_write_5m
            + c1h * r.cache_write_1h
        ) / PER_TOKENS


@dataclass(frozen=True)
class PriceTable:
    """Prices by model name (without snapshot date), with the date they were taken."""

    date: str
    models: dict[str, Rates]
    source: str = ""

    def rates(self, model: str) -> Rates | None:
        """The prices of ``model`` (an id as transcripts write it), or None if it has none."""
        if model in self.models:
            return self.models[model]
        start = model.find("claude-")  # a provider prefix: us.anthropic.claude-…
        name = _DATE_SUFFIX.sub("", model[start:] if start > 0 else model)
        return self.models.get(name)


def _rates(name: str, raw: Any, where: str) -> Rates:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: model {name!r} must be an object of prices")
    vals: list[float] = []
    for r in RATE_NAMES:
        v = raw.get(r)
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            raise ConfigError(f"{where}: model {name!r} needs a non-negative number {r!r}")
        vals.append(float(v))
    long = _rates(name, raw["long_context"], where) if raw.get("long_context") is not None else None
    return Rates(vals[0], vals[1], vals[2], vals[3], vals[4], long=long)


def _parse(data: Any, where: str) -> tuple[str, dict[str, Rates], str]:
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise ConfigError(f"{where}: expected an object with 'models'")
    models = {str(k): _rates(str(k), v, where) for k, v in data["models"].items()}
    return str(data.get("date") or ""), models, str(data.get("source") or "")


@functools.lru_cache(maxsize=4)
def _load(override: str) -> PriceTable:
    # The file beside this module, as redis.conf is handed to redis-server by its path: agg is
    # installed as files. importlib.resources would import tempfile and zipfile on `agg usage`'s start.
    shipped = json.loads(Path(__file__).with_name("prices.json").read_text("utf-8"))
    date, models, source = _parse(shipped, "prices.json")
    if override:
        path = Path(override).expanduser()
        try:
            data = json.loads(path.read_text("utf-8"))
        except OSError as e:
            raise ConfigError(f"{PRICES_ENV}={override}: {e.strerror or e}") from None
        except ValueError as e:
            raise ConfigError(f"{PRICES_ENV}={override}: not valid JSON ({e})") from None
        o_date, o_models, _ = _parse(data, f"{PRICES_ENV}={override}")
        models = {**models, **o_models}
        date = o_date or date
        source = f"{source}; overridden by {path}"
    return PriceTable(date, models, source)


def load() -> PriceTable:
    """The price table: the shipped one, with ``AGG_PRICES``' file over it if set."""
    return _load(os.environ.get(PRICES_ENV, ""))


@dataclass
class Costing:
    """Sums the cost of usage cells per row, and names the models that have no price."""

    table: PriceTable = field(default_factory=load)
    unpriced: dict[str, int] = field(default_factory=dict)
    """Model → responses that could not be priced."""

    _rates: dict[str, Rates | None] = field(default_factory=dict)

    def cell(self, model: str, long: int, counts: dict[str, int]) -> float | None:
        """Cost of one cell (None if its model has no price and it used tokens)."""
        if model not in self._rates:
            self._rates[model] = self.table.rates(model)
        rates = self._rates[model]
        if rates is None:
            if any(counts.get(n, 0) for n in ("input", "output", "cache_read", "cache_creation")):
                self.unpriced[model] = self.unpriced.get(model, 0) + counts.get("responses", 0)
                return None
            return 0.0
        return rates.cost(counts, bool(long))


def add_cost(a: float | None, b: float | None) -> float | None:
    """``a + b``, unknown (None) if either is: an unpriced part makes the sum unknown."""
    return None if a is None or b is None else a + b


def rounded(cost: float | None) -> float | None:
    """A cost as shown in JSON: to the micro-dollar."""
    return None if cost is None else round(cost, 6)
