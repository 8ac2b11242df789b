"""At-least-once delivery: every notification waits in Redis until its receiver took it.

A notification is enqueued once per receiver (one hash entry and one score in a due-time
sorted set); :meth:`Outbox.deliver_due` sends what is due, with a few quick retries
(``podpulse.common.retry``) inside the attempt. What still fails stays, due again after a
backoff (or the ``Retry-After`` asked for), so a receiver down for minutes gets everything
once it is back. Duplicates can only happen after a send whose answer was lost, and they carry
the same idempotency key.

Each receiver's notifications go in the order they were queued: one not yet due again (a
failed send backing off) holds back every later one to that receiver, so a resolution never
overtakes its firing, and a receiver that asked to wait (a 429's ``Retry-After``) is not sent
anything else meanwhile. Receivers are served side by side, one task each: a slow or hanging
one (each try bounded by the receiver's timeout) never delays another's notifications. The
outbox's Redis calls run in threads, off the event loop ``alerter serve`` answers HTTP on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import redis
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel

from podpulse.common.retry import Backoff, Retry

from ._dispatch import Notification

__all__ = ["DeliveryError", "DeliveryMetrics", "Outbox", "PermanentDeliveryError", "Receiver"]

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """A send failed in a way worth retrying; ``retry_after`` what the receiver asked for."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentDeliveryError(Exception):
    """The receiver refused the notification for good (a 4xx other than 408 and 429)."""


class Receiver(Protocol):
    """Somewhere notifications go; ``send`` raises DeliveryError or PermanentDeliveryError."""

    name: str

    async def send(self, notification: Notification) -> None:
        """Deliver one notification (its ``key`` is the idempotency key)."""


