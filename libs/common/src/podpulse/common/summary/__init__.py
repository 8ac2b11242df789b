"""A probe run's result, typed: what summary.json holds and what ``ProbeRunCompleted`` carries.

The prober writes a :class:`RunSummary` and every reader -- its own ``report`` command, the
alerter, the tagger -- reads one back through :func:`read_summary`, so a summary.json that does
not match this schema is refused with the field that is wrong, never half-read. Verdicts are
checked against their evidence when a summary is built or read: a ``passed`` that its own SLO
rows, soak checks or sweep recommendation contradict does not validate, so no reader can show
a verdict the numbers do not back.

Latency percentiles are nearest-rank over successful requests (see
``podpulse.common.histogram``); failures are counted by kind and judged by the success rate.
``schema_version`` changes when a field changes meaning or goes away.
"""

from ..probe_spec import Arrival, ProbeKind, check_run_id
from ._base import SCHEMA_VERSION, FailureName, TargetKind
from ._level import (
    Breakdown,
    FailureKind,
    Failures,
    Goodput,
    Latencies,
    LatencyStats,
    LevelSummary,
    Slo,
    SloMetric,
    SloRow,
    SloVerdict,
    TargetInfo,
    Tokens,
)
from ._run import RunSummary, ShardInfo, SummaryError, parse_summary, read_summary
from ._soak import SoakCheck, SoakTrends, SoakVerdict, SoakWindow, Trend
from ._sweep import Recommendation, SweepResult, SweepRow, Tightest, best_row

__all__ = [
    "SCHEMA_VERSION",
    "Arrival",
    "Breakdown",
    "FailureKind",
    "FailureName",
    "Failures",
    "Goodput",
    "Latencies",
    "LatencyStats",
    "LevelSummary",
    "ProbeKind",
    "Recommendation",
    "RunSummary",
    "ShardInfo",
    "Slo",
    "SloMetric",
    "SloRow",
    "SloVerdict",
    "SoakCheck",
    "SoakTrends",
    "SoakVerdict",
    "SoakWindow",
    "SummaryError",
    "SweepResult",
    "SweepRow",
    "TargetInfo",
    "TargetKind",
    "Tightest",
    "Tokens",
    "Trend",
    "best_row",
    "check_run_id",
    "parse_summary",
    "read_summary",
]
