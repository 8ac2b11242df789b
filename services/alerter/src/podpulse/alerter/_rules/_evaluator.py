"""The evaluator: every rule over every series, Prometheus's state machine, kept in Redis.

A pure core: it takes any ``WindowStore`` (the windows ingest fills, in Redis, in production;
a dict in tests), a clock value per call, and a callback for the ``AlertStateChanged`` events
of each transition. What it returns, the active and recently resolved alerts, is what
Prometheus hands Alertmanager; the notifier takes it from there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import quote

from prometheus_client import CollectorRegistry, Counter

from podpulse.common.events import AlertStateChanged

from .._windows._contract import SeriesKey, WindowStore
from ._alert import Alert
from ._model import Rule, RulesConfig, alert_labels
from ._state import AlertState, StateKey, StateStore, Transition, step

__all__ = ["Evaluation", "Evaluator", "EvaluatorMetrics"]

OnChange = Callable[[AlertStateChanged], None]


def _order(series: SeriesKey) -> tuple[str, str]:
    return series.endpoint, series.model or ""


@dataclass(frozen=True)
class EvaluatorMetrics:
    """The evaluator's counters, in *registry* (one set per registry: make one per process).

    The serving alerter's ``/metrics`` collects that registry beside the ingest counters'
    process-wide one, so these never clash with another registry's.
    """

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        object.__setattr__(self, "evaluations", Counter(
            "podpulse_alerter_evaluations", "Rule evaluations, one per rule and series.",
            ["rule"], registry=r))  # fmt: skip
        object.__setattr__(self, "transitions", Counter(
            "podpulse_alerter_alert_transitions", "Alerts that fired or resolved.",
            ["rule", "state"], registry=r))  # fmt: skip

    evaluations: Counter = field(init=False)
    transitions: Counter = field(init=False)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One evaluation's outcome: what to notify, and every state (for ``alerts status``)."""

    alerts: list[Alert]
    states: dict[StateKey, AlertState]


class Evaluator:
    """Evaluates a rules config over a window store; its memory is the Redis ``StateStore``."""

    def __init__(
        self,
        store: WindowStore,
        config: RulesConfig,
        states: StateStore,
        *,
        metrics: EvaluatorMetrics,
        on_change: OnChange | None = None,
        external_url: str = "",
    ) -> None:
        self._store = store
        self._config = config
        self._states = states
        self._metrics = metrics
        self._on_change = on_change
        self._external_url = external_url.rstrip("/")

    def evaluate(self, now: float) -> Evaluation:
        """Evaluate every rule on every series at *now*; persist, emit, and return the alerts."""
        kept = self._states.load()
        live = set(self._store.series(now))
        changed: dict[StateKey, AlertState | None] = {}
        result: dict[StateKey, AlertState] = {}
        for rule in self._config.rules:
            targets = live | {series for (name, series) in kept if name == rule.name}
            for series in sorted(targets, key=_order):
                key = (rule.name, series)
                stat = self._store.stat(series, rule.metric, rule.stat, rule.window, now)
                self._metrics.evaluations.labels(rule=rule.name).inc()
                new, transition = step(kept.get(key), rule, stat, now)
                gone = new is not None and new.phase == "no_data" and new.resolved_at is None
                if gone and series not in live:
                    new = None  # a series gone from every window: nothing left to tell
                if new != kept.get(key):
                    changed[key] = new
                if new is not None:
                    result[key] = new
                if transition is not None:
                    self._emit(rule, series, new, transition, now)
        stale = {key for key in kept if key[0] not in {r.name for r in self._config.rules}}
        changed.update(dict.fromkeys(stale))
        # Persist before anything is notified: a crash after this point re-sends, never forgets.
        self._states.save(changed)
        return Evaluation(alerts=self._alerts(result), states=result)

    def _alerts(self, states: dict[StateKey, AlertState]) -> list[Alert]:
        rules = {rule.name: rule for rule in self._config.rules}
        alerts = []
        for (name, series), state in sorted(
            states.items(), key=lambda kv: (kv[0][0], _order(kv[0][1]))
        ):
            rule = rules[name]
            # startsAt is when the alert fired, as Prometheus sends it (FiredAt), not when
            # it went pending: Alertmanager's group_wait counts from there, and an alert
            # "older" than group_wait by its pending time would skip the wait.
            fired = state.fired_at if state.fired_at is not None else state.active_at
            if state.phase == "firing" and fired is not None:
                ends_at = None
                starts_at = fired
            elif state.resolved_at is not None and state.phase in ("resolved", "no_data"):
                ends_at = state.resolved_at
                starts_at = fired if fired is not None else state.resolved_at
            else:
                continue
            labels = alert_labels(rule, series)
            # Resolved because the data went away, the last value is the breaching one: it is
            # not rendered as if current ({{ value }} is n/a), and the resolution says why.
            no_data = ends_at is not None and state.phase == "no_data"
            value = None if no_data else state.value
            annotations = {
                key: template.render(value=value, threshold=rule.threshold, labels=labels)
                for key, template in rule.annotations.items()
            }
            if no_data:
                last = "n/a" if state.value is None else f"{state.value:.6g}"
                annotations.setdefault(
                    "resolution",
                    f"no data: under {rule.min_samples} samples in the window; "
                    f"the last {rule.stat} measured was {last}",
                )
            alerts.append(
                Alert(
                    labels=labels,
                    annotations=annotations,
                    starts_at=starts_at,
                    ends_at=ends_at,
                    generator_url=self._generator_url(rule),
                )
            )
        return alerts

    def _generator_url(self, rule: Rule) -> str:
        if not self._external_url:
            return ""
        return f"{self._external_url}/alerts?rule={quote(rule.name)}"

    def _emit(
        self,
        rule: Rule,
        series: SeriesKey,
        state: AlertState | None,
        transition: Transition,
        now: float,
    ) -> None:
        status: Literal["firing", "resolved"] = "firing" if transition == "fired" else "resolved"
        self._metrics.transitions.labels(rule=rule.name, state=status).inc()
        if self._on_change is None:
            return
        # A transition always has a measured value (step keeps the last one through no-data).
        value = state.value if state is not None and state.value is not None else rule.threshold
        severity: Literal["CRITICAL", "WARNING"] = (
            "CRITICAL" if rule.severity == "critical" else "WARNING"
        )
        self._on_change(
            AlertStateChanged(
                occurred_at=datetime.fromtimestamp(now, UTC),
                rule=rule.name,
                severity=severity,
                state=status,
                value=value,
                threshold=rule.threshold,
                labels=alert_labels(rule, series),
            )
        )
