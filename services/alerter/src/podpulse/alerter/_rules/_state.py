"""The state of one (rule, series): the state machine, its store in Redis, and ``ALERTS``.

States are inactive, pending, firing, resolved, or no-data.

:func:`step` is Prometheus's alerting-rule evaluation (rules/alerting.go ``Eval``) for one
series, as a pure function: a breach starts ``pending`` (its ``active_at``); it fires once it
has held for ``for`` (at once when ``for`` is 0); when the breach ends a firing alert stays
firing for ``keep_firing_for`` and then resolves (``resolved_at``); a pending one just goes.
No-data (fewer samples than ``min_samples``) counts as "not breaching", as an absent series
does in Prometheus, and is shown as its own phase. A resolved alert is kept for
``RESOLVED_RETENTION_S`` so its resolution can still be sent (and re-sent to Alertmanager).

:class:`StateStore` keeps every state in one Redis hash under the prefix, one field per
(rule, series), so a restart forgets nothing: a restarted (or second, standby) evaluator reads
what the last one wrote, so it neither fires again what is already firing nor loses a
resolution it has yet to send. Writes are one pipelined HSET/HDEL per evaluation.

:class:`AlertsCollector` shows the kept states on ``/metrics`` as Prometheus's ``ALERTS``
(``ALERTS{alertname, alertstate="pending"|"firing", severity, endpoint, ...} 1``), read from
Redis at scrape time, so every alerter process shows the same alerts (podpulse up's status
view and a Grafana panel read this series as they would Prometheus's).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Literal

import redis
import structlog
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from .._windows._contract import SeriesKey, StatValue
from ._event_alerts import EventAlertStore
from ._model import Rule, RulesConfig, alert_labels

__all__ = [
    "RESOLVED_RETENTION_S",
    "AlertState",
    "AlertsCollector",
    "Phase",
    "StateKey",
    "StateStore",
    "Transition",
    "step",
]

log = structlog.get_logger("podpulse.alerter")

Phase = Literal["inactive", "pending", "firing", "resolved", "no_data"]
Transition = Literal["fired", "resolved"]
# Prometheus's resolvedRetention: resolved alerts are re-sent for 15 minutes.
RESOLVED_RETENTION_S = 15 * 60.0


@dataclass(frozen=True, slots=True)
class AlertState:
    """What the evaluator remembers of one (rule, series) between evaluations."""

    phase: Phase = "inactive"
    value: float | None = None
    samples: int = 0
    active_at: float | None = None
    fired_at: float | None = None
    resolved_at: float | None = None
    keep_firing_since: float | None = None
    evaluated_at: float | None = None


def breaching(rule: Rule, stat: StatValue) -> bool:
    """Whether *stat* breaches *rule* on enough samples."""
    return stat.value is not None and stat.samples >= rule.min_samples and rule.holds(stat.value)


def step(
    state: AlertState | None, rule: Rule, stat: StatValue, now: float
) -> tuple[AlertState | None, Transition | None]:
    """The state after one evaluation at *now*, and whether it fired or resolved.

    None as the new state: nothing worth keeping (inactive with no resolution to send).
    """
    old = state or AlertState()
    has_data = stat.value is not None and stat.samples >= rule.min_samples
    # The last measured value survives a no-data evaluation: a resolution still says what it was.
    value = stat.value if stat.value is not None else old.value
    seen = replace(old, value=value, samples=stat.samples, evaluated_at=now)
    if breaching(rule, stat):
        return _breach(old, seen, rule, now)
    return _quiet(old, seen, rule, now, has_data=has_data)


def _breach(
    old: AlertState, seen: AlertState, rule: Rule, now: float
) -> tuple[AlertState, Transition | None]:
    if old.phase in ("pending", "firing"):
        new = replace(seen, keep_firing_since=None)
    else:
        new = replace(seen, phase="pending", active_at=now, fired_at=None, resolved_at=None,
                      keep_firing_since=None)  # fmt: skip
    # Checked in the evaluation that went pending too: with `for` 0 an alert fires at once.
    if new.phase == "pending" and new.active_at is not None and now - new.active_at >= rule.for_:
        return replace(new, phase="firing", fired_at=now), "fired"
    return new, None


def _quiet(
    old: AlertState, seen: AlertState, rule: Rule, now: float, *, has_data: bool
) -> tuple[AlertState | None, Transition | None]:
    quiet: Phase = "resolved" if has_data else "no_data"
    if old.phase == "firing":
        if rule.keep_firing_for > 0:
            since = old.keep_firing_since if old.keep_firing_since is not None else now
            if now - since < rule.keep_firing_for:
                return replace(seen, keep_firing_since=since), None
        # active_at stays: a resolved alert keeps its startsAt, as Prometheus's does.
        return replace(seen, phase=quiet, resolved_at=now, keep_firing_since=None), "resolved"
    if old.resolved_at is not None and now - old.resolved_at <= RESOLVED_RETENTION_S:
        return replace(seen, phase=quiet), None
    if has_data:
        return None, None
    return replace(seen, phase="no_data", active_at=None, fired_at=None, resolved_at=None), None


StateKey = tuple[str, SeriesKey]


def _field(key: StateKey) -> str:
    rule, series = key
    return json.dumps([rule, series.endpoint, series.model])


def _key(field: str) -> StateKey:
    rule, endpoint, model = json.loads(field)
    return rule, SeriesKey(endpoint, model)


class StateStore:
    """Every (rule, series) state the evaluator keeps, under ``<prefix>states``."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self._hash = f"{prefix}states"

    def load(self) -> dict[StateKey, AlertState]:
        """All kept states."""
        raw: Mapping[bytes, bytes] = self._client.hgetall(self._hash)  # type: ignore[assignment]  # decode_responses off: bytes
        return {
            _key(field.decode()): AlertState(**json.loads(value)) for field, value in raw.items()
        }

    def save(self, changed: Mapping[StateKey, AlertState | None]) -> None:
        """Write the states that changed; None deletes one."""
        if not changed:
            return
        pipe = self._client.pipeline(transaction=True)
        for key, state in changed.items():
            if state is None:
                pipe.hdel(self._hash, _field(key))
            else:
                pipe.hset(self._hash, _field(key), json.dumps(asdict(state)))
        pipe.execute()


