"""Speed limits and retries: requests/tokens per minute (aiolimiter) and bounded backoff with jitter (tenacity).

The clients translate their library's errors into the three kinds below, so the policy does not depend on which
backend runs: :class:`TransientError` and :class:`~ragtune.generate.llm.parsing.ParseError` are retried,
:class:`RequestError` fails only its request, and :class:`~ragtune.errors.ConfigError` (bad key, unknown model)
stops the whole run.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from ragtune.errors import RagtuneError, require
from ragtune.generate.llm.parsing import ParseError

logger = logging.getLogger(__name__)

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


class TransientError(RagtuneError, RuntimeError):
    """A failure that may pass: 429, 5xx, a timeout, a dropped connection. ``retry_after`` is the server's hint."""

    def __init__(self, message: str, *, kind: str = "error", retry_after: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


class RequestError(RagtuneError, RuntimeError):
    """A failure of this request alone that a retry will not fix (e.g. 400: the prompt is too long)."""


def estimate_tokens(text: str) -> int:
    """A rough token count without a tokenizer: about 4 characters per token, one per Chinese character."""
    cjk = len(_CJK.findall(text))
    return max(1, cjk + (len(text) - cjk + 3) // 4)


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, (TransientError, ParseError))


class RateLimiter:
    """Requests per minute and (estimated) tokens per minute; either may be None (unlimited).

    A leaky bucket (aiolimiter): up to ``rpm`` requests may start at once, then they drip at ``rpm / period``
    per second. ``period`` is 60 seconds except in tests. Build it inside the event loop that uses it.
    """

    def __init__(self, rpm: int | None = None, tpm: int | None = None, period: float = 60.0):
        aiolimiter = require("aiolimiter", "llm") if (rpm or tpm) else None
        self.rpm, self.tpm = rpm, tpm
        self._requests = aiolimiter.AsyncLimiter(rpm, period) if aiolimiter and rpm else None
        self._tokens = aiolimiter.AsyncLimiter(tpm, period) if aiolimiter and tpm else None

    async def acquire(self, tokens: int = 1) -> None:
        if self._requests is not None:
            await self._requests.acquire(1)
        if self._tokens is not None:
            await self._tokens.acquire(min(max(tokens, 1), self.tpm or 1))


class _Backoff:
    """Exponential backoff with full jitter, raised to the server's Retry-After hint, capped at ``cap`` seconds."""

    def __init__(self, base: float, cap: float):
        tenacity = require("tenacity", "llm")
        self._jitter = tenacity.wait_random_exponential(multiplier=base, max=cap)
        self.cap = cap

    def __call__(self, state: Any) -> float:
        wait = self._jitter(state)
        exc = state.outcome.exception() if state.outcome is not None else None
        hint = getattr(exc, "retry_after", None)
        if hint:
            wait = max(wait, float(hint))
        return min(wait, self.cap)


class RetryPolicy:
    """At most ``max_retries`` retries of transient failures; ``on_retry(exc, attempt)`` is told about each."""

    def __init__(self, max_retries: int = 4, base: float = 0.5, cap: float = 30.0,
                 on_retry: Callable[[BaseException, int], None] | None = None):
        self.max_retries, self.base, self.cap = max_retries, base, cap
        self.on_retry = on_retry

    def retrying(self) -> Any:
        """A fresh ``tenacity.AsyncRetrying`` for one request (``async for attempt in policy.retrying()``)."""
        tenacity = require("tenacity", "llm")

        def before_sleep(state: Any) -> None:
            exc = state.outcome.exception()
            logger.debug("retry %d after %s: %s", state.attempt_number, type(exc).__name__, exc)
            if self.on_retry is not None:
                self.on_retry(exc, state.attempt_number)

        return tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            wait=_Backoff(self.base, self.cap),
            retry=tenacity.retry_if_exception(is_retryable),
            before_sleep=before_sleep,
            reraise=True,
        )
