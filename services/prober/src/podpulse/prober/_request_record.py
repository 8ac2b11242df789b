"""One measured request: what the engine records, the CSV writes and the statistics read.

Times: ``intended``, ``sent`` and ``done`` are wall-clock epoch seconds (so rows from several
prober processes line up); durations are milliseconds. ``total_ms`` runs from the intended
start, not the send, so time a request spent waiting on the client side (coordinated
omission) counts against the endpoint as a user would feel it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["CSV_COLUMNS", "Outcome", "RequestRecord"]


class Outcome(StrEnum):
    """How a request ended; everything but OK is a failure, counted by kind."""

    OK = "OK"
    FAILED = "FAILED"  # RunPod said FAILED (handler error, worker died)
    TIMED_OUT = "TIMED_OUT"  # RunPod said TIMED_OUT (policy.executionTimeout)
    CANCELLED = "CANCELLED"
    HTTP_ERROR = "HTTP_ERROR"  # 4xx/5xx other than 429, or a connection error
    RATE_LIMITED = "RATE_LIMITED"  # 429 after the client's retries
    CLIENT_TIMEOUT = "CLIENT_TIMEOUT"  # our per-request timeout ran out first


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """A finished request, as appended to ``requests.csv``."""

    run_id: str
    seq: int
    concurrency: int
    intended: float
    sent: float
    done: float
    outcome: Outcome
    job_id: str | None = None
    status: str | None = None  # RunPod's status string, when it answered
    worker_id: str | None = None
    delay_ms: float | None = None  # RunPod delayTime
    exec_ms: float | None = None  # RunPod executionTime
    input_tokens: int | None = None
    output_tokens: int | None = None
    error: str | None = None  # short reason; never the prompt or the answer
    shard: int = 0
    rate_limited: int = 0  # 429 answers this request got (and backed off from) before its end
    model: str | None = None  # the model the endpoint says answered, for gen_ai.request.model

    @property
    def ok(self) -> bool:
        """True when the job completed."""
        return self.outcome is Outcome.OK

    @property
    def total_ms(self) -> float:
        """From the intended start to the final result, client-measured."""
        return (self.done - self.intended) * 1000.0

    @property
    def schedule_lag_ms(self) -> float:
        """How late the request left compared with its intended start."""
        return (self.sent - self.intended) * 1000.0

    @property
    def overhead_ms(self) -> float | None:
        """total - delay - exec: network, polling and client time."""
        if self.delay_ms is None or self.exec_ms is None:
            return None
        return self.total_ms - self.delay_ms - self.exec_ms

    @property
    def tokens_per_second(self) -> float | None:
        """Output tokens over execution time, as the alert rules define throughput."""
        if not self.output_tokens or not self.exec_ms:
            return None
        return self.output_tokens / (self.exec_ms / 1000.0)

    def to_row(self) -> dict[str, Any]:
        """The CSV row: every field plus the derived total."""
        row = dataclasses.asdict(self)
        row["outcome"] = self.outcome.value
        row["total_ms"] = round(self.total_ms, 3)
        return row

    @classmethod
    def from_row(cls, row: dict[str, str]) -> RequestRecord:
        """Read a CSV row back (``report`` and merged shards)."""

        def opt_float(key: str) -> float | None:
            return float(row[key]) if row.get(key) not in (None, "") else None

        def opt_int(key: str) -> int | None:
            return int(row[key]) if row.get(key) not in (None, "") else None

        def opt_str(key: str) -> str | None:
            return row[key] if row.get(key) not in (None, "") else None

        return cls(
            run_id=row["run_id"],
            seq=int(row["seq"]),
            concurrency=int(row["concurrency"]),
            intended=float(row["intended"]),
            sent=float(row["sent"]),
            done=float(row["done"]),
            outcome=Outcome(row["outcome"]),
            job_id=opt_str("job_id"),
            status=opt_str("status"),
            worker_id=opt_str("worker_id"),
            delay_ms=opt_float("delay_ms"),
            exec_ms=opt_float("exec_ms"),
            input_tokens=opt_int("input_tokens"),
            output_tokens=opt_int("output_tokens"),
            error=opt_str("error"),
            shard=int(row.get("shard") or 0),
            rate_limited=int(row.get("rate_limited") or 0),
            model=opt_str("model"),
        )


CSV_COLUMNS = [f.name for f in dataclasses.fields(RequestRecord)] + ["total_ms"]
