"""Alertmanager's dispatcher, for podpulse's own receivers: groups, their timers, dedup.

Follows prometheus/alertmanager ``dispatch/dispatch.go`` (``aggrGroup``) and
``notify/notify.go`` (``DedupStage.needsUpdate``):

- an alert joins the group of its ``group_by`` labels (``...``: all labels); a new group
  flushes after ``group_wait`` (at once if its alert started longer ago than that), then
  every ``group_interval``;
- a flush sends the group's unmuted alerts (silences, inhibition) when, against the last
  notification of that group key: an alert fires that did not; or all are resolved that were
  firing; or (``send_resolved``) a new one resolved; or ``repeat_interval`` has passed;
- resolved alerts leave the group after a flush; an empty group is deleted.

Groups and the notification log live in Redis under the prefix, so a restarted notifier
neither repeats a notification nor forgets a pending resolution. Each notification carries
its idempotency key: a digest of the group key and the group's sequence number.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Literal

import redis
from pydantic import BaseModel, ConfigDict, Field

from .._rules._alert import Alert, label_set_string
from .._rules._model import RulesConfig
from ._silences import SilenceStore, inhibited

__all__ = ["Dispatcher", "Notification", "group_key", "idempotency_key"]

# Alertmanager's root route's key; every podpulse alert goes through the one route.
ROUTE_KEY = "{}"


class Notification(BaseModel):
    """What one flush (or one event) sends, to every receiver, under one idempotency key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str = Field(description="Idempotency key: group digest and sequence.")
    kind: Literal["alerts", "announcement"] = "alerts"
    group_key: str
    group_labels: dict[str, str]
    alerts: list[Alert]
    at: float = Field(description="When the notification was made.")
    title: str = ""

    def status(self) -> str:
        """``firing`` if any alert fires, else ``resolved`` (Alertmanager's Data.Status)."""
        return "firing" if any(not a.resolved(self.at) for a in self.alerts) else "resolved"


def group_key(group_labels: Mapping[str, str]) -> str:
    """Alertmanager's group key: ``{route}:{labels}``, e.g. ``{}:{alertname="X"}``."""
    return f"{ROUTE_KEY}:{label_set_string(group_labels)}"


def idempotency_key(key: str, seq: int) -> str:
    """A header-safe key for notification *seq* of group *key* (ASCII, fixed length)."""
    return f"{hashlib.sha256(key.encode()).hexdigest()[:24]}-{seq}"


class _Group(BaseModel):
    labels: dict[str, str]
    next_flush_at: float
    has_flushed: bool = False
    alerts: dict[str, Alert] = Field(default_factory=dict)


class _LogEntry(BaseModel):
    firing: list[str]
    resolved: list[str]
    at: float
    seq: int


