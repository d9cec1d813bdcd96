"""LLM providers: ``offline`` (deterministic, no network), OpenAI-compatible chat completions,
Anthropic messages — and the retrying, rate-limited call every turn goes through.

The two network providers use the providers' maintained SDKs (optional extras ``openai``,
``anthropic`` or ``llm``: ``pip install -c constraints.txt '.[openai]'``), with the SDKs' own
retries switched off: every request, retries included, must pass the shared rate limits
(:mod:`workers.limits`) and the daily budget (:mod:`workers.budget`), so retries happen here,
with :mod:`tenacity` — exponential backoff with jitter, or exactly the ``Retry-After`` the
provider asked for. Transient failures (429, 408, 409, 5xx, timeouts, an
unreachable server, an answer that is not the protocol's JSON) are retried; others (400, 401,
403, 404, …) fail at once with a clear :class:`~aggregator.errors.ProviderError`.

The API key goes to the SDK client and nowhere else: it is not in any message, log line, job or
Redis value (error texts are scrubbed of it in case a server echoes it back). So does a password
in the base URL (a gateway's ``http://user:secret@host/v1``): the URL is shown masked.
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import tenacity

from aggregator import defaults
from aggregator.errors import ConfigError, LimitTimeout, ProviderError
from aggregator.text import iso_ms, preview
from aggregator.titles import prompt_candidate
from workers import prompt
from workers.budget import DAY_MS, DailyBudget
from workers.config import TurnConfig
from workers.limits import Limiter

log = logging.getLogger("agg.turns")


@dataclass(frozen=True)
class Completion:
    """A provider's answer and its token counts."""

    text: str
    input_tokens: int
    output_tokens: int


class Provider(Protocol):
    """One LLM API: a system prompt and a user message in, text out."""

    name: str
    model: str

    def complete(self, system: str, user: str, max_tokens: int) -> Completion:
        """One request; raises :class:`ProviderError` (``transient`` or not) on failure."""
        ...


