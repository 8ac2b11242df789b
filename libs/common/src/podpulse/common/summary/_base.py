"""Shared pieces of the summary models: the base model, units and names."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
)

SCHEMA_VERSION: Literal[1] = 1

TargetKind = Literal["hosted", "twin"]
Status = Literal["PASS", "FAIL"]
# Every way a request can fail (the prober's Outcome values other than OK).
FailureName = Literal[
    "FAILED", "TIMED_OUT", "CANCELLED", "HTTP_ERROR", "RATE_LIMITED", "CLIENT_TIMEOUT"
]
Ms = Annotated[float, Field(ge=0)]
Count = Annotated[int, Field(ge=0)]
Pct = Annotated[float, Field(ge=0, le=100)]
# A verdict is true or false, never the string "no" read as either.
Verdict = StrictBool


class _Model(BaseModel):
    # frozen: a summary is a record of what happened; extra="forbid": a misspelt or stale
    # field is an error naming it, not silently dropped; no inf or NaN: no measurement is one,
    # and JSON would write either as null.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
