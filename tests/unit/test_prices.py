"""The price table (aggregator.prices): model ids as transcripts write them, the 1-hour and long-context
rates, AGG_PRICES, and unknown models (null, never $0)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aggregator.errors import ConfigError
from aggregator.prices import Costing, load

MILLION = 1_000_000


def test_the_shipped_table_is_dated_and_resolves_model_ids_as_written() -> None:
    table = load()
    assert table.date[:4].isdigit() and len(table.date) == 10
    sonnet4 = table.rates("claude-sonnet-4")
    assert sonnet4 is not None
    for written in (
        "claude-sonnet-4-20250514",
        "claude-sonnet-4@20250514",
        "us.anthropic.claude-sonnet-4-20250514-v1:0",
        "claude-sonnet-4[1m]",
    ):
        assert table.rates(written) is sonnet4, written
    assert table.rates("claude-opus-4-1-20250805") is table.rates("claude-opus-4-1")
    assert table.rates("claude-opus-4-1") is not table.rates("claude-opus-4")
    for unknown in ("gpt-5", "", "<synthetic>", "claude-unknown-9"):
        assert table.rates(unknown) is None


def test_cost_prices_each_kind_of_token_and_the_hour_long_cache_writes() -> None:
    opus = load().rates("claude-opus-4-6")
    assert opus is not None
    counts = {"input": MILLION, "output": MILLION, "cache_read": MILLION, "cache_creation": 3 * MILLION}
    # 3M cache writes, all 5-minute: $6.25 each; input $5, output $25, reads $0.50.
    assert opus.cost(counts) == pytest.approx(5 + 25 + 0.5 + 3 * 6.25)
    # One million of them were 1-hour writes ($10).
    assert opus.cost({**counts, "cache_creation_1h": MILLION}) == pytest.approx(5 + 25 + 0.5 + 2 * 6.25 + 10)


def test_long_context_rates_apply_only_where_a_model_has_them() -> None:
    table = load()
    counts = {"input": MILLION, "output": MILLION}
    sonnet = table.rates("claude-sonnet-4-5-20250929")
    opus = table.rates("claude-opus-4-6")
    assert sonnet is not None and opus is not None
    assert sonnet.cost(counts) == pytest.approx(3 + 15)
    assert sonnet.cost(counts, long=True) == pytest.approx(6 + 22.5)
    assert opus.cost(counts, long=True) == opus.cost(counts)  # flat across its 1M context


def test_agg_prices_adds_and_overrides_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "prices.json"
    rates = {"input": 1, "output": 2, "cache_read": 0.1, "cache_write_5m": 1.25, "cache_write_1h": 2}
    f.write_text(json.dumps({"date": "2030-01-01", "models": {"my-model": rates, "claude-opus-4-6": rates}}))
    monkeypatch.setenv("AGG_PRICES", str(f))
    table = load()
    assert table.date == "2030-01-01"
    mine = table.rates("my-model-20300101")
    assert mine is not None and mine.cost({"output": MILLION}) == pytest.approx(2)
    opus = table.rates("claude-opus-4-6")
    assert opus is not None and opus.cost({"input": MILLION}) == pytest.approx(1)
    assert table.rates("claude-haiku-4-5") is not None  # the shipped models stay


@pytest.mark.parametrize(
    "content",
    ["not json", "[]", '{"models": {"m": {"input": 1}}}', '{"models": {"m": {"input": -1, "output": 1}}}'],
)
def test_a_bad_agg_prices_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str) -> None:
    f = tmp_path / f"bad-{abs(hash(content))}.json"
    f.write_text(content)
    monkeypatch.setenv("AGG_PRICES", str(f))
    with pytest.raises(ConfigError) as e:
        load()
    assert "AGG_PRICES" in str(e.value) and "\n" not in str(e.value)


def test_a_missing_agg_prices_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGG_PRICES", str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match="AGG_PRICES="):
        load()


def test_a_model_without_a_price_costs_null_and_is_named() -> None:
    costing = Costing()
    assert costing.cell("gpt-x", 0, {"input": 10, "responses": 2}) is None
    assert costing.cell("gpt-x", 0, {"input": 5, "responses": 1}) is None
    assert costing.cell("gpt-y", 0, {"responses": 1}) == 0.0  # used no tokens: costs nothing
    assert costing.unpriced == {"gpt-x": 3}
