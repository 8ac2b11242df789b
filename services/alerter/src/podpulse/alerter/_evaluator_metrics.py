"""The evaluator's and notifier's counters, in a registry of their own.

The /metrics endpoint (the receiver's half) collects this registry beside its own, so these
counters never clash with another process-wide default registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter

__all__ = ["EvaluatorMetrics"]


@dataclass(frozen=True)
class EvaluatorMetrics:
    """One set of counters; make one per process (tests make their own)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        object.__setattr__(self, "evaluations", Counter(
            "podpulse_alerter_evaluations", "Rule evaluations, one per rule and series.",
            ["rule"], registry=r))  # fmt: skip
        object.__setattr__(self, "transitions", Counter(
            "podpulse_alerter_alert_transitions", "Alerts that fired or resolved.",
            ["rule", "state"], registry=r))  # fmt: skip
        object.__setattr__(self, "sent", Counter(
            "podpulse_alerter_notifications_sent", "Notifications a receiver accepted.",
            ["receiver"], registry=r))  # fmt: skip
        object.__setattr__(self, "failed", Counter(
            "podpulse_alerter_notifications_failed",
            "Delivery attempts that failed (each retry counts once more).",
            ["receiver"], registry=r))  # fmt: skip
        object.__setattr__(self, "retried", Counter(
            "podpulse_alerter_notifications_retried",
            "Delivery attempts that were a retry of an earlier failed one.",
            ["receiver"], registry=r))  # fmt: skip
        object.__setattr__(self, "dropped", Counter(
            "podpulse_alerter_notifications_dropped",
            "Notifications given up on (a permanent 4xx, or older than notify_give_up_s).",
            ["receiver"], registry=r))  # fmt: skip

    evaluations: Counter = field(init=False)
    transitions: Counter = field(init=False)
    sent: Counter = field(init=False)
    failed: Counter = field(init=False)
    retried: Counter = field(init=False)
    dropped: Counter = field(init=False)