@dataclass(frozen=True)
class DeliveryMetrics:
    """The outbox's counters per receiver, in *registry* (one set per registry: make one per
    process; the serving alerter's ``/metrics`` collects it beside the evaluator's)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        object.__setattr__(self, "sent", Counter(
            "podpulse_alerter_notifications_sent", "Notifications a receiver accepted.",
            ["receiver"], registry=r))  # fmt: skip
        object.__setattr__(self, "failed", Counter(
            "podpulse_alerter_notifications_failed",
            "Delivery attempts that failed (each retry counts once more).",
            ["receiver"], registry=r))  # fmt: skip
        object.__setattr__(self, "retried", Counter(
            "podpulse_alerter_notifications_retried",
            "Delivery attempts that were a retry of an earlier failed one.",
            ["receiver"], registry=r))  # fmt: skip
        object.__setattr__(self, "dropped", Counter(
            "podpulse_alerter_notifications_dropped",
            "Notifications given up on (a permanent 4xx, or older than notify_give_up_s).",
            ["receiver"], registry=r))  # fmt: skip

    sent: Counter = field(init=False)
    failed: Counter = field(init=False)
    retried: Counter = field(init=False)
    dropped: Counter = field(init=False)


class _Entry(BaseModel):
    receiver: str
    notification: Notification
    attempts: int = 0
    enqueued_at: float


def _retry_after(error: BaseException) -> float | None:
    return error.retry_after if isinstance(error, DeliveryError) else None


class Outbox:
    """Notifications per receiver under ``<prefix>outbox``, due times in ``<prefix>outbox:due``."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        receivers: Sequence[Receiver],
        *,
        metrics: DeliveryMetrics,
        backoff: Backoff,
        quick_retries: int = 2,
        give_up_s: float = 86400.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if any(":" in r.name for r in receivers):
            raise ValueError("a receiver's name must not hold ':' (it is part of entry ids)")
        self._client = client
        self._hash = f"{prefix}outbox"
        self._due = f"{prefix}outbox:due"
        self._receivers = {r.name: r for r in receivers}
        self._metrics = metrics
        self._backoff = backoff
        self._retry = Retry.backoff(
            backoff, retries=quick_retries, on=(DeliveryError,), retry_after=_retry_after
        )
        self._give_up_s = give_up_s
        self._sleep = sleep

    @property
    def receivers(self) -> list[str]:
        """The receivers' names, in the order they were given."""
        return list(self._receivers)

    def enqueue(
        self,
        notifications: Sequence[Notification],
        now: float,
        *,
        receivers: Sequence[str] | None = None,
    ) -> None:
        """Keep each notification for each of *receivers* (default: all), due at once."""
        pipe = self._client.pipeline(transaction=True)
        self.stage(pipe, notifications, now, receivers=receivers)
        pipe.execute()

    def stage(
        self,
        pipe: redis.client.Pipeline,
        notifications: Sequence[Notification],
        now: float,
        *,
        receivers: Sequence[str] | None = None,
    ) -> None:
        """:meth:`enqueue` into *pipe*, for the caller to execute with what made them."""
        # None is every receiver; an empty list is none (a notifier whose only receiver is
        # Alertmanager has no grouped receivers: its group flushes must not reach it).
        wanted = self._receivers if receivers is None else receivers
        names = [n for n in wanted if n in self._receivers]
        if not notifications or not names:
            return
        for n, notification in enumerate(notifications):
            for name in names:
                entry_id = f"{now:017.6f}:{n:04d}:{name}:{notification.key}"
                entry = _Entry(receiver=name, notification=notification, enqueued_at=now)
                pipe.hset(self._hash, entry_id, entry.model_dump_json())
                pipe.zadd(self._due, {entry_id: now})

    def pending(self) -> int:
        """How many (notification, receiver) deliveries are still owed."""
        return int(self._client.hlen(self._hash))

    async def deliver_due(self, now: float) -> int:
        """Try every delivery due at *now*, each receiver's in its own task; how many
        succeeded.

        Every receiver's tries run to their end before this returns, even when another's
        raised (a Redis error): cancelling a send in flight would only send it again later.
        """
        queues = await asyncio.to_thread(self._due_queues, now)
        results = await asyncio.gather(
            *(self._deliver_queue(entries, now) for entries in queues.values()),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return sum(r for r in results if isinstance(r, int))

    def _due_queues(self, now: float) -> dict[str, list[tuple[str, bytes | None]]]:
        """Per receiver, its entries (id, value) that may be tried now, oldest first: those
        queued before the first one that is not due."""
        scored: list[tuple[bytes, float]] = self._client.zrange(self._due, 0, -1, withscores=True)  # type: ignore[assignment]  # decode_responses off: bytes
        heads: dict[str, list[str]] = {}
        held: set[str] = set()
        # Entry ids start with the enqueue time, so sorting keeps each receiver's order.
        for raw_id, due_at in sorted(scored):
            entry_id = raw_id.decode()
            receiver = _receiver_of(entry_id)
            if receiver in held:
                continue
            if due_at > now:
                held.add(receiver)
                continue
            heads.setdefault(receiver, []).append(entry_id)
        wanted = [entry_id for ids in heads.values() for entry_id in ids]
        if not wanted:
            return {}
        values: list[bytes | None] = self._client.hmget(self._hash, wanted)  # type: ignore[assignment]  # decode_responses off: bytes
        found = dict(zip(wanted, values, strict=True))
        return {name: [(i, found[i]) for i in ids] for name, ids in heads.items()}

    async def _deliver_queue(self, entries: Sequence[tuple[str, bytes | None]], now: float) -> int:
        delivered = 0
        for entry_id, value in entries:
            if value is None:  # its hash entry went with a delivery whose zrem was lost
                await asyncio.to_thread(self._client.zrem, self._due, entry_id)
                continue
            entry = _Entry.model_validate_json(value)
            receiver = self._receivers.get(entry.receiver)
            if receiver is None or now - entry.enqueued_at > self._give_up_s:
                why = "no such receiver" if receiver is None else "too old"
                await asyncio.to_thread(self._drop, entry_id, entry, why)
                continue
            outcome = await self._attempt(entry_id, entry, receiver, now)
            if outcome == "sent":
                delivered += 1
            elif outcome == "later":
                break  # what follows waits for it
        return delivered

    async def _attempt(
        self, entry_id: str, entry: _Entry, receiver: Receiver, now: float
    ) -> Literal["sent", "dropped", "later"]:
        name = receiver.name
        if entry.attempts:
            self._metrics.retried.labels(receiver=name).inc()

        def on_retry(_: int, error: BaseException, delay: float) -> None:
            self._metrics.failed.labels(receiver=name).inc()
            self._metrics.retried.labels(receiver=name).inc()
            log.warning("notify %s failed (%s); retrying in %.1f s", name, error, delay)

        try:
            await self._retry.acall(
                lambda: receiver.send(entry.notification), sleep=self._sleep, on_retry=on_retry
            )
        except PermanentDeliveryError as error:
            self._metrics.failed.labels(receiver=name).inc()
            await asyncio.to_thread(self._drop, entry_id, entry, str(error))
            return "dropped"  # refused for good: what follows may still be accepted
        except Exception as exc:  # a receiver's bug too: it must not stop the others
            failure = exc if isinstance(exc, DeliveryError) else DeliveryError(type(exc).__name__)
            self._metrics.failed.labels(receiver=name).inc()
            attempts = entry.attempts + 1
            wait = self._backoff.delay(attempts)
            if failure.retry_after is not None:
                wait = min(failure.retry_after, self._backoff.retry_after_cap_s)
            # Only DeliveryError's text is ours; another's could quote the URL.
            log.warning("notify %s failed (%s); kept, next try in %.1f s", name, failure, wait)
            later = entry.model_copy(update={"attempts": attempts})
            await asyncio.to_thread(self._reschedule, entry_id, later, now + wait)
            return "later"
        self._metrics.sent.labels(receiver=name).inc()
        await asyncio.to_thread(self._remove, entry_id)
        return "sent"

    def _reschedule(self, entry_id: str, entry: _Entry, due_at: float) -> None:
        pipe = self._client.pipeline(transaction=True)
        pipe.hset(self._hash, entry_id, entry.model_dump_json())
        pipe.zadd(self._due, {entry_id: due_at})
        pipe.execute()

    def _remove(self, entry_id: str) -> None:
        pipe = self._client.pipeline(transaction=True)
        pipe.hdel(self._hash, entry_id)
        pipe.zrem(self._due, entry_id)
        pipe.execute()

    def _drop(self, entry_id: str, entry: _Entry, why: str) -> None:
        self._metrics.dropped.labels(receiver=entry.receiver).inc()
        log.error("notification %s to %s dropped: %s", entry.notification.key, entry.receiver, why)
        self._remove(entry_id)


def _receiver_of(entry_id: str) -> str:
    # "<enqueued at>:<n>:<receiver>:<key>" (Outbox.stage); receiver names hold no colon.
    return entry_id.split(":", 3)[2]
