"""podpulse.prober: load, sweep and soak runs against a RunPod endpoint, with SLO verdicts.

The public surface, for the CLI and the prober's Celery tasks alike: a ``ProbeSpec`` says
what to run, ``run_probe`` runs it (or one shard of it) against a ``Target`` and returns
``RunStats`` per concurrency level, and ``write_summary`` turns (merged) stats into
``results/<run_id>/summary.json``.
"""

from ._engine import Arrival, Clock, Engine, Load, RequestOptions
from ._probe import (
    ProbeKind,
    ProbeSpec,
    merge_stats,
    run_probe,
    shard_load,
    summarize,
    write_shard_stats,
    write_summary,
)
from ._prompts import Prompt, PromptSetError, load_prompts
from ._records import CSV_COLUMNS, Outcome, RequestRecord
from ._results import new_run_id, read_records, read_summary, run_dir
from ._stats import Histogram, percentile
from ._summary import RunStats, Slo
from ._target import Target, TargetError, embedded_twin, hosted_target, resolve_target
from .settings import ProberSettings

__all__ = [
    "CSV_COLUMNS",
    "Arrival",
    "Clock",
    "Engine",
    "Histogram",
    "Load",
    "Outcome",
    "ProbeKind",
    "ProbeSpec",
    "ProberSettings",
    "Prompt",
    "PromptSetError",
    "RequestOptions",
    "RequestRecord",
    "RunStats",
    "Slo",
    "Target",
    "TargetError",
    "embedded_twin",
    "hosted_target",
    "load_prompts",
    "merge_stats",
    "new_run_id",
    "percentile",
    "read_records",
    "read_summary",
    "resolve_target",
    "run_dir",
    "run_probe",
    "shard_load",
    "summarize",
    "write_shard_stats",
    "write_summary",
]
