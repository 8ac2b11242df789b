"""The notifier: alerts in, grouped and deduplicated notifications out, delivered at least once.

One :meth:`Notifier.tick` per evaluation: the alerts go to the dispatcher (podpulse's own
receivers: Slack, webhook) and, the way Prometheus sends them, to an Alertmanager; then
every due delivery is tried. Notifications that come from no rule (``._events``: a probe run
that failed its SLO, a recorded release) go through the same outbox.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import redis

from .._rules._alert import Alert
from .._rules._model import RulesConfig
from ._dispatch import Dispatcher, Notification, group_key, idempotency_key
from ._outbox import Outbox

__all__ = ["Notifier"]


class Notifier:
    """Dispatcher + Alertmanager push + outbox, all kept in Redis under one prefix."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        config: RulesConfig,
        dispatcher: Dispatcher,
        outbox: Outbox,
        *,
        grouped_receivers: Sequence[str],
        alertmanager_receiver: str | None = None,
        resend_s: float = 60.0,
    ) -> None:
        self._client = client
        self._sent = f"{prefix}am:sent"
        self._seq = f"{prefix}am:seq"
        self._config = config
        self.dispatcher = dispatcher
        self.outbox = outbox
        self._grouped = list(grouped_receivers)
        self._am = alertmanager_receiver
        self._resend_s = resend_s

    async def tick(self, alerts: Sequence[Alert], now: float) -> int:
        """Hand over one evaluation's alerts, flush due groups, deliver; deliveries made."""
        self.queue(alerts, now)
        return await self.outbox.deliver_due(now)

    def queue(self, alerts: Sequence[Alert], now: float) -> int:
        """:meth:`tick` without the delivery (the split alerter delivers on another queue);
        how many notifications went into the outbox for the grouped receivers.

        What was sent (the notification log, Alertmanager's last sends) and what is owed (the
        outbox) are written in one transaction: a process killed half-way through neither
        forgets a notification it logged as sent nor queues one it did not log.
        """
        groups = self.dispatcher.ingest(alerts, now)
        pipe = self._client.pipeline(transaction=True)
        notifications = self.dispatcher.flush_due(now, pipe, groups)
        self.outbox.stage(pipe, notifications, now, receivers=self._grouped)
        if self._am is not None:
            self._push_alertmanager(alerts, now, pipe)
        pipe.execute()
        return len(notifications)

    def notify_event(self, notification: Notification, now: float) -> None:
        """Queue an event's notification for the grouped receivers (Slack, webhook)."""
        self.outbox.enqueue([notification], now, receivers=self._grouped)

    def _push_alertmanager(
        self, alerts: Sequence[Alert], now: float, pipe: redis.client.Pipeline
    ) -> None:
        # Prometheus's AlertingRule.sendAlerts: a firing alert is sent when never sent, or
        # resend_s after the last send, valid for 4 x max(resend, evaluation interval); a
        # resolved one once after it resolved, with its real endsAt.
        raw: Mapping[bytes, bytes] = self._client.hgetall(self._sent)  # type: ignore[assignment]  # decode_responses off: bytes
        sent = {k.decode(): json.loads(v) for k, v in raw.items()}
        valid_for = 4 * max(self._resend_s, self._config.evaluation_interval)
        batch: list[Alert] = []
        updates: dict[str, str] = {}
        for alert in alerts:
            fp = alert.fingerprint
            last = sent.get(fp)
            if alert.ends_at is None:
                if last is not None and not last["resolved"] and last["at"] + self._resend_s > now:
                    continue
                batch.append(alert.model_copy(update={"ends_at": now + valid_for}))
                updates[fp] = json.dumps({"at": now, "resolved": False})
            elif last is None or not last["resolved"]:
                if last is None and alert.ends_at < now - self._resend_s:
                    continue  # resolved long before this notifier ever saw it firing
                batch.append(alert)
                updates[fp] = json.dumps({"at": now, "resolved": True})
        live = {a.fingerprint for a in alerts}
        if updates:
            pipe.hset(self._sent, mapping=updates)  # type: ignore[arg-type]  # Mapping is invariant in its key: str is fine
        gone = [fp for fp in sent if fp not in live]
        if gone:
            pipe.hdel(self._sent, *gone)
        if batch and self._am is not None:
            # At once, outside the transaction: its value names the notification. A process
            # that dies before the transaction only leaves a gap in the sequence.
            seq = int(self._client.incr(self._seq))
            key = group_key({"receiver": "alertmanager"})
            notification = Notification(
                key=idempotency_key(key, seq), group_key=key, group_labels={}, alerts=batch, at=now
            )
            self.outbox.stage(pipe, [notification], now, receivers=[self._am])
