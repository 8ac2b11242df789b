"""One measured request: what the engine records, the CSV writes and the statistics read.

Times: ``intended``, ``sent`` and ``done`` are wall-clock epoch seconds (so rows from several
prober processes line up); durations are milliseconds. ``total_ms`` runs from the intended
start, not the send, so time a request spent waiting on the client side (coordinated
omission) counts against the endpoint as a user would feel it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["CSV_COLUMNS", "REQUIRED_COLUMNS", "Outcome", "RecordError", "RequestRecord"]

# Bounds a real row stays within: epoch seconds up to the year 9999 (a datetime can hold it),
# durations up to ~115 days. Beyond them a value is damage, and would overflow a datetime.
_MAX_EPOCH_S = 253_402_300_799.0
_MAX_MS = 1e10


class RecordError(ValueError):
    """A CSV row that is not a request record; the message names the column and why."""


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
    def from_row(cls, row: Mapping[str, str | None]) -> RequestRecord:
        """Read a CSV row back (``report`` and merged shards); RecordError naming the column.

        Every number must be finite and within what a run can measure: a row that is not
        one this module wrote is refused, never half-read.
        """

        def text(key: str) -> str | None:
            value = row.get(key)
            return None if value in (None, "") else value

        def need(key: str) -> str:
            value = text(key)
            if value is None:
                raise RecordError(f"{key}: missing")
            return value

        def number(key: str, value: str, *, high: float) -> float:
            try:
                parsed = float(value)
            except ValueError:
                raise RecordError(f"{key}: not a number") from None
            if not 0.0 <= parsed <= high:  # also false for NaN
                raise RecordError(f"{key}: {parsed:g} is outside [0, {high:g}]")
            return parsed

        def count(key: str, value: str) -> int:
            # Digits only: int() would also take " 1_0", and a 5,000-digit number is damage.
            if not value.isascii() or not value.isdigit() or len(value) > 18:
                raise RecordError(f"{key}: not a count (a whole number >= 0)")
            return int(value)

        def ms(key: str) -> float | None:
            value = text(key)
            return None if value is None else number(key, value, high=_MAX_MS)

        def opt_count(key: str) -> int | None:
            value = text(key)
            return None if value is None else count(key, value)

        outcome = need("outcome")
        if outcome not in Outcome.__members__:
            raise RecordError(f"outcome: not one of {', '.join(Outcome)}")
        return cls(
            run_id=need("run_id"),
            seq=count("seq", need("seq")),
            concurrency=count("concurrency", need("concurrency")),
            intended=number("intended", need("intended"), high=_MAX_EPOCH_S),
            sent=number("sent", need("sent"), high=_MAX_EPOCH_S),
            done=number("done", need("done"), high=_MAX_EPOCH_S),
            outcome=Outcome(outcome),
            job_id=text("job_id"),
            status=text("status"),
            worker_id=text("worker_id"),
            delay_ms=ms("delay_ms"),
            exec_ms=ms("exec_ms"),
            input_tokens=opt_count("input_tokens"),
            output_tokens=opt_count("output_tokens"),
            error=text("error"),
            shard=opt_count("shard") or 0,
            rate_limited=opt_count("rate_limited") or 0,
            model=text("model"),
        )


CSV_COLUMNS = [f.name for f in dataclasses.fields(RequestRecord)] + ["total_ms"]
# What a row cannot do without; the optional columns came later, and older CSVs lack some.
REQUIRED_COLUMNS = (
    "run_id",
    "seq",
    "concurrency",
    "intended",
    "sent",
    "done",
    "outcome",
    "total_ms",
)
