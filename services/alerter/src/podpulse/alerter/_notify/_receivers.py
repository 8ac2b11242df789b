"""The receivers: Slack incoming webhook, generic webhook (Alertmanager v4), Alertmanager.

Each takes an injected ``httpx.AsyncClient`` and reads its URL from a secret on every send
(a rotated URL takes effect at once); no URL is ever logged or put in an error message. As
Alertmanager's retrier: 2xx is delivered, 5xx, 408, 429 and connection errors are worth
retrying, any other 4xx is refused for good. Every request carries ``Idempotency-Key``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from podpulse.common.retry import parse_retry_after
from podpulse.common.settings import Secret

from ._dispatch import Notification
from ._outbox import DeliveryError, PermanentDeliveryError
from ._payloads import alertmanager_alerts, slack_message, webhook_message

__all__ = ["AlertmanagerReceiver", "SlackReceiver", "WebhookReceiver"]

UrlSource = Secret | Callable[[], str | None]


def _url(source: UrlSource, what: str) -> str:
    value = source.get() if isinstance(source, Secret) else source()
    if not value:
        raise DeliveryError(f"{what} URL is not set")
    return value


async def _post(
    client: httpx.AsyncClient, url: str, body: Any, key: str, what: str
) -> httpx.Response:
    try:
        response = await client.post(url, json=body, headers={"Idempotency-Key": key})
    except httpx.HTTPError as exc:
        # The exception's text can hold the URL; say only what kind of failure it was.
        raise DeliveryError(f"{what}: {type(exc).__name__}") from None
    code = response.status_code
    if 200 <= code < 300:
        return response
    if code >= 500 or code in (408, 429):
        asked = parse_retry_after(response.headers.get("Retry-After"), _utc_now())
        raise DeliveryError(f"{what}: HTTP {code}", retry_after=asked)
    raise PermanentDeliveryError(f"{what}: HTTP {code}")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class WebhookReceiver:
    """POSTs Alertmanager's webhook payload (version 4) to ALERT_WEBHOOK_URL."""

    def __init__(
        self, client: httpx.AsyncClient, url: UrlSource, *, external_url: str = "",
        name: str = "webhook",
    ) -> None:  # fmt: skip
        self.name = name
        self._client = client
        self._url = url
        self._external_url = external_url

    async def send(self, notification: Notification) -> None:
        """Deliver one notification."""
        body = webhook_message(notification, self._external_url)
        await _post(self._client, _url(self._url, "webhook"), body, notification.key, "webhook")


class SlackReceiver:
    """POSTs blocks with a text fallback to a Slack incoming webhook, at most one a second.

    Slack allows one message per second per incoming webhook and answers more with 429 and
    ``Retry-After``; the pause is kept here, per process, the 429 handled by the outbox.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: UrlSource,
        *,
        name: str = "slack",
        min_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self._client = client
        self._url = url
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._sleep = sleep
        self._last_sent: dict[str, float] = {}

    async def send(self, notification: Notification) -> None:
        """Deliver one notification, waiting out the 1 message/s pace first."""
        url = _url(self._url, "slack")
        last = self._last_sent.get(url)
        if last is not None:
            wait = last + self._min_interval_s - self._clock()
            if wait > 0:
                await self._sleep(wait)
        self._last_sent[url] = self._clock()
        await _post(self._client, url, slack_message(notification), notification.key, "slack")


class AlertmanagerReceiver:
    """POSTs the alerts to an Alertmanager's ``/api/v2/alerts``, as Prometheus does."""

    def __init__(
        self, client: httpx.AsyncClient, base_url: UrlSource, *, name: str = "alertmanager"
    ) -> None:
        self.name = name
        self._client = client
        self._base_url = base_url

    async def send(self, notification: Notification) -> None:
        """Deliver one batch of alerts."""
        url = _url(self._base_url, "alertmanager").rstrip("/") + "/api/v2/alerts"
        body = alertmanager_alerts(notification.alerts)
        await _post(self._client, url, body, notification.key, "alertmanager")
