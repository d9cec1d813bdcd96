"""Settings of the turn workers, from ``AGG_*`` environment variables (docs/design.md §7).

Every worker of a deployment should get the same values: the shared limits are enforced in
Redis with the numbers each caller passes.

=========================== ============================ ==========================================
environment                 meaning                      default
=========================== ============================ ==========================================
``AGG_LLM_PROVIDER``        ``offline`` · ``openai`` ·   ``offline`` (nothing leaves the machine)
                            ``anthropic``
``AGG_LLM_BASE_URL``        API base URL (a password in  the provider's public API
                            it is masked everywhere)
``AGG_LLM_MODEL``           model name                   ``gpt-4o-mini`` / ``claude-3-5-haiku-latest``
``AGG_LLM_API_KEY``         API key (never printed,      none
                            logged or stored)
``AGG_LLM_TIMEOUT_S``       one request's timeout        60
``AGG_LLM_ATTEMPTS``        requests per turn at most    4
``AGG_LLM_RPM``             requests/min, all workers    50 (0 = no limit; offline: no limit)
``AGG_LLM_RPM_BURST``       requests back to back        1
``AGG_LLM_TPM``             tokens/min, all workers      100000 (0 = no limit; offline: none)
``AGG_LLM_DAILY_TOKENS``    tokens per UTC day, all      2000000 (0 = no cap; offline: none)
                            workers (then turns wait)
``AGG_TURN``                ``module:function``          the default title + summary turn
``AGG_TURN_CONCURRENCY``    turns at once, all workers   4
``AGG_TURN_DEBOUNCE_S``     wait after a first change    5
``AGG_TURN_COOLDOWN_S``     between a conversation's     60
                            turns
``AGG_TURN_LEASE_S``        lease lifetime               30
``AGG_TURN_PARK_S``         first retry of a failed      30 (doubling up to ``AGG_TURN_PARK_MAX_S``,
                            turn                         default 1800)
``AGG_TURN_BUDGET_TOKENS``  prompt budget                4000
``AGG_TURN_MAX_TOKENS``     answer budget                512
``AGG_TURN_MAX_AGE_DAYS``   skip older conversations     2 with a network provider, 0 (no limit)
                                                         offline
=========================== ============================ ==========================================
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import unquote, urlsplit

from aggregator import defaults
from aggregator.endpoint import mask_url
from aggregator.errors import ConfigError
from aggregator.text import preview

PROVIDERS = ("offline", "openai", "anthropic")

_TURN_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass(frozen=True)
class TurnConfig:
    """Resolved settings of the turn pipeline (see the module docstring for the variables)."""

    provider: str = "offline"
    base_url: str = field(default="", repr=False)
    """May hold a gateway's credentials (``http://user:secret@host/v1``): shown only as
    :attr:`shown_url`, and scrubbed (:meth:`scrub`) from every text agg writes."""
    model: str = "offline"
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = defaults.LLM_TIMEOUT_S
    attempts: int = defaults.LLM_ATTEMPTS
    rpm: float = 0.0
    rpm_burst: int = defaults.LLM_RPM_BURST
    tpm: float = 0.0
    daily_tokens: int = 0
    turn: str = ""
    concurrency: int = defaults.TURN_CONCURRENCY
    debounce_ms: int = defaults.TURN_DEBOUNCE_MS
    cooldown_ms: int = defaults.TURN_COOLDOWN_MS
    lease_ms: int = defaults.TURN_LEASE_MS
    park_base_ms: int = defaults.TURN_PARK_BASE_MS
    park_max_ms: int = defaults.TURN_PARK_MAX_MS
    queued_grace_ms: int = defaults.TURN_QUEUED_GRACE_MS
    dispatch_interval_ms: int = defaults.TURN_DISPATCH_INTERVAL_MS
    reconcile_interval_ms: int = defaults.TURN_RECONCILE_INTERVAL_MS
    budget_tokens: int = defaults.TURN_BUDGET_TOKENS
    max_output_tokens: int = defaults.TURN_MAX_OUTPUT_TOKENS
    max_age_days: float = 0.0
    backoff_base_s: float = defaults.LLM_BACKOFF_BASE_S
    backoff_max_s: float = defaults.LLM_BACKOFF_MAX_S
    limit_wait_max_s: float = defaults.TURN_LIMIT_WAIT_MAX_S

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ConfigError(f"AGG_LLM_PROVIDER={self.provider!r}: use one of {', '.join(PROVIDERS)}")
        if self.turn and not _TURN_SPEC.match(self.turn):
            raise ConfigError(f"AGG_TURN={self.turn!r}: expected module:function (e.g. mybot.turns:answer)")

    @property
    def shown_url(self) -> str:
        """:attr:`base_url` with its password masked, as the Redis URL is shown."""
        return mask_url(self.base_url) if self.base_url else ""

    def scrub(self, text: str) -> str:
        """``text`` (an error, possibly echoed by a server) without the API key or the base URL's
        password, cut to one short line."""
        if self.base_url:
            text = text.replace(self.base_url, self.shown_url)
        password = urlsplit(self.base_url).password or ""
        for secret in {self.api_key or "", password, unquote(password)}:
            if len(secret) >= 4:  # a shorter one would mask ordinary words; the URL is masked above
                text = text.replace(secret, "***")
        return preview(text, 300)

    @property
    def token_burst(self) -> int:
        """Tokens one turn may take at once: the largest request (prompt budget + answer)."""
        return self.budget_tokens + self.max_output_tokens

    def with_(self, **changes: object) -> TurnConfig:
        """A copy with ``changes`` (tests and benchmarks)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TurnConfig:
        """Settings from the environment; raises :class:`ConfigError` naming a bad variable."""
        env = os.environ if env is None else env
        provider = (env.get("AGG_LLM_PROVIDER") or "offline").strip().lower()
        network = provider != "offline"
        base_url, model = {
            "openai": (defaults.OPENAI_BASE_URL, defaults.OPENAI_MODEL),
            "anthropic": (defaults.ANTHROPIC_BASE_URL, defaults.ANTHROPIC_MODEL),
        }.get(provider, ("", "offline"))
        g = _Reader(env)
        return cls(
            provider=provider,
            base_url=(env.get("AGG_LLM_BASE_URL") or base_url).rstrip("/"),
            model=env.get("AGG_LLM_MODEL") or model,
            api_key=env.get("AGG_LLM_API_KEY") or None,
            timeout_s=g.number("AGG_LLM_TIMEOUT_S", defaults.LLM_TIMEOUT_S, low=0.001),
            attempts=int(g.number("AGG_LLM_ATTEMPTS", defaults.LLM_ATTEMPTS, low=1)),
            rpm=g.number("AGG_LLM_RPM", defaults.LLM_RPM if network else 0.0),
            rpm_burst=int(g.number("AGG_LLM_RPM_BURST", defaults.LLM_RPM_BURST, low=1)),
            tpm=g.number("AGG_LLM_TPM", defaults.LLM_TPM if network else 0.0),
            daily_tokens=int(g.number("AGG_LLM_DAILY_TOKENS", defaults.LLM_DAILY_TOKENS)) if network else 0,
            turn=(env.get("AGG_TURN") or "").strip(),
            concurrency=int(g.number("AGG_TURN_CONCURRENCY", defaults.TURN_CONCURRENCY, low=1)),
            debounce_ms=g.ms("AGG_TURN_DEBOUNCE_S", defaults.TURN_DEBOUNCE_MS),
            cooldown_ms=g.ms("AGG_TURN_COOLDOWN_S", defaults.TURN_COOLDOWN_MS),
            lease_ms=g.ms("AGG_TURN_LEASE_S", defaults.TURN_LEASE_MS, low=0.3),
            park_base_ms=g.ms("AGG_TURN_PARK_S", defaults.TURN_PARK_BASE_MS),
            park_max_ms=g.ms("AGG_TURN_PARK_MAX_S", defaults.TURN_PARK_MAX_MS),
            queued_grace_ms=g.ms("AGG_TURN_QUEUED_GRACE_S", defaults.TURN_QUEUED_GRACE_MS),
            dispatch_interval_ms=g.ms("AGG_TURN_DISPATCH_INTERVAL_S", defaults.TURN_DISPATCH_INTERVAL_MS, low=0.001),
            reconcile_interval_ms=g.ms("AGG_TURN_RECONCILE_INTERVAL_S", defaults.TURN_RECONCILE_INTERVAL_MS, low=0.01),
            budget_tokens=int(g.number("AGG_TURN_BUDGET_TOKENS", defaults.TURN_BUDGET_TOKENS, low=100)),
            max_output_tokens=int(g.number("AGG_TURN_MAX_TOKENS", defaults.TURN_MAX_OUTPUT_TOKENS, low=16)),
            max_age_days=g.number("AGG_TURN_MAX_AGE_DAYS", defaults.TURN_MAX_AGE_DAYS_NETWORK if network else 0.0),
            backoff_base_s=g.number("AGG_LLM_BACKOFF_S", defaults.LLM_BACKOFF_BASE_S),
        )


@dataclass
class _Reader:
    env: Mapping[str, str]

    def number(self, name: str, default: float, *, low: float = 0.0) -> float:
        raw = (self.env.get(name) or "").strip()
        if not raw:
            return float(default)
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r}: expected a number") from None
        if not value >= low or value == float("inf"):
            raise ConfigError(f"{name}={raw!r}: expected a number of at least {low:g}")
        return value

    def ms(self, name: str, default_ms: int, *, low: float = 0.0) -> int:
        """A duration given in seconds, as integer milliseconds."""
        return round(self.number(name, default_ms / 1000, low=low) * 1000)
