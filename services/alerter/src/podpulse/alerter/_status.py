"""What ``podpulse alerts status`` prints, and the sample ``podpulse alerts test`` sends."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from ._alert import Alert
from ._dispatch import Notification, group_key
from ._rules import RulesConfig
from ._state import AlertState
from ._state_store import StateKey

__all__ = ["sample_notification", "status_lines"]


def _ago(at: float | None, now: float) -> str:
    if at is None:
        return "-"
    when = datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S")
    return f"{when} ({max(0.0, now - at):.0f} s ago)"


def status_lines(
    config: RulesConfig, states: Mapping[StateKey, AlertState], now: float
) -> list[str]:
    """One line per rule x series kept in Redis, then the firing alerts."""
    rules = {rule.name: rule for rule in config.rules}
    rows = [("RULE", "ENDPOINT", "MODEL", "STATE", "VALUE", "SAMPLES", "SINCE")]
    firing = []
    for (name, series), state in sorted(states.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        rule = rules.get(name)
        value = "-" if state.value is None else f"{state.value:.4g}"
        since = state.resolved_at if state.phase in ("resolved", "no_data") else state.active_at
        rows.append(
            (
                name,
                series.endpoint,
                series.model or "-",
                state.phase,
                value,
                str(state.samples),
                _ago(since, now),
            )
        )
        if state.phase == "firing" and rule is not None:
            firing.append(
                f"FIRING {rule.severity.upper()} {name} on {series.endpoint}: {value} "
                f"{rule.op} {rule.threshold:g} since {_ago(state.fired_at, now)}"
            )
    if len(rows) == 1:
        return [f"no alert states yet ({len(config.rules)} rules; nothing evaluated or all quiet)"]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.append("")
    lines += firing or ["no alerts firing"]
    return lines


def sample_notification(now: float) -> Notification:
    """A firing test alert, marked as such, with a key of its own for every run."""
    labels = {"alertname": "PodpulseTest", "severity": "info", "endpoint": "test"}
    alert = Alert(
        labels=labels,
        annotations={"summary": "podpulse alerts test: a sample notification, not an incident"},
        starts_at=now,
    )
    key = group_key({"alertname": "PodpulseTest"})
    return Notification(
        key=f"test-{int(now * 1000)}",
        group_key=key,
        group_labels={"alertname": "PodpulseTest"},
        alerts=[alert],
        at=now,
        title="podpulse alerts test",
    )
