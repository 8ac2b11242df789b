"""``EndpointConfig``: workers and autoscaling of a serverless endpoint, in REST v2 form;
``EndpointPatch``: the body of a v2 ``PATCH /serverless/{id}``, read strictly."""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ._errors import RunPodProtocolError


class ScalerType(StrEnum):
    QUEUE_DELAY = "QUEUE_DELAY"
    """Start another worker once a request has waited longer than ``scaler_value`` seconds."""
    REQUEST_COUNT = "REQUEST_COUNT"
    """Keep ceil((inQueue + inProgress) / ``scaler_value``) workers."""


def _not_bool(value: Any) -> Any:
    # pydantic would read True as 1; a flag passed where a count belongs is a mistake.
    if isinstance(value, bool):
        # pydantic turns only ValueError into a field error; a TypeError would escape raw.
        raise ValueError("must be a number, not a boolean")  # noqa: TRY004
    return value


Count = Annotated[int, BeforeValidator(_not_bool)]
Number = Annotated[int | float, BeforeValidator(_not_bool)]

# Upper bounds. RunPod caps workers per account (a quota raised on request), the idle timeout
# at an hour and documents no ceiling for the scaler values; these are far above any real
# endpoint and low enough that a typo (10**30 workers, a queue delay of 1e308 s) is refused
# instead of applied.
MAX_WORKERS = 1000
MAX_IDLE_TIMEOUT_S = 3600
MAX_QUEUE_DELAY_S = 3600.0  # an hour of queueing is "never scale out"
MAX_REQUEST_COUNT = 10_000  # requests per worker; the twin's own worker takes 4096 at most

# Our field name -> where it lives in the v2 JSON, for error messages about server replies.
_WIRE_NAMES = {
    "workers_min": "workers.min",
    "workers_max": "workers.max",
    "idle_timeout_s": "workers.idleTimeout",
    "scaler_type": "scaling.type",
}


