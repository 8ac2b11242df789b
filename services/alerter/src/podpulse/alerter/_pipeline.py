"""The alerter's stages wired together: what ``serve`` and the Celery tasks both run.

:class:`Alerter` holds the parts (windows in Redis, evaluator, dispatcher, outbox, notifier)
built from the settings and one rules config; its three steps are plain functions of a clock
value, so ``podpulse alerter serve`` (an embedded scheduler), the Celery tasks (beat) and
tests all call the same code:

- :meth:`Alerter.evaluate` — every rule on every series, then the due groups into the outbox;
- :meth:`Alerter.deliver` — every due delivery in the outbox;
- :meth:`Alerter.on_event` — a bus event (a failing probe run, a release) into the outbox.

Each of the first two runs under a Redis lock (taken without waiting): two alerters, or a
serving alerter and a Celery worker, never evaluate or deliver at the same moment, so states
are not stepped twice and a notification is not sent twice by two senders.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import redis
import structlog

from podpulse.common.events import (
    AlertStateChanged,
    EventError,
    ProbeRunCompleted,
    ReleaseRecorded,
    parse_event,
)
from podpulse.common.retry import Backoff
from podpulse.common.settings import ALERT_WEBHOOK_URL, SLACK_WEBHOOK_URL, SecretError

from ._ingest._metrics import SERIES_EVICTED
from ._notify._dispatch import Dispatcher
from ._notify._events import probe_run_notification, release_announcement
from ._notify._notifier import Notifier
from ._notify._outbox import DeliveryMetrics, Outbox, Receiver
from ._notify._receivers import AlertmanagerReceiver, SlackReceiver, WebhookReceiver
from ._notify._silences import SilenceStore
from ._notify._url import url_problem
from ._rules._evaluator import Evaluator, EvaluatorMetrics
from ._rules._event_alerts import EventAlertStore
from ._rules._model import RulesConfig
from ._rules._state import StateStore
from ._windows._redis import RedisWindowStore
from .settings import AlerterSettings

__all__ = ["Alerter", "configured_receivers", "receiver_url_problems", "window_store"]

log = structlog.get_logger("podpulse.alerter")

# A lock outlives a holder killed mid-step by this much at most; an evaluation takes
# milliseconds, a delivery pass a few quick retries of notify_timeout_s per notification
# (the receivers side by side).
_EVALUATE_LOCK_S = 15
_DELIVER_LOCK_S = 60


def window_store(
    client: redis.Redis, settings: AlerterSettings, clock: Callable[[], float] = time.time
) -> RedisWindowStore:
    """The windows every ingesting process and every evaluator share, in Redis."""
    return RedisWindowStore(
        client,
        prefix=settings.redis_prefix,
        bucket_s=settings.bucket_s,
        retention_s=settings.retention_s,
        max_series=settings.max_series,
        clock=clock,
        on_evict=lambda _: SERIES_EVICTED.inc(),
    )


def configured_receivers(settings: AlerterSettings, http: httpx.AsyncClient) -> list[Receiver]:
    """Slack, the webhook and Alertmanager, each when its URL is configured (now)."""
    receivers: list[Receiver] = []
    timeout_s = settings.notify_timeout_s
    if SLACK_WEBHOOK_URL.origin() is not None:
        receivers.append(SlackReceiver(http, SLACK_WEBHOOK_URL, timeout_s=timeout_s))
    if ALERT_WEBHOOK_URL.origin() is not None:
        receivers.append(
            WebhookReceiver(
                http, ALERT_WEBHOOK_URL, external_url=settings.external_url, timeout_s=timeout_s
            )
        )
    if settings.alertmanager_url is not None:
        url = settings.alertmanager_url
        receivers.append(AlertmanagerReceiver(http, lambda: url, timeout_s=timeout_s))
    return receivers


def receiver_url_problems() -> list[str]:
    """What is wrong with the Slack and webhook URLs as set now, one line each naming the
    variable (never the value); empty when each can be sent to. For the entry points, which
    refuse to start on any (``ALERTMANAGER_URL`` is one of the settings, checked with them).

    A rotated secret is read again on every send: one that turns bad later fails only its
    own receiver's sends (retried), never the others'.
    """
    problems: list[str] = []
    for secret in (SLACK_WEBHOOK_URL, ALERT_WEBHOOK_URL):
        origin = secret.origin()
        if origin is None:
            continue
        try:
            value = secret.get()
        except SecretError as exc:  # *_FILE cannot be read; the message names it
            problems.append(str(exc))
            continue
        problem = url_problem(value) if value else None
        if problem is not None:
            variable = secret.name if origin == "environment" else secret.file_variable
            problems.append(f"{variable}: {problem}")
    return problems


@dataclass
class Alerter:
    """The evaluating and notifying parts on one Redis, for one rules config."""

    client: redis.Redis
    settings: AlerterSettings
    config: RulesConfig
    store: RedisWindowStore
    states: StateStore
    silences: SilenceStore
    evaluator: Evaluator
    notifier: Notifier
    event_alerts: EventAlertStore

    @classmethod
    def build(
        cls,
        client: redis.Redis,
        settings: AlerterSettings,
        config: RulesConfig,
        receivers: list[Receiver],
        *,
        evaluator_metrics: EvaluatorMetrics | None = None,
        delivery_metrics: DeliveryMetrics | None = None,
        store: RedisWindowStore | None = None,
    ) -> Alerter:
        """Every part, on *client*, delivering to *receivers*.

        The counters are the caller's to keep (one set per process, each build of a Celery
        task counting into it); without them, the parts count into sets of their own.
        """
        store = store if store is not None else window_store(client, settings)
        prefix = settings.state_prefix
        states = StateStore(client, prefix)
        silences = SilenceStore(client, prefix)
        evaluator = Evaluator(
            store,
            config,
            states,
            metrics=evaluator_metrics if evaluator_metrics is not None else EvaluatorMetrics(),
            on_change=_log_change,
            external_url=settings.external_url,
        )
        outbox = Outbox(
            client,
            prefix,
            receivers,
            metrics=delivery_metrics if delivery_metrics is not None else DeliveryMetrics(),
            backoff=Backoff(),
            give_up_s=settings.notify_give_up_s,
        )
        am = next((r.name for r in receivers if isinstance(r, AlertmanagerReceiver)), None)
        notifier = Notifier(
            client,
            prefix,
            config,
            Dispatcher(client, prefix, config, silences),
            outbox,
            grouped_receivers=[r.name for r in receivers if r.name != am],
            alertmanager_receiver=am,
            resend_s=settings.alertmanager_resend_s,
        )
        event_alerts = EventAlertStore(client, prefix)
        return cls(
            client, settings, config, store, states, silences, evaluator, notifier, event_alerts
        )

    def _lock(self, what: str, timeout_s: int) -> Any:
        # thread_local=False: the delivery takes and releases its lock in different threads
        # (off the event loop), and a thread-local token would be lost between them.
        name = f"{self.settings.state_prefix}lock:{what}"
        return self.client.lock(name, timeout=timeout_s, thread_local=False)

    def evaluate(self, now: float) -> int | None:
        """One evaluation and its notifications queued; None when another process holds it.

        The evaluation counts at the nearest slot of ``evaluation_interval`` (as Prometheus's
        rule groups evaluate at fixed slots): ticks are never exactly an interval apart, and
        with ``for: 4s`` at a 2 s interval a gap of 3.99 s would fire one evaluation late
        about half the time (measured: breach to webhook P95 11.4 s against 9.6 s).
        """
        lock = self._lock("evaluate", _EVALUATE_LOCK_S)
        if not lock.acquire(blocking=False):
            return None
        try:
            interval = self.config.evaluation_interval
            evaluation = self.evaluator.evaluate(round(now / interval) * interval)
            return self.notifier.queue(evaluation.alerts, now)
        finally:
            _release(lock)

    async def deliver(self, now: float) -> int | None:
        """Every due delivery; how many succeeded (None when another process is delivering)."""
        lock = self._lock("deliver", _DELIVER_LOCK_S)
        # In a thread: this runs on the serving event loop, and a Redis that is stopped or
        # unreachable holds the call for its timeouts and retries (seconds), during which
        # nothing else (/-/healthy, exports) would be answered.
        if not await asyncio.to_thread(lock.acquire, blocking=False):
            return None
        try:
            return await self.notifier.outbox.deliver_due(now)
        finally:
            await asyncio.to_thread(_release, lock)

    def on_event(self, payload: Mapping[str, Any], now: float) -> str:
        """A bus event: a failing probe run is notified, a release announced; what was done."""
        try:
            event = parse_event(payload)
        except EventError as exc:
            # Dropped: a redelivery would fail the same way.
            log.error("alerter.event_invalid", reason=str(exc))  # noqa: TRY400 (no traceback)
            return "invalid"
        if isinstance(event, ProbeRunCompleted | ReleaseRecorded):
            not_news = self._not_news(event, now)
            if not_news is not None:
                return not_news
        if isinstance(event, ProbeRunCompleted):
            return self._on_probe_run(event, now)
        if isinstance(event, ReleaseRecorded):
            self.notifier.notify_event(release_announcement(event), now)
            return "announced"
        log.info("alerter.event_seen", type=event.type, event_id=event.event_id)
        return "ignored"

    def _not_news(self, event: ProbeRunCompleted | ReleaseRecorded, now: float) -> str | None:
        """Why an event is not notified ("stale", "foreign"), logged; None when it is news."""
        settings = self.settings
        at = event.occurred_at.timestamp()
        if now - at > settings.event_max_age_s or at < settings.events_since:
            log.info("alerter.event_stale", type=event.type, event_id=event.event_id,
                     age_s=round(now - at), max_age_s=settings.event_max_age_s,
                     since=settings.events_since or None)  # fmt: skip
            return "stale"
        if settings.endpoint_ids and event.endpoint_id not in settings.endpoint_ids:
            log.info("alerter.event_foreign", type=event.type, event_id=event.event_id,
                     endpoint=event.endpoint_id, watched=list(settings.endpoint_ids))  # fmt: skip
            return "foreign"
        return None

    def _on_probe_run(self, event: ProbeRunCompleted, now: float) -> str:
        # Kept first: the failed run shows as firing (ALERTS, alerts status) until a later
        # run of its kind passes, whatever happens to its notification.
        started = self.event_alerts.record(event)
        notification = probe_run_notification(event, external_url=self.settings.external_url)
        if notification is None:
            return "passed"
        if not started:
            # Its alert already fires (an earlier failed run): renewed, not re-sent, as a
            # firing rule's alert is not re-sent before its repeat_interval.
            return "renewed"
        self.notifier.notify_event(notification, now)
        return "notified"


def _release(lock: Any) -> None:
    # LockError: it expired under a slow holder; the next one has it, nothing to undo.
    with contextlib.suppress(redis.exceptions.LockError):
        lock.release()


def _log_change(event: AlertStateChanged) -> None:
    log.info(
        "alert." + event.state,
        rule=event.rule,
        severity=event.severity,
        value=event.value,
        threshold=event.threshold,
        labels=event.labels,
    )