class AlertsCollector(Collector):
    """The pending and firing alerts of *config*'s rules, as Prometheus's ``ALERTS``."""

    def __init__(
        self,
        states: StateStore,
        config: RulesConfig,
        events: EventAlertStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._states = states
        self._rules = {rule.name: rule for rule in config.rules}
        self._events = events
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        """One gauge family; its samples' label sets differ, as an alert's labels do."""
        family = Metric("ALERTS", "Alerts pending or firing, as Prometheus exposes them.", "gauge")
        try:
            states = self._states.load()
        except redis.RedisError as exc:
            # A scrape must still answer (the window statistics may be read elsewhere).
            log.warning("metrics.alerts_unreadable", error=str(exc))
            states = {}
        for (name, series), state in sorted(states.items(), key=lambda kv: repr(kv[0])):
            rule = self._rules.get(name)
            if rule is None or state.phase not in ("pending", "firing"):
                continue
            labels = alert_labels(rule, series) | {"alertstate": state.phase}
            family.add_sample("ALERTS", labels, 1.0)
        if self._events is not None:
            # A failed probe run's alert, on show until it is answered (or expires).
            try:
                events = self._events.firing(self._clock())
            except redis.RedisError as exc:
                log.warning("metrics.event_alerts_unreadable", error=str(exc))
                events = []
            for event in events:
                family.add_sample("ALERTS", event.labels | {"alertstate": "firing"}, 1.0)
        yield family
