"""Delivery is ordered, bounded and never stuck: the outbox on real Redis, sending to real
loopback receivers that drip, redirect, back off or cannot be reached."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import pytest
from alerter_helpers import FakeClock, answering, dripping, recorder

from podpulse.alerter._notify._dispatch import Notification, group_key, idempotency_key
from podpulse.alerter._notify._outbox import DeliveryMetrics, Outbox, Receiver
from podpulse.alerter._notify._receivers import WebhookReceiver
from podpulse.alerter._pipeline import configured_receivers
from podpulse.alerter._rules._alert import Alert
from podpulse.alerter.settings import AlerterSettings
from podpulse.common.retry import Backoff

GROUP = group_key({"alertname": "ExecP95High"})


def _notification(seq: int, at: float, *, resolved: bool = False) -> Notification:
    alert = Alert(labels={"alertname": "ExecP95High", "endpoint": "ep1"}, starts_at=at - 60,
                  ends_at=at if resolved else None)  # fmt: skip
    return Notification(key=idempotency_key(GROUP, seq), group_key=GROUP, alerts=[alert],
                        group_labels={"alertname": "ExecP95High"}, at=at)  # fmt: skip


def _outbox(client, prefix: str, receivers: Sequence[Receiver], clock: FakeClock) -> Outbox:
    """One try per pass (no quick retries): each failure is one backoff, the tests stay short."""
    backoff = Backoff(base_s=1.0, max_s=8.0, sleep=clock.sleep, jitter=lambda: 0.0)
    return Outbox(client, prefix, receivers, metrics=DeliveryMetrics(), backoff=backoff,
                  quick_retries=0, sleep=clock.sleep)  # fmt: skip


def _count(outbox: Outbox, what: str, receiver: str) -> float:
    return getattr(outbox._metrics, what).labels(receiver=receiver)._value.get()


class Noted:
    """A receiver that notes, in *events*, each send's end: ``<name> delivered|failed``."""

    def __init__(self, inner: Receiver, events: list[str]) -> None:
        self.name = inner.name
        self._inner = inner
        self._events = events

    async def send(self, notification: Notification) -> None:
        try:
            await self._inner.send(notification)
        except Exception:
            self._events.append(f"{self.name} failed")
            raise
        self._events.append(f"{self.name} delivered")


@pytest.fixture
def only(monkeypatch: pytest.MonkeyPatch):
    """Set exactly the receiver URLs given (the others unset), and ALERTER_NOTIFY_TIMEOUT_S."""

    def configure(timeout_s: float, **urls: str) -> AlerterSettings:
        for name in ("SLACK_WEBHOOK_URL", "ALERT_WEBHOOK_URL", "ALERTMANAGER_URL"):
            monkeypatch.delenv(name, raising=False)
            monkeypatch.delenv(f"{name}_FILE", raising=False)
        for name, url in urls.items():
            monkeypatch.setenv(name, url)
        monkeypatch.setenv("ALERTER_NOTIFY_TIMEOUT_S", str(timeout_s))
        return AlerterSettings()

    return configure


async def test_notify_timeout_bounds_an_answer_that_drips_in(
    redis_client, key_prefix, only
) -> None:
    """ALERTER_NOTIFY_TIMEOUT_S bounds the whole attempt: a receiver answering one byte at a
    time (each read quick) is cut off, the send counted failed and kept for a later try."""
    clock = FakeClock()
    with dripping(every_s=0.1, length=40) as drip:
        settings = only(0.5, ALERT_WEBHOOK_URL=drip.url)
        async with httpx.AsyncClient(timeout=settings.notify_timeout_s) as http:
            outbox = _outbox(redis_client, key_prefix, configured_receivers(settings, http), clock)
            outbox.enqueue([_notification(1, clock.now)], clock.now)
            assert await outbox.deliver_due(clock.now) == 0
    assert drip.posts == 1
    assert outbox.pending() == 1
    assert _count(outbox, "failed", "webhook") == 1
    assert _count(outbox, "sent", "webhook") == 0


async def test_a_hanging_receiver_does_not_hold_up_another(redis_client, key_prefix, only) -> None:
    """Slack's answer drips in while the webhook is fine: the webhook has its notification
    before Slack's attempt ends, whichever comes first in the outbox."""
    clock = FakeClock()
    events: list[str] = []
    with dripping(every_s=0.1, length=40) as drip, recorder() as rec:
        settings = only(0.5, SLACK_WEBHOOK_URL=drip.url, ALERT_WEBHOOK_URL=rec.url)
        async with httpx.AsyncClient(timeout=settings.notify_timeout_s) as http:
            receivers = [Noted(r, events) for r in configured_receivers(settings, http)]
            assert [r.name for r in receivers] == ["slack", "webhook"]
            outbox = _outbox(redis_client, key_prefix, receivers, clock)
            outbox.enqueue([_notification(1, clock.now)], clock.now)
            assert await outbox.deliver_due(clock.now) == 1
    assert events == ["webhook delivered", "slack failed"]
    assert [b["status"] for b in rec.bodies()] == ["firing"]


