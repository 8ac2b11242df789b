"""The soak's latency-over-time plot (matplotlib's Agg canvas: no display, no global state)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from podpulse.common.request_records import RequestRecord
from podpulse.common.summary import SoakWindow

__all__ = ["plot_latency"]


def plot_latency(
    records: Sequence[RequestRecord],
    windows: Sequence[SoakWindow],
    *,
    origin: float,
    window_s: float,
    threshold_ms: float,
    path: Path,
    title: str,
) -> Path:
    """Each request's total (failures as red crosses), window P95 as steps, the threshold."""
    # A Figure with its own canvas, not pyplot: nothing global, safe in worker threads.
    figure = Figure(figsize=(10, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    ok = [r for r in records if r.ok]
    failed = [r for r in records if not r.ok]
    axes.scatter(
        [(r.done - origin) / 60 for r in ok],
        [r.total_ms for r in ok],
        s=6,
        alpha=0.5,
        label="request total",
    )
    if failed:
        axes.scatter(
            [(r.done - origin) / 60 for r in failed],
            [r.total_ms for r in failed],
            marker="x",
            color="red",
            label="failed",
        )
    # Each window's P95 over the part of it the run lasted: a partial window (where the run
    # ended) is drawn only as long as it was, dashed, so it does not pass for a full one.
    for partial in (False, True):
        drawn = [w for w in windows if w.p95_ms is not None and w.partial == partial]
        if drawn:
            axes.hlines(
                [w.p95_ms or 0.0 for w in drawn],
                [w.start_s / 60 for w in drawn],
                [(w.start_s + min(w.covered_s, window_s)) / 60 for w in drawn],
                colors="grey" if partial else "black",
                linestyles="dashed" if partial else "solid",
                linewidth=1.5,
                label="partial window P95" if partial else "window P95",
            )
    axes.axhline(threshold_ms, color="red", linestyle="--", label=f"P95 limit {threshold_ms:g} ms")
    axes.set_xlabel("minutes since start")
    axes.set_ylabel("total latency (ms)")
    axes.set_title(title)
    axes.set_ylim(bottom=0)
    axes.grid(visible=True, alpha=0.3)
    axes.legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
