"""An alert as Alertmanager sees one: labels, annotations, start and end, fingerprint.

The evaluator makes them, the dispatcher groups them, every receiver renders them. Times are
Unix seconds (the fake clock of a test is a float too); receivers format them as RFC 3339.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Alert", "fingerprint", "label_set_string", "rfc3339"]

# prometheus/common model: FNV-1a 64 over the sorted label names and values, each followed by
# the separator byte 0xff; an empty set hashes to the offset basis.
_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_SEPARATOR = 0xFF
_MASK = (1 << 64) - 1
# Go's zero time.Time, which Alertmanager's webhook shows as the endsAt of a firing alert.
GO_ZERO_TIME = "0001-01-01T00:00:00Z"


def fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's fingerprint of a label set, as its webhook payload writes it (16 hex)."""
    value = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode("utf-8"):
                value = ((value ^ byte) * _FNV_PRIME) & _MASK
            value = ((value ^ _SEPARATOR) * _FNV_PRIME) & _MASK
    return f"{value:016x}"


def label_set_string(labels: Mapping[str, str]) -> str:
    """A label set the way Go's model.LabelSet.String writes it: ``{a="1", b="2"}``."""
    import json  # Go's strconv.Quote and JSON agree for the printable text labels hold

    return "{" + ", ".join(f"{k}={json.dumps(labels[k])}" for k in sorted(labels)) + "}"


def rfc3339(at: float) -> str:
    """Unix seconds as RFC 3339 in UTC with milliseconds (what Go's time parser accepts)."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Alert(BaseModel):
    """One alert; ``ends_at`` None while it fires with no known end."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: float
    ends_at: float | None = None
    generator_url: str = ""

    @property
    def fingerprint(self) -> str:
        """Alertmanager's fingerprint of the labels."""
        return fingerprint(self.labels)

    def resolved(self, now: float) -> bool:
        """Whether the alert has ended by *now* (Alertmanager's ``Resolved``)."""
        return self.ends_at is not None and self.ends_at <= now

    def status(self, now: float) -> str:
        """``firing`` or ``resolved``, as in Alertmanager's payloads."""
        return "resolved" if self.resolved(now) else "firing"


def common(maps: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """The name/value pairs every one of *maps* has (Alertmanager's commonLabels)."""
    items = list(maps)
    if not items:
        return {}
    shared = dict(items[0])
    for other in items[1:]:
        shared = {k: v for k, v in shared.items() if other.get(k) == v}
    return shared
