"""Alerts from events that stay on show: a failed probe run is firing until it is answered.

A rule's alert lives in the state store; a ``ProbeRunFailedSlo`` is one notification of an
event, and without this it showed nowhere once sent (the ``up`` view said "none firing"
while the webhook had it). Here it is kept in one Redis hash, a field per endpoint and probe
kind, until a later run of that kind on that endpoint passes, or for an hour: ``ALERTS`` on
``/metrics`` and ``podpulse alerts status`` show it firing meanwhile.
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

    def record(self, event: ProbeRunCompleted) -> None:
        """A failed run starts (or renews) its alert; a passing one ends an older one."""
        field = f"{event.endpoint_id}\x1f{event.kind}"
        at = event.occurred_at.timestamp()
        if not event.slo_passed:
            alert = {
                "labels": {
                    "alertname": "ProbeRunFailedSlo",
                    "severity": "critical",
                    "endpoint": event.endpoint_id,
                    "probe_kind": event.kind,
                },
                "summary": f"{event.kind} run {event.run_id} failed its SLO",
                "since": at,
            }
            self._client.hset(self._key, field, json.dumps(alert))
            return
        kept = self._client.hget(self._key, field)
        # A pass answers only a failure before it: events may arrive out of order.
        if kept is not None and _since(kept) <= at:
            self._client.hdel(self._key, field)

    def firing(self, now: float) -> list[EventAlert]:
        """The alerts still on show at *now*, oldest first; expired ones are dropped."""
        alerts, expired = [], []
        for field, raw in self._client.hgetall(self._key).items():
            try:
                data = json.loads(raw)
                alert = EventAlert(dict(data["labels"]), str(data["summary"]), float(data["since"]))
            except (ValueError, KeyError, TypeError):
                # Written by another version, or damaged: it cannot be shown, so it goes.
                log.warning("alerter.event_alert_unreadable", field=str(field))
                expired.append(field)
                continue
            if now - alert.since > EVENT_ALERT_S:
                expired.append(field)
            else:
                alerts.append(alert)
        if expired:
            self._client.hdel(self._key, *expired)
        return sorted(alerts, key=lambda a: a.since)


def _since(raw: Any) -> float:
    try:
        return float(json.loads(raw)["since"])
    except (ValueError, KeyError, TypeError):
        return 0.0
