"""Typed views of RunPod's serverless API responses.

Fields use Python names with RunPod's camelCase as aliases; fields RunPod adds later are
kept (``extra="allow"``) rather than dropped, and results carry the exact JSON in ``raw``.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Any, TypedDict

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator


class JobStatus(StrEnum):
    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def is_final(self) -> bool:
        """True once the job will not change status again (unless retried)."""
        return self not in (JobStatus.IN_QUEUE, JobStatus.IN_PROGRESS)


class JobPolicy(TypedDict, total=False):
    """RunPod's per-job ``policy`` object; all times in milliseconds."""

    executionTimeout: int
    ttl: int
    lowPriority: bool


def _whole_ms(value: Any) -> Any:
    # RunPod sends integer milliseconds; a float (e.g. from a twin) is rounded, not refused.
    if isinstance(value, float) and math.isfinite(value):
        return round(value)
    return value


Millis = Annotated[int, BeforeValidator(_whole_ms)]


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


class _Result(_Part):
    raw: dict[str, Any] = Field(default_factory=dict, repr=False, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _keep_raw(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {**data, "raw": data}
        return data


class Job(_Result):
    """A job as ``/run``, ``/runsync``, ``/status``, ``/cancel`` and ``/retry`` report it."""

    id: str
    status: JobStatus
    delay_time_ms: Millis | None = Field(default=None, alias="delayTime")
    execution_time_ms: Millis | None = Field(default=None, alias="executionTime")
    output: Any = None
    error: Any = None
    worker_id: str | None = Field(default=None, alias="workerId")


class StreamChunk(_Part):
    output: Any = None


class StreamResult(_Result):
    """What ``/stream/{id}`` returns: the chunks produced since the last poll."""

    status: JobStatus
    stream: list[StreamChunk] = Field(default_factory=list)


class JobCounts(_Part):
    completed: int
    failed: int
    in_progress: int = Field(alias="inProgress")
    in_queue: int = Field(alias="inQueue")
    retried: int


class WorkerCounts(_Part):
    """``idle`` and ``running``; other counts RunPod reports (initializing, throttled…) are
    kept as extra attributes and in ``model_extra``."""

    idle: int
    running: int


class Health(_Result):
    jobs: JobCounts
    workers: WorkerCounts


class PurgeResult(_Result):
    removed: int
    status: str
