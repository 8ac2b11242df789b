"""How long to wait before retrying: ``Retry-After`` when RunPod sends it, else backoff."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


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
