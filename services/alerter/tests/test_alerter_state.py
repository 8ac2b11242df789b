"""The state machine per (rule, series): pending, firing, keep_firing_for, resolved, no-data."""

from __future__ import annotations

from podpulse.alerter._rules._state import step
from podpulse.alerter._rules._yaml import parse_rules
from podpulse.alerter._windows._contract import StatValue

RULE = """\
rules:
  - name: R
    metric: exec_ms
    stat: p95
    op: ">"
    threshold: 100
    window: 1m
    for: 10s
    keep_firing_for: {keep}
    min_samples: 3
    severity: critical
"""


def rule(keep: str = "0s"):
    return parse_rules(RULE.format(keep=keep)).rules[0]


def run(r, values, start=0.0, every=5.0):
    state, out = None, []
    for i, value in enumerate(values):
        stat = StatValue(value, 5) if value is not None else StatValue(None, 0)
        state, transition = step(state, r, stat, start + i * every)
        out.append((state.phase if state else "inactive", transition))
    return out


def test_pending_for_then_firing_then_resolved() -> None:
    """A breach is pending until it has held for `for`, then fires; its end resolves it."""
    assert run(rule(), [200, 200, 200, 50]) == [
        ("pending", None),
        ("pending", None),
        ("firing", "fired"),
        ("resolved", "resolved"),
    ]


def test_pending_that_ends_never_fires() -> None:
    """A breach shorter than `for` goes back to inactive without any notification."""
    assert run(rule(), [200, 50]) == [("pending", None), ("inactive", None)]


def test_keep_firing_for_holds_a_firing_alert() -> None:
    """keep_firing_for keeps an alert firing that long after the breach ended."""
    got = run(rule("12s"), [200, 200, 200, 50, 50, 50, 50])
    assert [t for _, t in got] == [None, None, "fired", None, None, None, "resolved"]


def test_too_few_samples_is_no_data_and_resolves() -> None:
    """Fewer than min_samples is no-data: not a breach, shown as its own phase."""
    r = rule()
    state, _ = step(None, r, StatValue(500, 2), 0.0)
    assert state is not None
    assert state.phase == "no_data"
    got = run(r, [200, 200, 200, None])
    assert got[-1] == ("no_data", "resolved")
