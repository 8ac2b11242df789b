"""What the status view shows besides the services: the last probe and the firing alerts.

The last probe is the newest ``summary.json`` under the prober's results folder, read by its
one validating reader (podpulse.common.summary.RunSummary). Firing alerts come from the
alerter's ``/metrics``, in the series Prometheus itself uses for them:
``ALERTS{alertname="...", alertstate="firing", severity="..."} 1``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from podpulse.common.summary import RunSummary

__all__ = ["FiringAlert", "LastProbe", "firing_alerts", "last_probe"]

_ALERTS_LINE = re.compile(r"^ALERTS\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)")
_LABEL = re.compile(r'(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class LastProbe:
    """The newest run's headline: which run, when it finished, and what it found."""

    run_id: str
    kind: str
    finished_at: datetime
    passed: bool | None  # None: its summary.json could not be read
    ok: int
    requests: int
    total_p50_ms: float | None
    problem: str = ""
    # The SLO lines that failed, as "Exec P95 6012 ms (≤ 5000 ms)".
    failed_rows: tuple[str, ...] = ()

    def line(self) -> str:
        """One line for the status view."""
        when = self.finished_at.strftime("%H:%M:%S")
        if self.passed is None:
            return f"{self.kind} {self.run_id} at {when}: unreadable summary ({self.problem})"
        verdict = "PASSED" if self.passed else "FAILED"
        p50 = "-" if self.total_p50_ms is None else f"{self.total_p50_ms:.0f} ms"
        line = (
            f"{self.kind} {self.run_id} at {when}: {verdict}, {self.ok}/{self.requests} ok, "
            f"total P50 {p50}"
        )
        if self.failed_rows:
            line += f"; failed {', '.join(self.failed_rows)}"
        return line


def last_probe(results_dir: Path) -> LastProbe | None:
    """The newest summary.json under *results_dir*, or None when no run finished yet."""
    try:
        summaries = [
            Path(entry.path) / "summary.json" for entry in os.scandir(results_dir) if entry.is_dir()
        ]
    except OSError:
        return None
    dated = []
    for path in summaries:
        try:
            dated.append((path.stat().st_mtime, path))
        except OSError:
            continue
    if not dated:
        return None
    mtime, path = max(dated)
    finished = datetime.fromtimestamp(mtime, UTC)
    try:
        summary = RunSummary.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return LastProbe(path.parent.name, "run", finished, None, 0, 0, None, first)
    ok = sum(level.ok for level in summary.levels)
    requests = sum(level.requests for level in summary.levels)
    return LastProbe(
        run_id=summary.run_id,
        kind=summary.kind,
        finished_at=finished,
        passed=bool(summary.passed),
        ok=ok,
        requests=requests,
        total_p50_ms=summary.levels[-1].latency_ms.total.p50,
        failed_rows=_failed_rows(summary),
    )


def _failed_rows(summary: RunSummary) -> tuple[str, ...]:
    """Each failed SLO line, with its level where the run had several."""
    rows = []
    for level in summary.levels:
        where = f"c={level.concurrency} " if len(summary.levels) > 1 else ""
        for row in level.slo.rows:
            if row.status != "PASS":
                unit = " ms" if row.unit == "ms" else " %"
                actual = "no value" if row.actual is None else f"{row.actual:.0f}{unit}"
                rows.append(f"{where}{row.metric} {actual} ({row.slo})")
    return tuple(rows)


@dataclass(frozen=True)
class FiringAlert:
    """One firing alert as /metrics names it."""

    name: str
    severity: str


def firing_alerts(metrics_text: str) -> list[FiringAlert]:
    """The firing alerts in a Prometheus text exposition (ALERTS series with value 1)."""
    found = []
    for line in metrics_text.splitlines():
        match = _ALERTS_LINE.match(line)
        if match is None:
            continue
        labels = {m["name"]: m["value"] for m in _LABEL.finditer(match["labels"])}
        try:
            value = float(match["value"])
        except ValueError:
            continue
        if labels.get("alertstate") == "firing" and value > 0:
            found.append(FiringAlert(labels.get("alertname", "?"), labels.get("severity", "")))
    return found
