"""The rules file's model: rules, route, inhibition, with Prometheus's and Alertmanager's names.

Every model forbids unknown keys and takes strict types (a quoted ``"5000"`` is not a number,
``5`` is not a duration), so a typo is an error at load time rather than a rule that never
fires. Durations are Prometheus's: ``500ms``, ``5s``, ``1m``, ``4h``, ``1h30m``, ``1d``.
Reading a file (and naming the line of each error) is :mod:`._yaml`'s job; the labels of a
rule's alert on a series are :func:`alert_labels`'.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .._windows._contract import Metric, SeriesKey, Stat
from ._templates import Template

__all__ = [
    "Duration",
    "InhibitRule",
    "Op",
    "Route",
    "Rule",
    "RulesConfig",
    "Severity",
    "alert_labels",
    "parse_duration",
]

_DURATION = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_UNIT_S = (7 * 86400.0, 86400.0, 3600.0, 60.0, 1.0, 0.001)
_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Set by the alerter on every alert; a rule's own labels may not overwrite them.
RESERVED_LABELS = frozenset({"alertname", "severity", "endpoint", "model"})
# fail_rate is a fraction of jobs: percentiles of a yes/no have no meaning.
_FAIL_RATE_STATS = frozenset({"rate", "mean"})

Op = Literal[">", ">=", "<", "<="]
Severity = Literal["critical", "warning"]
OPS: Mapping[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def parse_duration(value: object) -> float:
    """Seconds in a Prometheus duration string (``1m30s``); ValueError for anything else."""
    if not isinstance(value, str):
        raise ValueError("must be a duration string like 5s, 1m or 4h")  # noqa: TRY004
    match = _DURATION.match(value.strip())
    if not value.strip() or match is None:
        raise ValueError(f"{value!r} is not a duration: use e.g. 500ms, 5s, 1m, 4h or 1h30m")
    return sum(int(n) * unit for n, unit in zip(match.groups(), _UNIT_S, strict=True) if n)


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    # extra="forbid": a misspelt key is an error with its line, not a silently ignored rule.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _label_names(names: Mapping[str, str] | list[str]) -> None:
    bad = sorted(name for name in names if not _LABEL_NAME.match(name))
    if bad:
        raise ValueError(f"not a label name (letters, digits, '_'): {', '.join(bad)}")


class Rule(_Strict):
    """One alerting rule: a statistic of a metric over a window compared with a threshold."""

    # ``for`` is a Python keyword: the field is for_, the file's key (its alias) is "for".
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, validate_by_name=True)

    name: str = Field(description="The alertname label.")
    metric: Metric
    stat: Stat
    op: Op
    threshold: float
    window: Duration = Field(gt=0)
    for_: Duration = Field(default=0.0, ge=0, alias="for")
    keep_firing_for: Duration = Field(default=0.0, ge=0)
    min_samples: int = Field(default=1, ge=1)
    severity: Severity
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, Template] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _LABEL_NAME.match(value):
            raise ValueError("must be letters, digits and '_' (it becomes the alertname)")
        return value

    @field_validator("window")
    @classmethod
    def _within_retention(cls, value: float, info: ValidationInfo) -> float:
        limit = (info.context or {}).get("max_window_s")
        if limit is not None and value > limit:
            raise ValueError(
                f"longer than the windows kept (ALERTER_RETENTION_S, {limit:g} s): "
                "raise the retention or shorten the window"
            )
        return value

    @field_validator("threshold")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        _label_names(value)
        reserved = sorted(RESERVED_LABELS & value.keys())
        if reserved:
            raise ValueError(f"set by the alerter, not by a rule: {', '.join(reserved)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.metric == "fail_rate" and self.stat not in _FAIL_RATE_STATS:
            raise ValueError("fail_rate takes stat 'rate' (or 'mean'): a failed fraction")
        known = RESERVED_LABELS | self.labels.keys()
        for key, template in self.annotations.items():
            unknown = sorted(template.label_names() - known)
            if unknown:
                raise ValueError(
                    f"annotation {key!r}: no label {', '.join(unknown)} "
                    f"(known: {', '.join(sorted(known))})"
                )
        return self

    def holds(self, value: float) -> bool:
        """Whether *value* breaches this rule."""
        return OPS[self.op](value, self.threshold)


def alert_labels(rule: Rule, series: SeriesKey) -> dict[str, str]:
    """The labels of *rule*'s alert on *series*: its own, then alertname, severity, endpoint."""
    labels = dict(rule.labels)
    labels.update(alertname=rule.name, severity=rule.severity, endpoint=series.endpoint)
    if series.model is not None:
        labels["model"] = series.model
    return labels


class Route(_Strict):
    """Alertmanager's route options, with its meanings (and faster defaults)."""

    group_by: list[str] = Field(default_factory=lambda: ["alertname", "endpoint"])
    group_wait: Duration = Field(default=0.0, ge=0)
    group_interval: Duration = Field(default=60.0, gt=0)
    repeat_interval: Duration = Field(default=4 * 3600.0, gt=0)
    send_resolved: bool = True

    @field_validator("group_by")
    @classmethod
    def _group_by(cls, value: list[str]) -> list[str]:
        # Alertmanager's "...": group by every label, i.e. one group per alert.
        if "..." in value:
            if len(value) > 1:
                raise ValueError("'...' groups by all labels and stands alone")
            return value
        _label_names(value)
        return value


class InhibitRule(_Strict):
    """A firing alert of ``source_severity`` mutes those of ``target_severity`` alike in
    ``equal``."""

    source_severity: Severity
    target_severity: Severity
    equal: list[str] = Field(default_factory=list)

    @field_validator("equal")
    @classmethod
    def _equal(cls, value: list[str]) -> list[str]:
        _label_names(value)
        return value


class RulesConfig(_Strict):
    """A whole rules file."""

    evaluation_interval: Duration = Field(default=2.0, gt=0)
    route: Route = Field(default_factory=Route)
    inhibit: list[InhibitRule] = Field(default_factory=list)
    rules: list[Rule] = Field(min_length=1)

    @field_validator("rules")
    @classmethod
    def _unique(cls, value: list[Rule]) -> list[Rule]:
        names = [rule.name for rule in value]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"rule names must be unique: {', '.join(twice)}")
        return value
