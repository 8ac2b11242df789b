"""Alerts from events that stay on show: a failed probe run is firing until it is answered.

A rule's alert lives in the state store; a ``ProbeRunFailedSlo`` is one notification of an
event, and without this it showed nowhere once sent (the ``up`` view said "none firing"
while the webhook had it). Here it is kept in one Redis hash, a field per endpoint and probe
kind, until a later run of that kind on that endpoint passes, or for an hour after its last
failed run: ``ALERTS`` on ``/metrics`` and ``podpulse alerts status`` show it firing
meanwhile. Like a rule's alert, it is notified when it starts firing; further failed runs
while it fires renew it (their run is the one shown) without another notification.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis
import structlog

from podpulse.common.events import ProbeRunCompleted

__all__ = ["EVENT_ALERT_S", "EventAlert", "EventAlertStore"]

log = structlog.get_logger("podpulse.alerter")

# How long a failed run's alert shows when no later run of its kind answers it.
EVENT_ALERT_S = 3600.0


@dataclass(frozen=True)
class EventAlert:
    """A firing alert that came from an event: its labels, its summary, since when."""

    labels: dict[str, str]
    summary: str
    since: float


class EventAlertStore:
    """The firing event alerts, in Redis under ``{prefix}event_alerts``."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self._key = f"{prefix}event_alerts"

    def record(self, event: ProbeRunCompleted) -> bool:
        """A failed run starts or renews its alert; a passing one ends an older one. True when
        this event started an alert (the one to notify)."""
        field = f"{event.endpoint_id}\x1f{event.kind}"
        at = event.occurred_at.timestamp()
        kept = _parsed(self._client.hget(self._key, field))
        last = _time(kept, "last")
        if not event.slo_passed:
            firing = kept is not None and at - last <= EVENT_ALERT_S
            if firing and (kept or {}).get("event_id") == event.event_id:
                # The same event again (a redelivery, perhaps after a crash before its
                # notification was queued): notified again, under the same idempotency key.
                return True
            if firing and last > at:
                return False  # an older failed run, read late: the newer one stays shown
            alert = {
                "labels": {
                    "alertname": "ProbeRunFailedSlo",
                    "severity": "critical",
                    "endpoint": event.endpoint_id,
                    "probe_kind": event.kind,
                },
                "summary": f"{event.kind} run {event.run_id} failed its SLO",
                "since": min(at, _time(kept, "since")) if firing else at,
                "last": at,
                "event_id": event.event_id,
            }
            self._client.hset(self._key, field, json.dumps(alert))
            return not firing
        # A pass answers only a failure before it: events may arrive out of order.
        if kept is not None and last <= at:
            self._client.hdel(self._key, field)
        return False

    def firing(self, now: float) -> list[EventAlert]:
        """The alerts still on show at *now*, oldest first; expired ones are dropped."""
        alerts, expired = [], []
        for field, raw in self._client.hgetall(self._key).items():
            try:
                data = json.loads(raw)
                alert = EventAlert(dict(data["labels"]), str(data["summary"]), float(data["since"]))
                last = float(data["last"])
            except (ValueError, KeyError, TypeError):
                # Written by another version, or damaged: it cannot be shown, so it goes.
                log.warning("alerter.event_alert_unreadable", field=str(field))
                expired.append(field)
                continue
            if now - last > EVENT_ALERT_S:
                expired.append(field)
            else:
                alerts.append(alert)
        if expired:
            self._client.hdel(self._key, *expired)
        return sorted(alerts, key=lambda a: a.since)


def _parsed(raw: Any) -> dict[str, Any] | None:
    """A kept alert as a dict; None when there is none. A damaged one reads as empty, so
    that anything newer replaces it."""
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _time(kept: dict[str, Any] | None, name: str) -> float:
    try:
        return float((kept or {})[name])
    except (KeyError, TypeError, ValueError):
        return 0.0