class EndpointConfig(BaseModel):
    """Worker bounds and autoscaling of one endpoint; invalid combinations do not construct."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workers_min: Count = Field(
        ge=0, le=MAX_WORKERS, description="Workers kept running even when idle."
    )
    workers_max: Count = Field(
        ge=1, le=MAX_WORKERS, description="Upper bound the scaler may start."
    )
    idle_timeout_s: Count = Field(
        ge=1,
        le=MAX_IDLE_TIMEOUT_S,
        description="Seconds an idle worker is kept (and billed) before stopping.",
    )
    scaler_type: ScalerType
    scaler_value: Number = Field(
        description="QUEUE_DELAY: seconds a request may wait (>= 0.5); "
        "REQUEST_COUNT: requests per worker (integer >= 1)."
    )

    @field_validator("scaler_value")
    @classmethod
    def _check_scaler_value(cls, value: int | float, info: ValidationInfo) -> int | float:
        scaler_type = info.data.get("scaler_type")
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value}")
        if scaler_type is ScalerType.QUEUE_DELAY and not 0.5 <= value <= MAX_QUEUE_DELAY_S:
            raise ValueError(
                f"QUEUE_DELAY needs a delay of at least 0.5 seconds and at most "
                f"{MAX_QUEUE_DELAY_S:g}, got {value}"
            )
        if scaler_type is ScalerType.REQUEST_COUNT:
            if not float(value).is_integer() or not 1 <= value <= MAX_REQUEST_COUNT:
                raise ValueError(
                    f"REQUEST_COUNT needs a whole number >= 1 and <= {MAX_REQUEST_COUNT}, "
                    f"got {value}"
                )
            return int(value)
        return value

    @model_validator(mode="after")
    def _check_bounds(self) -> Self:
        if self.workers_min > self.workers_max:
            raise ValueError(
                f"workers_min ({self.workers_min}) must not exceed workers_max ({self.workers_max})"
            )
        return self

    def to_v2(self) -> dict[str, Any]:
        """The body of ``PATCH /v2/serverless/{id}``."""
        scaling: dict[str, Any] = {"type": self.scaler_type.value}
        if self.scaler_type is ScalerType.QUEUE_DELAY:
            scaling["queueDelay"] = self.scaler_value
        else:
            scaling["requestCount"] = self.scaler_value
        return {
            "workers": {
                "min": self.workers_min,
                "max": self.workers_max,
                "idleTimeout": self.idle_timeout_s,
            },
            "scaling": scaling,
        }

    def patched(self, patch: EndpointPatch) -> EndpointConfig:
        """This config with ``patch`` applied: its ``workers`` fields replace ours one by
        one, its ``scaling`` replaces ours whole. ValueError, naming v2 fields, when the
        result breaks a rule no single field does (workers.min above workers.max)."""
        fields = self.model_dump()
        if patch.workers is not None:
            given = patch.workers.model_dump(exclude_unset=True)
            fields.update({_WORKER_FIELDS[name]: value for name, value in given.items()})
        if patch.scaling is not None:
            fields["scaler_type"] = ScalerType(patch.scaling.type)
            fields["scaler_value"] = patch.scaling.value
        if fields["workers_min"] > fields["workers_max"]:
            raise ValueError(
                f"workers.min ({fields['workers_min']}) must not exceed "
                f"workers.max ({fields['workers_max']})"
            )
        try:
            return EndpointConfig.model_validate(fields)
        except ValidationError as exc:  # the patch's bounds are ours: not expected
            raise ValueError("; ".join(e["msg"] for e in exc.errors(include_input=False))) from None

    @classmethod
    def from_v2(cls, data: Any, *, call: str = "from_v2") -> Self:
        """Read the config out of a v2 endpoint object; other fields (id, name…) are ignored.

        Raises ``RunPodProtocolError`` naming the v2 field that is missing or invalid.
        """
        workers = _part(data, "workers", call)
        scaling = _part(data, "scaling", call)
        scaler_type = _field(scaling, "scaling", "type", call)
        if scaler_type == ScalerType.QUEUE_DELAY:
            value_name = "queueDelay"
        elif scaler_type == ScalerType.REQUEST_COUNT:
            value_name = "requestCount"
        else:
            raise RunPodProtocolError(
                f"RunPod {call}: scaling.type is {scaler_type!r}, "
                "expected 'QUEUE_DELAY' or 'REQUEST_COUNT'",
                call=call,
                field="scaling.type",
            )
        fields = {
            "workers_min": _field(workers, "workers", "min", call),
            "workers_max": _field(workers, "workers", "max", call),
            "idle_timeout_s": _field(workers, "workers", "idleTimeout", call),
            "scaler_type": scaler_type,
            "scaler_value": _field(scaling, "scaling", value_name, call),
        }
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            first = exc.errors()[0]
            name = str(first["loc"][0]) if first["loc"] else "workers"
            wire = _WIRE_NAMES.get(
                name, f"scaling.{value_name}" if name == "scaler_value" else name
            )
            raise RunPodProtocolError(
                f"RunPod {call}: endpoint config field {wire!r} is invalid: {first['msg']}",
                call=call,
                field=wire,
            ) from None


def _part(data: Any, name: str, call: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise RunPodProtocolError(
            f"RunPod {call}: expected an endpoint JSON object, got {type(data).__name__}",
            call=call,
        )
    part = data.get(name)
    if not isinstance(part, dict):
        problem = "is missing" if part is None else f"is a {type(part).__name__}, not an object"
        raise RunPodProtocolError(
            f"RunPod {call}: endpoint config {name!r} {problem}", call=call, field=name
        )
    return part


def _field(part: dict[str, Any], part_name: str, name: str, call: str) -> Any:
    if name not in part or part[name] is None:
        path = f"{part_name}.{name}"
        raise RunPodProtocolError(
            f"RunPod {call}: endpoint config field {path!r} is missing", call=call, field=path
        )
    return part[name]


# --- the v2 PATCH body ---------------------------------------------------------------------


class _V2Part(BaseModel):
    # strict: a count sent as "3" or true is a client bug to report, not a value to guess at.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


def _no_null(value: Any) -> Any:
    # A field left out keeps its value; null is neither a value nor "keep it".
    if value is None:
        raise ValueError("must not be null (leave the field out to keep its value)")
    return value


class WorkersPatch(_V2Part):
    """``workers`` of a v2 PATCH: each field given replaces the endpoint's."""

    min: int | None = Field(default=None, ge=0, le=MAX_WORKERS)
    max: int | None = Field(default=None, ge=1, le=MAX_WORKERS)
    idleTimeout: int | None = Field(default=None, ge=1, le=MAX_IDLE_TIMEOUT_S)

    _given = field_validator("min", "max", "idleTimeout", mode="before")(_no_null)


