"""podpulse.alerter — OTLP receiver, windowed statistics, alert rules and notifications."""

from ._metrics import REGISTRY
from ._receiver import create_receiver_app
from ._redis_windows import RedisWindowStore
from ._series import (
    METRICS,
    STATS,
    Metric,
    Observation,
    SeriesKey,
    Stat,
    StatValue,
    WindowStore,
)
from ._windows import MemoryWindowStore

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
    "create_receiver_app",
]
