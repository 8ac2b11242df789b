"""The live status view of ``podpulse up``, and the status.json written beside the logs.

On a terminal: a table redrawn in place (rich), each service with its state, pid, restarts
and how long it took to be ready, then the last probe and the firing alerts. Elsewhere (a
pipe, a CI log): one line per change, and the table once everything is ready. status.json
holds the same, replaced whole on every refresh, for scripts and tests.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from pydantic import BaseModel, ConfigDict
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ._status import FiringAlert, LastProbe, firing_alerts, last_probe
from ._supervisor import ServiceStatus, State

__all__ = ["StatusDocument", "StatusView"]

_PROBE_EVERY_S = 2.0
_ALERTS_EVERY_S = 5.0
_STYLE = {
    State.READY: "green",
    State.STARTING: "yellow",
    State.RESTARTING: "red",
    State.EXITED: "red",
    State.WAITING: "dim",
}


class ServiceRow(BaseModel):
    """One service in status.json."""

    model_config = ConfigDict(frozen=True)

    name: str
    state: str
    pid: int | None
    restarts: int
    ready_after_s: float | None
    note: str


class StatusDocument(BaseModel):
    """status.json: the services, the last probe line and the firing alerts."""

    model_config = ConfigDict(frozen=True)

    updated_at: datetime
    all_ready: bool
    services: tuple[ServiceRow, ...]
    last_probe: str | None
    last_probe_run_id: str | None
    alerts: tuple[str, ...] | None  # None: no alerter in this stack


class StatusView:
    """Draws the stack's status; call :meth:`update` from the supervisor's loop."""

    def __init__(
        self,
        console: Console,
        *,
        status_path: Path,
        results_dir: Path,
        metrics_url: str | None,
    ) -> None:
        self._console = console
        self._status_path = status_path
        self._results_dir = results_dir
        self._metrics_url = metrics_url
        self._http = httpx.Client(timeout=0.5)
        # auto_refresh off: no refresh thread, so the supervisor stays single-threaded.
        self._live = Live(console=console, auto_refresh=False) if console.is_terminal else None
        self._probe: LastProbe | None = None
        self._probe_at = 0.0
        self._alerts: list[FiringAlert] | None = None if metrics_url is None else []
        self._alerts_at = 0.0
        self._shown_ready = False

    def __enter__(self) -> StatusView:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self._live is not None:
            self._live.stop()
        self._http.close()

    def event(self, line: str) -> None:
        """A state change; printed as a line where there is no live table."""
        stamp = time.strftime("%H:%M:%S")
        self._console.print(f"[dim]{stamp}[/] {line}", highlight=False)

    def update(self, statuses: tuple[ServiceStatus, ...], *, all_ready: bool) -> None:
        """Refresh the probe and alerts when due, redraw, and rewrite status.json."""
        now = time.monotonic()
        if now - self._probe_at >= _PROBE_EVERY_S:
            self._probe, self._probe_at = last_probe(self._results_dir), now
            if self._probe is not None and self._probe.run_id != self._last_run_id:
                self._last_run_id = self._probe.run_id
                if self._live is None:
                    self.event(f"last probe: {self._probe.line()}")
        if self._metrics_url is not None and now - self._alerts_at >= _ALERTS_EVERY_S:
            self._alerts, self._alerts_at = self._read_alerts(), now
        document = StatusDocument(
            updated_at=datetime.now(UTC),
            all_ready=all_ready,
            services=tuple(
                ServiceRow(
                    name=s.name,
                    state=s.state.value,
                    pid=s.pid,
                    restarts=s.restarts,
                    ready_after_s=s.ready_after_s,
                    note=s.note,
                )
                for s in statuses
            ),
            last_probe=None if self._probe is None else self._probe.line(),
            last_probe_run_id=None if self._probe is None else self._probe.run_id,
            alerts=None if self._alerts is None else tuple(_alert_line(a) for a in self._alerts),
        )
        partial = self._status_path.with_name(self._status_path.name + ".partial")
        partial.write_text(document.model_dump_json(indent=2))
        partial.replace(self._status_path)
        rendered = self._render(statuses, document)
        if self._live is not None:
            self._live.update(rendered, refresh=True)
        elif all_ready and not self._shown_ready:
            self._console.print(rendered)
        self._shown_ready = self._shown_ready or all_ready

    _last_run_id: str | None = None

    def _read_alerts(self) -> list[FiringAlert] | None:
        assert self._metrics_url is not None
        try:
            response = self._http.get(self._metrics_url)
            response.raise_for_status()
        except httpx.HTTPError:
            return self._alerts  # the alerter may be restarting: keep what was last seen
        return firing_alerts(response.text)

    def _render(self, statuses: tuple[ServiceStatus, ...], document: StatusDocument) -> Group:
        table = Table(title="podpulse up", title_justify="left")
        for column in ("service", "state", "pid", "restarts", "ready in", "note"):
            table.add_column(column)
        for s in statuses:
            table.add_row(
                s.name,
                Text(s.state.value, style=_STYLE.get(s.state, "")),
                str(s.pid or "-"),
                str(s.restarts),
                "-" if s.ready_after_s is None else f"{s.ready_after_s:.1f} s",
                s.note,
            )
        probe = document.last_probe or "none yet"
        if document.alerts is None:
            alerts = "no alerter installed"
        else:
            alerts = ", ".join(document.alerts) or "none firing"
        return Group(table, Text(f"last probe: {probe}"), Text(f"alerts: {alerts}"))


def _alert_line(alert: FiringAlert) -> str:
    return f"{alert.severity} {alert.name}".strip()
