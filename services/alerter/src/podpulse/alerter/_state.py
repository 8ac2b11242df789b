"""The state of one (rule, series): inactive, pending, firing, resolved, or no-data.

:func:`step` is Prometheus's alerting-rule evaluation (rules/alerting.go ``Eval``) for one
series, as a pure function: a breach starts ``pending`` (its ``active_at``); it fires once it
has held for ``for`` (at once when ``for`` is 0); when the breach ends a firing alert stays
firing for ``keep_firing_for`` and then resolves (``resolved_at``); a pending one just goes.
No-data (fewer samples than ``min_samples``) counts as "not breaching", as an absent series
does in Prometheus, and is shown as its own phase. A resolved alert is kept for
``RESOLVED_RETENTION_S`` so its resolution can still be sent (and re-sent to Alertmanager).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from ._rules import Rule
from ._series import StatValue

__all__ = ["RESOLVED_RETENTION_S", "AlertState", "Phase", "Transition", "step"]

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
