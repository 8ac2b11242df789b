"""One way to retry a call: which errors, how many times, and how long to wait before each.

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
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from podpulse.common.runpod import Backoff

__all__ = ["OnRetry", "Retry"]

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