class Dispatcher:
    """Groups alerts and decides, at each :meth:`flush_due`, which notifications to send."""

    def __init__(
        self, client: redis.Redis, prefix: str, config: RulesConfig, silences: SilenceStore
    ) -> None:
        self._client = client
        self._groups = f"{prefix}groups"
        self._log = f"{prefix}nflog"
        self._route = config.route
        self._inhibit = config.inhibit
        self._silences = silences

    def _group_labels(self, alert: Alert) -> dict[str, str]:
        if self._route.group_by == ["..."]:
            return dict(alert.labels)
        return {n: alert.labels[n] for n in self._route.group_by if n in alert.labels}

    def ingest(self, alerts: Iterable[Alert], now: float) -> dict[str, _Group]:
        """Put each alert in its group (a newer copy of an alert replaces the older); the
        groups, for :meth:`flush_due`, which writes them."""
        groups = self._load()
        for alert in alerts:
            labels = self._group_labels(alert)
            key = group_key(labels)
            group = groups.get(key)
            if group is None:
                group = _Group(labels=labels, next_flush_at=now + self._route.group_wait)
                groups[key] = group
            # A resolution the group no longer holds was already sent or never fired here
            # (Alertmanager would take it and then find nothing to send).
            stale = alert.resolved(now) and alert.fingerprint not in group.alerts
            if stale and not self._was_firing(key, alert.fingerprint):
                continue
            group.alerts[alert.fingerprint] = alert
            # An alert older than group_wait need not wait again (aggrGroup.insert).
            if not group.has_flushed and alert.starts_at + self._route.group_wait <= now:
                group.next_flush_at = min(group.next_flush_at, now)
        return groups

    def all_alerts(self) -> list[Alert]:
        """Every alert any group holds (for inhibition and ``alerts status``)."""
        return [a for g in self._load().values() for a in g.alerts.values()]

    def next_due(self) -> float | None:
        """When the next group flush is due, or None with no group."""
        groups = self._load()
        return min((g.next_flush_at for g in groups.values()), default=None)

    def flush_due(
        self, now: float, pipe: redis.client.Pipeline, groups: Mapping[str, _Group]
    ) -> list[Notification]:
        """Flush every one of *groups* (:meth:`ingest`'s) whose timer is due at *now*; the
        notifications to send.

        The groups and the notification log are written into *pipe*, not at once: the caller
        adds the notifications' outbox entries and executes it, one MULTI/EXEC, so a process
        that dies in between has logged nothing it did not also queue.
        """
        every = [a for g in groups.values() for a in g.alerts.values()]
        silences = self._silences.current(now)
        out: list[Notification] = []
        keep: dict[str, _Group] = {}
        drop: list[str] = []
        for key, group in groups.items():
            if not group.alerts:  # made by ingest for a resolution it had nothing to match
                drop.append(key)
                continue
            if group.next_flush_at > now:
                keep[key] = group
                continue
            unmuted = [
                a
                for a in group.alerts.values()
                if not any(s.mutes(a, now) for s in silences)
                and not inhibited(a, every, self._inhibit, now)
            ]
            notification = self._dedup(key, group, unmuted, now, pipe)
            if notification is not None:
                out.append(notification)
            group.alerts = {fp: a for fp, a in group.alerts.items() if not a.resolved(now)}
            group.has_flushed = True
            group.next_flush_at = now + self._route.group_interval
            if group.alerts:
                keep[key] = group
            else:
                drop.append(key)
        self._save(keep, drop=drop, pipe=pipe)
        return out

    def _dedup(
        self, key: str, group: _Group, alerts: list[Alert], now: float, pipe: redis.client.Pipeline
    ) -> Notification | None:
        firing = sorted(a.fingerprint for a in alerts if not a.resolved(now))
        resolved = sorted(a.fingerprint for a in alerts if a.resolved(now))
        entry = self._entry(key)
        if not self._needs_update(entry, set(firing), set(resolved), now):
            return None
        seq = (entry.seq if entry is not None else 0) + 1
        pipe.hset(
            self._log,
            key,
            _LogEntry(firing=firing, resolved=resolved, at=now, seq=seq).model_dump_json(),
        )
        sent = alerts if self._route.send_resolved else [a for a in alerts if not a.resolved(now)]
        if not sent:
            return None  # all resolved, send_resolved off: the log is cleared, nothing sent
        return Notification(
            key=idempotency_key(key, seq),
            group_key=key,
            group_labels=group.labels,
            alerts=sorted(sent, key=lambda a: (a.starts_at, a.fingerprint)),
            at=now,
        )

    def _needs_update(
        self, entry: _LogEntry | None, firing: set[str], resolved: set[str], now: float
    ) -> bool:
        if entry is None:
            return bool(firing)
        if not firing <= set(entry.firing):
            return True
        if not firing:
            return bool(entry.firing)
        if self._route.send_resolved and not resolved <= set(entry.resolved):
            return True
        return entry.at + self._route.repeat_interval <= now

    def _was_firing(self, key: str, fp: str) -> bool:
        entry = self._entry(key)
        return entry is not None and fp in entry.firing

    def _entry(self, key: str) -> _LogEntry | None:
        raw = self._client.hget(self._log, key)
        return _LogEntry.model_validate_json(raw) if raw else None

    def _load(self) -> dict[str, _Group]:
        raw: Mapping[bytes, bytes] = self._client.hgetall(self._groups)  # type: ignore[assignment]  # decode_responses off: bytes
        return {k.decode(): _Group.model_validate_json(v) for k, v in raw.items()}

    def _save(
        self, groups: Mapping[str, _Group], *, drop: Iterable[str], pipe: redis.client.Pipeline
    ) -> None:
        for key, group in groups.items():
            pipe.hset(self._groups, key, group.model_dump_json())
        dropped = list(drop)
        if dropped:
            pipe.hdel(self._groups, *dropped)
