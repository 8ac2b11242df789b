"""podpulse.alerter — spans in over OTLP/HTTP, windowed statistics, alert rules, notifications.

The pipeline, one private subpackage per stage: ``_ingest`` (the OTLP/HTTP input) feeds
``_windows`` (statistics per series, in memory and merged through Redis), which ``_rules``
evaluates into alerts that ``_notify`` groups and delivers to its receivers (Slack, a webhook,
Alertmanager). ``_pipeline`` wires the stages together for ``podpulse alerter serve``
(``_serve``) and the Celery tasks (``app``, ``tasks``).

The public names are what an embedder needs to feed spans in and read windows out, and the
default rules (what other services' defaults are sized for).
"""

from ._ingest._http import create_ingest_app
from ._ingest._metrics import REGISTRY
from ._rules._yaml import default_rules
from ._windows._contract import (
    METRICS,
    STATS,
    Metric,
    Observation,
    SeriesKey,
    Stat,
    StatValue,
    WindowStore,
)
from ._windows._memory import MemoryWindowStore
from ._windows._redis import RedisWindowStore

__all__ = [
    "METRICS",
    "REGISTRY",
    "STATS",
    "MemoryWindowStore",
    "Metric",
    "Observation",
    "RedisWindowStore",
    "SeriesKey",
    "Stat",
    "StatValue",
    "WindowStore",
    "create_ingest_app",
    "default_rules",
]