async def test_a_resolution_never_overtakes_its_firing(redis_client, key_prefix) -> None:
    """The firing is told to wait (503, Retry-After) and the resolution is queued meanwhile:
    the resolution waits behind it and the receiver gets firing, then resolved; another
    receiver is not held back by the first one's wait."""
    clock = FakeClock()
    with recorder() as rec, recorder() as other:
        rec.faults = [(503, "60")]
        async with httpx.AsyncClient() as http:
            hook = WebhookReceiver(http, lambda: rec.url)
            fine = WebhookReceiver(http, lambda: other.url, name="other")
            outbox = _outbox(redis_client, key_prefix, [hook, fine], clock)
            outbox.enqueue([_notification(1, clock.now)], clock.now)
            assert await outbox.deliver_due(clock.now) == 1  # "other" only
            clock.now += 10  # the firing is due again in 30 s (the Retry-After, capped)
            outbox.enqueue([_notification(2, clock.now, resolved=True)], clock.now)
            assert await outbox.deliver_due(clock.now) == 1  # "other" only, again
            assert rec.bodies() == []
            clock.now += 30
            assert await outbox.deliver_due(clock.now) == 2
    assert [b["status"] for b in rec.bodies()] == ["firing", "resolved"]
    assert [b["status"] for b in other.bodies()] == ["firing", "resolved"]
    assert outbox.pending() == 0


@pytest.mark.parametrize("status", [307, 308])
async def test_a_redirect_is_followed_with_the_post(redis_client, key_prefix, status) -> None:
    """A 307 or 308 to the real receiver is followed, the POST and its key repeated there, as
    Go's client (so Alertmanager) follows it; nothing is dropped."""
    clock = FakeClock()
    with recorder() as rec, answering(status, {"Location": rec.url}) as moved:
        async with httpx.AsyncClient() as http:
            hook = WebhookReceiver(http, lambda: moved.url)
            outbox = _outbox(redis_client, key_prefix, [hook], clock)
            notification = _notification(1, clock.now)
            outbox.enqueue([notification], clock.now)
            assert await outbox.deliver_due(clock.now) == 1
    assert moved.posts == 1
    assert [b["status"] for b in rec.bodies()] == ["firing"]
    assert rec.keys() == [notification.key]
    assert outbox.pending() == 0
    assert _count(outbox, "dropped", "webhook") == 0


async def test_a_3xx_that_cannot_be_followed_is_retried_not_dropped(
    redis_client, key_prefix
) -> None:
    """A 3xx with nowhere to go (no Location) is no refusal: the notification is kept and
    tried again, not dropped as a 4xx would be."""
    clock = FakeClock()
    with answering(300) as odd:
        async with httpx.AsyncClient() as http:
            hook = WebhookReceiver(http, lambda: odd.url)
            outbox = _outbox(redis_client, key_prefix, [hook], clock)
            outbox.enqueue([_notification(1, clock.now)], clock.now)
            assert await outbox.deliver_due(clock.now) == 0
            clock.now += 60
            assert await outbox.deliver_due(clock.now) == 0
    assert odd.posts == 2
    assert outbox.pending() == 1
    assert _count(outbox, "dropped", "webhook") == 0


async def test_a_malformed_url_fails_its_own_receiver_only(redis_client, key_prefix) -> None:
    """A URL httpx cannot parse (a rotated secret gone bad) fails that receiver's sends, kept
    for retry; every other receiver is still delivered to, pass after pass."""
    clock = FakeClock()
    with recorder() as rec:
        async with httpx.AsyncClient() as http:
            bad = WebhookReceiver(http, lambda: "http://[::1/x", name="bad")
            good = WebhookReceiver(http, lambda: rec.url)
            outbox = _outbox(redis_client, key_prefix, [bad, good], clock)
            for seq in (1, 2):
                outbox.enqueue([_notification(seq, clock.now)], clock.now)
                assert await outbox.deliver_due(clock.now) == 1
                clock.now += 60
    assert len(rec.bodies()) == 2
    assert outbox.pending() == 2  # the bad receiver's two, in order
    assert _count(outbox, "failed", "bad") == 2