def estimate_tokens(text: str) -> int:
    """Token estimate of ``text`` (characters / 4, at least 1)."""
    return max(1, len(text) // defaults.CHARS_PER_TOKEN)


# --- offline ------------------------------------------------------------------------------------
REQUESTS = "Requests: "
"""How the offline provider's summary starts: the user's requests follow, oldest first."""
REQUEST_SEP = " · "
# What aggregator.text.message_text writes for a user's attachments: not part of what was typed.
_ATTACHMENT = re.compile(r"\s*\[(?:image|document)\]\s*")


def requests_of(messages: list[tuple[str, str]]) -> list[str]:
    """What the user asked for in ``messages``, in order: the typed prompts (role ``user``; tool
    results and other text the user did not type come as ``context``), judged and cleaned as the
    projection judges a first-prompt title — no IDE context, caveats or command markup, a slash
    command with its arguments; bare commands (``/clear``) are not requests."""
    out = []
    for role, text in messages:
        typed = _ATTACHMENT.sub(" ", text) if role == "user" else ""
        candidate = prompt_candidate({"message": {"content": typed}}) if typed else None
        if candidate is not None and candidate[0] == "p":
            out.append(preview(candidate[1], defaults.OFFLINE_REQUEST_CHARS))
    return out


def fold_requests(summary: str, requests: list[str], limit: int = defaults.TURN_SUMMARY_MAX_CHARS) -> str:
    """``summary`` (an offline summary, else dropped) with ``requests`` added; the oldest ones
    give way to ``…`` beyond ``limit`` characters. Unchanged if there is no request to add."""
    if not requests:
        return summary
    items = summary[len(REQUESTS) :].split(REQUEST_SEP) if summary.startswith(REQUESTS) else []
    for r in requests:
        if not items or items[-1] != r:  # "continue", "continue": once
            items.append(r)
    while len(REQUESTS + REQUEST_SEP.join(items)) > limit and len(items) > 2:
        items = ["…", *items[2:]] if items[0] == "…" else ["…", *items[1:]]
    return REQUESTS + REQUEST_SEP.join(items)


class OfflineProvider:
    """A deterministic stand-in model: it extracts instead of generating; nothing leaves the host.

    Given the default turn's prompt it answers the JSON the turn asks for with **no title** (the
    projection's own title — the first real prompt, or better — stands: an extract would only be
    worse) and, as the summary, the user's requests in order (:func:`requests_of`), added to the
    previous summary if that is one of its own; with no new request the summary stays as it was.
    """

    name = "offline"

    def __init__(self, model: str = "offline") -> None:
        self.model = model

    def complete(self, system: str, user: str, max_tokens: int) -> Completion:
        parsed = prompt.parse(user)
        if parsed is None:
            text = preview(user, max(16, max_tokens * defaults.CHARS_PER_TOKEN))
        else:
            _, prev_summary, messages = parsed
            text = prompt.answer("", fold_requests(prev_summary, requests_of(messages)))
        return Completion(text, estimate_tokens(system + user), estimate_tokens(text))


# --- network providers -------------------------------------------------------------------------
class _SDKProvider:
    """Shared client setup and error handling of the SDK-backed providers."""

    name = ""
    """The provider's name: also its SDK's module and agg's pip extra."""
    client_class = ""
    sdk: Any = None

    def __init__(self, config: TurnConfig) -> None:
        self.model = config.model
        self.config = config
        self.timeout_s = config.timeout_s
        self.sdk = _import_sdk(self.name)
        # Local servers need no key, but the SDKs insist on one; agg retries itself (max_retries=0).
        self._client = getattr(self.sdk, self.client_class)(
            api_key=config.api_key or "unused", base_url=config.base_url, timeout=config.timeout_s, max_retries=0
        )

    def complete(self, system: str, user: str, max_tokens: int) -> Completion:
        try:
            resp = self._request(system, user, max_tokens)
        except self.sdk.APIStatusError as e:
            raise self._status_error(e) from None
        except self.sdk.APITimeoutError:
            raise ProviderError(f"{self.name}: no answer within {self.timeout_s:g} s", transient=True) from None
        except self.sdk.APIConnectionError as e:
            raise ProviderError(
                f"{self.name}: cannot reach {self.config.shown_url}: {self._text(e)}", transient=True
            ) from None
        except (self.sdk.APIResponseValidationError, ValueError) as e:
            raise ProviderError(f"{self.name}: malformed answer: {self._text(e)}", transient=True) from None
        try:
            return self._parse(resp)
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as e:
            raise ProviderError(f"{self.name}: malformed answer: {self._text(e)}", transient=True) from None

    def _text(self, e: BaseException) -> str:
        return self.config.scrub(str(e) or type(e).__name__)

    def _status_error(self, e: Any) -> ProviderError:
        status = int(e.status_code)
        transient = status in (408, 409, 425, 429) or status >= 500
        hint = " (check AGG_LLM_API_KEY)" if status in (401, 403) else ""
        return ProviderError(
            f"{self.name} answered {status}{hint}: {self._text(e)}",
            transient=transient,
            status=status,
            retry_after=retry_after(getattr(e, "response", None)),
        )

    def _request(self, system: str, user: str, max_tokens: int) -> Any:
        raise NotImplementedError

    def _parse(self, resp: Any) -> Completion:
        raise NotImplementedError


def _import_sdk(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        raise ConfigError(
            f"AGG_LLM_PROVIDER={name} needs the {name} package: in agg's directory, "
            f"pip install -c constraints.txt '.[{name}]'"
        ) from None


class OpenAIProvider(_SDKProvider):
    """OpenAI-compatible chat completions (OpenAI, Ollama, vLLM, llama.cpp: any base URL)."""

    name = "openai"
    client_class = "OpenAI"

    def _request(self, system: str, user: str, max_tokens: int) -> Any:
        return self._client.chat.completions.create(
            model=self.model,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
            max_tokens=max_tokens,
            temperature=0,
        )

    def _parse(self, resp: Any) -> Completion:
        text = resp.choices[0].message.content
        if not isinstance(text, str):
            raise ValueError("no text in the first choice")
        usage = resp.usage
        return Completion(
            text,
            int(getattr(usage, "prompt_tokens", 0) or 0),
            int(getattr(usage, "completion_tokens", 0) or 0),
        )


class AnthropicProvider(_SDKProvider):
    """Anthropic messages."""

    name = "anthropic"
    client_class = "Anthropic"

    def _request(self, system: str, user: str, max_tokens: int) -> Any:
        return self._client.messages.create(
            model=self.model,
            system=system,
            messages=[{"role": "user", "content": user}],
            max_tokens=max_tokens,
        )

    def _parse(self, resp: Any) -> Completion:
        parts = [b.text for b in resp.content if getattr(b, "type", None) == "text"]
        if not parts:
            raise ValueError("no text block in the answer")
        usage = resp.usage
        return Completion(
            "".join(parts),
            int(getattr(usage, "input_tokens", 0) or 0),
            int(getattr(usage, "output_tokens", 0) or 0),
        )


def make_provider(config: TurnConfig) -> Provider:
    """The provider ``config`` names (imports its SDK; raises :class:`ConfigError` if missing)."""
    if config.provider == "openai":
        return OpenAIProvider(config)
    if config.provider == "anthropic":
        return AnthropicProvider(config)
    return OfflineProvider()


def retry_after(response: Any) -> float | None:
    """Seconds a response's ``retry-after-ms`` / ``Retry-After`` (seconds or HTTP date) asks for."""
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# --- the call every turn makes -----------------------------------------------------------------
@dataclass
class CallStats:
    """What a turn's calls cost."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    provider_s: float = 0.0


@dataclass
class Caller:
    """Calls a provider through the shared limits and the daily budget, retrying transient
    failures."""

    provider: Provider
    limiter: Limiter
    budget: DailyBudget
    config: TurnConfig
    sleep: Callable[[float], None] = time.sleep

    def _wait(self, state: tenacity.RetryCallState) -> float:
        e = state.outcome.exception() if state.outcome else None
        if isinstance(e, ProviderError) and e.retry_after is not None:
            return float(e.retry_after)
        base = self.config.backoff_base_s * 2.0 ** (state.attempt_number - 1)
        return min(self.config.backoff_max_s, base) * random.uniform(0.5, 1.0)

    @staticmethod
    def _log_retry(state: tenacity.RetryCallState) -> None:
        e = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        # ProviderError texts are already scrubbed of the API key and the base URL's password
        log.info("attempt %d failed (%s); retrying in %.2f s", state.attempt_number, e, wait)

    @staticmethod
    def _retryable(e: BaseException) -> bool:
        return (
            isinstance(e, ProviderError)
            and e.transient
            and (e.retry_after is None or e.retry_after <= defaults.LLM_RETRY_AFTER_MAX_S)
        )

    def call(self, system: str, user: str, max_tokens: int, stats: CallStats, *, deadline: float) -> Completion:
        """One completion; raises :class:`ProviderError` after the last attempt, or
        :class:`LimitTimeout` if the shared limits held it past ``deadline`` (monotonic) or the
        day's token budget is used up."""
        estimate = estimate_tokens(system + user) + max_tokens

        def attempt() -> Completion:
            if not self.limiter.take(estimate, deadline=deadline):
                raise LimitTimeout("the shared rate limits held the request past the turn's deadline")
            taken = self.budget.take(estimate)
            if taken is not None and not taken.ok:
                raise LimitTimeout(
                    f"the daily token budget has no room for this request ({taken.tokens:,} of {taken.cap:,} "
                    f"tokens used today, about {estimate:,} needed): turns resume at "
                    f"{iso_ms((taken.day + 1) * DAY_MS)}"
                )
            stats.requests += 1
            started = time.perf_counter()
            try:
                answer = self.provider.complete(system, user, max_tokens)
            except ProviderError as e:
                if e.status == 429 and e.retry_after:
                    self.limiter.pause(e.retry_after)
                if e.status is not None:
                    self.budget.adjust(taken, -estimate)  # answered with an error: nothing used
                raise
            finally:
                stats.provider_s += time.perf_counter() - started
            stats.input_tokens += answer.input_tokens
            stats.output_tokens += answer.output_tokens
            if answer.input_tokens or answer.output_tokens:
                used = answer.input_tokens + answer.output_tokens
                self.limiter.adjust(used - estimate)
                self.budget.adjust(taken, used - estimate)
            return answer

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.config.attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception(self._retryable),
            sleep=self.sleep,
            reraise=True,
            before_sleep=self._log_retry,
        )
        result: Completion = retrying(attempt)
        return result
