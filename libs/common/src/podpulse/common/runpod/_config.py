"""``EndpointConfig``: workers and autoscaling of a serverless endpoint, in REST v2 form."""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Any, Self

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

    workers_min: Count = Field(ge=0, description="Workers kept running even when idle.")
    workers_max: Count = Field(ge=1, description="Upper bound the scaler may start.")
    idle_timeout_s: Count = Field(
        ge=1, le=3600, description="Seconds an idle worker is kept (and billed) before stopping."
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
        if scaler_type is ScalerType.QUEUE_DELAY and value < 0.5:
            raise ValueError(f"QUEUE_DELAY needs a delay of at least 0.5 seconds, got {value}")
        if scaler_type is ScalerType.REQUEST_COUNT:
            if not float(value).is_integer() or value < 1:
                raise ValueError(f"REQUEST_COUNT needs a whole number >= 1, got {value}")
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


RECOMMENDED_CONFIG = EndpointConfig(
    workers_min=2,
    workers_max=5,
    idle_timeout_s=180,
    scaler_type=ScalerType.QUEUE_DELAY,
    scaler_value=1,
)
"""The user's tuned config: 2 warm workers (no cold starts at the SLO's load), up to 5,
scale out once a request has queued 1 s, keep idle workers 180 s."""
