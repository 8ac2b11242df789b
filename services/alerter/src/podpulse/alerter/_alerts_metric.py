"""``ALERTS`` on ``/metrics``, the series Prometheus exposes for its alerting rules.

``ALERTS{alertname, alertstate="pending"|"firing", severity, endpoint, ...} 1``: one sample
per (rule, series) that is pending or firing, with the alert's labels, read from the states
in Redis at scrape time, so every alerter process shows the same alerts (podpulse up's
status view and a Grafana panel read this series as they would Prometheus's).
"""

from __future__ import annotations

from collections.abc import Iterator

import redis
import structlog
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from ._evaluator import alert_labels
from ._rules import RulesConfig
from ._state_store import StateStore

__all__ = ["AlertsCollector"]

log = structlog.get_logger("podpulse.alerter")


class AlertsCollector(Collector):
    """The pending and firing alerts of *config*'s rules, as Prometheus's ``ALERTS``."""

    def __init__(self, states: StateStore, config: RulesConfig) -> None:
        self._states = states
        self._rules = {rule.name: rule for rule in config.rules}

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
        yield family
