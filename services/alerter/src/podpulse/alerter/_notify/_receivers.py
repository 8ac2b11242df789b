"""The receivers: Slack incoming webhook, generic webhook (Alertmanager v4), Alertmanager.

Each takes an injected ``httpx.AsyncClient`` and reads its URL from a secret on every send
(a rotated URL takes effect at once); no URL is ever logged or put in an error message. Much
as Alertmanager's webhook notifier (which retries 5xx only; 408 and 429 say "later" too):

- one request, its answer read to the end, takes at most ``timeout_s`` in all (Alertmanager
  bounds the POST by a context deadline); httpx's own timeouts bound each read only, so a
  receiver sending a byte every few seconds would otherwise hold the send for minutes;
- redirects are followed as Go's client follows them (307 and 308 repeat the POST, 301, 302
  and 303 make it a GET); a 3xx left over (no ``Location``, too many hops) is retried;
- 2xx is delivered, 5xx, 408, 429, a timeout and connection errors are worth retrying, any
  other 4xx is refused for good;
- a URL that is missing, unreadable or malformed (a rotated secret file) fails this receiver's
  send, to be retried, and nothing else (the entry points refuse a malformed or unreadable one
  at start: ``podpulse.alerter._pipeline.receiver_url_problems``).

Every request carries ``Idempotency-Key``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from podpulse.common.retry import parse_retry_after
from podpulse.common.settings import Secret, SecretError

from ._dispatch import Notification
from ._outbox import DeliveryError, PermanentDeliveryError
from ._payloads import alertmanager_alerts, slack_message, webhook_message
from ._url import url_problem

__all__ = ["AlertmanagerReceiver", "SlackReceiver", "WebhookReceiver"]

UrlSource = Secret | Callable[[], str | None]

# ALERTER_NOTIFY_TIMEOUT_S's default, for receivers built without the settings.
DEFAULT_TIMEOUT_S = 10.0


def _url(source: UrlSource, what: str) -> str:
    try:
        value = source.get() if isinstance(source, Secret) else source()
    except SecretError as exc:  # its *_FILE cannot be read: says which file, not the value
        raise DeliveryError(f"{what} URL: {exc}") from None
    if not value:
        raise DeliveryError(f"{what} URL is not set")
    problem = url_problem(value)
    if problem is not None:
        raise DeliveryError(f"{what} URL: {problem}")
    return value


async def _post(
    client: httpx.AsyncClient, url: str, body: Any, key: str, *, what: str, timeout_s: float
) -> httpx.Response:
    try:
        async with asyncio.timeout(timeout_s):
            response = await client.post(
                url, json=body, headers={"Idempotency-Key": key}, follow_redirects=True
            )
    except TimeoutError:
        raise DeliveryError(f"{what}: no whole answer within {timeout_s:g} s") from None
    except httpx.HTTPError as exc:
        # The exception's text can hold the URL; say only what kind of failure it was.
        raise DeliveryError(f"{what}: {type(exc).__name__}") from None
    code = response.status_code
    if 200 <= code < 300:
        return response
    # A 3xx still here was not followed (no Location): Go's client would hand it back too,
    # and nothing says the receiver refused the notification; try again later.
    if 300 <= code < 400 or code >= 500 or code in (408, 429):
        asked = parse_retry_after(response.headers.get("Retry-After"), _utc_now())
        raise DeliveryError(f"{what}: HTTP {code}", retry_after=asked)
    raise PermanentDeliveryError(f"{what}: HTTP {code}")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class WebhookReceiver:
    """POSTs Alertmanager's webhook payload (version 4) to ALERT_WEBHOOK_URL."""

    def __init__(
        self, client: httpx.AsyncClient, url: UrlSource, *, external_url: str = "",
        name: str = "webhook", timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:  # fmt: skip
        self.name = name
        self._client = client
        self._url = url
        self._external_url = external_url
        self._timeout_s = timeout_s

    async def send(self, notification: Notification) -> None:
        """Deliver one notification."""
        body = webhook_message(notification, self._external_url)
        url = _url(self._url, "webhook")
        await _post(
            self._client, url, body, notification.key, what="webhook", timeout_s=self._timeout_s
        )


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
        timeout_s: float = DEFAULT_TIMEOUT_S,
        min_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self._client = client
        self._url = url
        self._timeout_s = timeout_s
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
        body = slack_message(notification)
        await _post(
            self._client, url, body, notification.key, what="slack", timeout_s=self._timeout_s
        )


class AlertmanagerReceiver:
    """POSTs the alerts to an Alertmanager's ``/api/v2/alerts``, as Prometheus does."""

    def __init__(
        self, client: httpx.AsyncClient, base_url: UrlSource, *, name: str = "alertmanager",
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:  # fmt: skip
        self.name = name
        self._client = client
        self._base_url = base_url
        self._timeout_s = timeout_s

    async def send(self, notification: Notification) -> None:
        """Deliver one batch of alerts."""
        url = _url(self._base_url, "alertmanager").rstrip("/") + "/api/v2/alerts"
        body = alertmanager_alerts(notification.alerts)
        await _post(
            self._client,
            url,
            body,
            notification.key,
            what="alertmanager",
            timeout_s=self._timeout_s,
        )
