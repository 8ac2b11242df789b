"""podpulse.prober: load, sweep and soak runs against a RunPod endpoint, with SLO verdicts.

The public surface is what the CLI, the Celery tasks and the benchmarks run a probe with: a
``ProbeSpec`` (``podpulse.common.probe_spec``) says what to run, ``run_probe`` runs it against
a ``Target`` (``open_target``: the hosted endpoint or an ``EmbeddedTwin``) and returns its
``RunSummary`` (written to ``results/<run_id>/summary.json``); ``run_shard`` runs one shard of
it and returns ``RunStats`` per concurrency level, which ``merge_stats`` and ``write_summary``
turn into the one summary, and ``summarize`` builds a summary from ``RunStats`` without
writing it. ``Engine`` sends one level's requests on a ``Load`` (what the benchmarks time).
Names that live in podpulse.common (the spec, the summary, the request rows, the histogram)
are imported from there. The Celery app comes from ``podpulse.prober.app.create_app``.
"""

from ._engine import Engine
from ._load import Clock, Load, RequestOptions
from ._probe import run_probe, run_shard
from ._prompts import PromptSetError, load_prompts
from ._run_stats import RunStats
from ._shards import merge_stats
from ._summarize import summarize, write_summary
from ._target import EmbeddedTwin, Target, TargetError, open_target
from .settings import ProberSettings

__all__ = [
    "Clock",
    "EmbeddedTwin",
    "Engine",
    "Load",
    "ProberSettings",
    "PromptSetError",
    "RequestOptions",
    "RunStats",
    "Target",
    "TargetError",
    "load_prompts",
    "merge_stats",
    "open_target",
    "run_probe",
    "run_shard",
    "summarize",
    "write_summary",
]
