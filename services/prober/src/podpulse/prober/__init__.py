"""podpulse.prober: load, sweep and soak runs against a RunPod endpoint, with SLO verdicts.

The public surface, for the CLI and the prober's Celery tasks alike: a ``ProbeSpec`` says
what to run, ``run_probe`` runs it against a ``Target`` and returns its ``RunSummary``
(written to ``results/<run_id>/summary.json``); ``run_shard`` runs one shard of it and
returns ``RunStats`` per concurrency level, which ``merge_stats`` and ``write_summary`` turn
into the one summary. The Celery app comes from ``podpulse.prober.app.create_app``.
"""

from podpulse.common.histogram import Histogram, percentile
from podpulse.common.summary import ProbeKind, ProbeSpec, RunSummary, Slo, read_summary

from ._engine import Engine
from ._load import Arrival, Clock, Load, RequestOptions
from ._prompts import Prompt, PromptSetError, load_prompts
from ._request_record import CSV_COLUMNS, Outcome, RequestRecord
from ._results_dir import new_run_id, read_records, run_dir
from ._run import merge_stats, run_probe, run_shard, write_shard_stats
from ._run_stats import RunStats, slo_of
from ._spec import scheduled_spec, shard_load
from ._summarize import summarize, write_summary
from ._target import (
    EmbeddedTwin,
    Target,
    TargetError,
    TargetKind,
    default_target_kind,
    embedded_twin,
    hosted_target,
    open_target,
)
from .settings import ProberSettings

__all__ = [
    "CSV_COLUMNS",
    "Arrival",
    "Clock",
    "EmbeddedTwin",
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
    "RunSummary",
    "Slo",
    "Target",
    "TargetError",
    "TargetKind",
    "default_target_kind",
    "embedded_twin",
    "hosted_target",
    "load_prompts",
    "merge_stats",
    "new_run_id",
    "open_target",
    "percentile",
    "read_records",
    "read_summary",
    "run_dir",
    "run_probe",
    "run_shard",
    "scheduled_spec",
    "shard_load",
    "slo_of",
    "summarize",
    "write_shard_stats",
    "write_summary",
]