class QueueDelayScaling(_V2Part):
    """Start another worker once a request has waited ``queueDelay`` seconds."""

    type: Literal["QUEUE_DELAY"]
    queueDelay: float = Field(ge=0.5, le=MAX_QUEUE_DELAY_S)

    @property
    def value(self) -> float:
        return self.queueDelay


class RequestCountScaling(_V2Part):
    """Keep ceil((inQueue + inProgress) / ``requestCount``) workers."""

    type: Literal["REQUEST_COUNT"]
    requestCount: int = Field(ge=1, le=MAX_REQUEST_COUNT)

    @property
    def value(self) -> int:
        return self.requestCount


_Scaling = Annotated[QueueDelayScaling | RequestCountScaling, Field(discriminator="type")]
_WORKER_FIELDS = {"min": "workers_min", "max": "workers_max", "idleTimeout": "idle_timeout_s"}


class EndpointPatch(_V2Part):
    """The body of ``PATCH /v2/serverless/{id}`` as far as podpulse speaks it: ``workers``
    and ``scaling``, each optional. Strict JSON types, no unknown fields, bounded values."""

    workers: WorkersPatch | None = None
    scaling: _Scaling | None = None

    _given = field_validator("workers", "scaling", mode="before")(_no_null)

    @classmethod
    def read(cls, data: Any) -> Self:
        """Validate a decoded JSON body; ValueError with one line naming each bad field."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ValueError(_patch_problems(exc)) from None


_SCALER_TAGS = frozenset(t.value for t in ScalerType)


_JSON_TYPES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
               list: "an array", dict: "an object"}  # fmt: skip
_SHOWN_UNKNOWN = 10


def _patch_problems(exc: ValidationError) -> str:
    # One line, naming fields by their v2 path; the types of wrong values, never the values.
    unknown: list[str] = []
    problems: list[str] = []
    for err in exc.errors():
        # A discriminated union puts the tag in the path: scaling.QUEUE_DELAY.queueDelay.
        loc = [p for i, p in enumerate(err["loc"]) if not (i == 1 and p in _SCALER_TAGS)]
        where = ".".join(_shown(p) for p in loc) or "the body"
        if err["type"] == "extra_forbidden":
            unknown.append(where)
            continue
        if err["type"] in ("model_type", "model_attributes_type"):
            message = "must be a JSON object"
        elif err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            # pydantic's message quotes the client's tag; this one names the choices only.
            where += ".type"
            message = "must be 'QUEUE_DELAY' or 'REQUEST_COUNT'"
        else:
            message = err["msg"].removeprefix("Value error, ")
        if err["type"].endswith("_type"):
            message += f", not {_JSON_TYPES.get(type(err['input']), 'null')}"
        problems.append(f"{where}: {message}")
    if unknown:
        more = len(unknown) - _SHOWN_UNKNOWN
        unknown.sort()
        shown = ", ".join(unknown[:_SHOWN_UNKNOWN]) + (f" and {more} more" if more > 0 else "")
        problems.insert(0, f"unknown field(s): {shown}")
    return "; ".join(problems)


def _shown(part: str | int) -> str:
    # Field names come from the client: quoted when they would not read as a plain name.
    text = str(part)
    return text if text.isidentifier() and len(text) <= 40 else repr(text[:40])


RECOMMENDED_CONFIG = EndpointConfig(
    workers_min=2,
    workers_max=5,
    idle_timeout_s=180,
    scaler_type=ScalerType.QUEUE_DELAY,
    scaler_value=1,
)
"""The user's tuned config: 2 warm workers (no cold starts at the SLO's load), up to 5,
scale out once a request has queued 1 s, keep idle workers 180 s."""
