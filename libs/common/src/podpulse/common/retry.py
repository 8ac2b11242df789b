"""One way to retry a call: which errors, how many times, and how long to wait before each.

``Backoff`` shapes the waits (jittered exponential steps, or what a ``Retry-After`` header
asks for, capped); ``Retry`` runs a call under a policy. The RunPod clients, the prober's
requests and its sends to the bus all retry through these two.

A :class:`Retry` is a value: the errors worth retrying, a bound on retries, and the wait
before retry ``n`` (0-based), which may depend on the error (a 429's ``Retry-After``). The
same policy runs a blocking call (:meth:`Retry.call`, e.g. publishing to Redis) or a
coroutine (:meth:`Retry.acall`, e.g. an HTTP request in the event loop); the sleep is
injectable so tests neither wait nor depend on the clock. When the retries run out the last
error propagates: the caller decides what giving up means.

Only retry what is safe to repeat: an idempotent request, or a send whose duplicate the
receiver drops.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

__all__ = ["Backoff", "OnRetry", "Retry", "parse_retry_after"]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Backoff:
    """The shape of the wait between attempts; the number of attempts is the client's.

    ``sleep``, ``now`` and ``jitter`` are injectable so tests neither wait nor depend on the
    wall clock or chance.
    """

    base_s: float = 0.5
    max_s: float = 8.0
    # A server asking for minutes would stall a probe run; wait at most this long instead.
    retry_after_cap_s: float = 30.0
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, repr=False)
    now: Callable[[], datetime] = field(default=_utc_now, repr=False)
    jitter: Callable[[], float] = field(default=random.random, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.base_s <= self.max_s:
            raise ValueError("Backoff needs 0 <= base_s <= max_s")
        if self.retry_after_cap_s < 0:
            raise ValueError("Backoff.retry_after_cap_s must be >= 0")

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based)."""
        asked = parse_retry_after(retry_after, self.now())
        if asked is not None:
            return min(asked, self.retry_after_cap_s)
        # "Equal jitter": half the exponential step is fixed, half random, so concurrent
        # probes spread out without any of them retrying immediately.
        step = min(self.max_s, self.base_s * 2.0**attempt)
        return step / 2 + self.jitter() * step / 2


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from ``now`` that a ``Retry-After`` header asks for (delta-seconds or HTTP-date).

    Returns None for a missing or unreadable header; a date in the past gives 0.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT; parsedate gives naive for "-0000"
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


T = TypeVar("T")
# Called before each wait: the retry's number (0-based), the error, and the wait in seconds.
OnRetry = Callable[[int, BaseException, float], None]


def _no_retry_after(_: BaseException) -> float | None:
    return None


@dataclass(frozen=True, slots=True)
class Retry:
    """Retry a call that raised one of ``on`` up to ``retries`` times, ``wait(n, error)`` apart."""

    on: tuple[type[BaseException], ...]
    retries: int
    wait: Callable[[int, BaseException], float]

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")

    @classmethod
    def after(cls, delays_s: Sequence[float], *, on: tuple[type[BaseException], ...]) -> Retry:
        """One retry after each of *delays_s*, in order."""
        delays = tuple(delays_s)
        if any(delay < 0 for delay in delays):
            raise ValueError(f"delays must be >= 0, got {delays}")
        return cls(on=on, retries=len(delays), wait=lambda n, _: delays[n])

    @classmethod
    def backoff(
        cls,
        backoff: Backoff,
        *,
        retries: int,
        on: tuple[type[BaseException], ...],
        retry_after: Callable[[BaseException], float | None] = _no_retry_after,
    ) -> Retry:
        """Waits of *backoff* (jittered exponential), or what the error asks for, capped.

        *retry_after* reads the wait a server asked for from the error (None: it did not
        ask); it is capped at ``backoff.retry_after_cap_s`` so a server asking for minutes
        cannot stall the caller.
        """

        def wait(attempt: int, error: BaseException) -> float:
            asked = retry_after(error)
            if asked is not None:
                return min(max(0.0, asked), backoff.retry_after_cap_s)
            return backoff.delay(attempt)

        return cls(on=on, retries=retries, wait=wait)

    def call(
        self,
        fn: Callable[[], T],
        *,
        sleep: Callable[[float], None] = time.sleep,
        on_retry: OnRetry | None = None,
    ) -> T:
        """``fn()``, retried on ``on``; the last error propagates when the retries run out."""
        attempt = 0
        while True:
            try:
                return fn()
            except self.on as error:
                delay = self._next(attempt, error, on_retry)
            sleep(delay)
            attempt += 1

    async def acall(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_retry: OnRetry | None = None,
    ) -> T:
        """``await fn()``, retried on ``on``; the last error propagates at the end."""
        attempt = 0
        while True:
            try:
                return await fn()
            except self.on as error:
                delay = self._next(attempt, error, on_retry)
            await sleep(delay)
            attempt += 1

    def _next(self, attempt: int, error: BaseException, on_retry: OnRetry | None) -> float:
        if attempt >= self.retries:
            raise error
        delay = self.wait(attempt, error)
        if on_retry is not None:
            on_retry(attempt, error, delay)
        return delay
