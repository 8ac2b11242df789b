"""requests.csv: one row per measured request, and the one validating reader of those files.

The prober writes the rows (``podpulse.prober``'s ResultsWriter) and every reader -- its own
``report``, the tagger's ``cost`` and ``advise`` -- reads them back through
:func:`read_records`, so a damaged or foreign CSV is refused naming the file, line and column,
never half-read. It lives here, not in the prober, because one service must not import
another's package.

Times: ``intended``, ``sent`` and ``done`` are wall-clock epoch seconds (so rows from several
prober processes line up); durations are milliseconds. ``total_ms`` runs from the intended
start, not the send, so time a request spent waiting on the client side (coordinated
omission) counts against the endpoint as a user would feel it.

Streamed requests (``api`` stream or openai) add what a chat user feels: ``ttft_ms`` (intended
start to the first chunk that carries text), ``itl_ms`` (the gaps between successive
text-carrying chunks, space-separated in the CSV: one gap per chunk, however many tokens it
carries, as vLLM's ``bench serve`` counts them) and ``tpot_ms`` ((last text chunk - first text
chunk) / (output tokens - 1), vLLM's TPOT). CSVs written before these columns existed read
back with them empty.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

__all__ = [
    "APIS",
    "CSV_COLUMNS",
    "REQUIRED_COLUMNS",
    "Outcome",
    "RecordError",
    "RequestRecord",
    "ResultsError",
    "read_records",
]

# Bounds a real row stays within: epoch seconds up to the year 9999 (a datetime can hold it),
# durations up to ~115 days. Beyond them a value is damage, and would overflow a datetime.
_MAX_EPOCH_S = 253_402_300_799.0
_MAX_MS = 1e10
# How a request was sent: /runsync (whole answers), /run + /stream, or the OpenAI route.
APIS = ("runsync", "stream", "openai")


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
    api: str | None = None  # runsync, stream or openai (None: written before the choice existed)
    ttft_ms: float | None = None  # intended start to the first text-carrying chunk (streamed)
    tpot_ms: float | None = None  # (last text - first text) / (output tokens - 1) (streamed)
    itl_ms: tuple[float, ...] = ()  # gaps between successive text-carrying chunks (streamed)

    @property
    def streamed(self) -> bool:
        """True when the request was read as a stream (its TTFT and ITL mean something)."""
        return self.api in ("stream", "openai")

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
        row["itl_ms"] = " ".join(f"{gap:.3f}" for gap in self.itl_ms)
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

        def gaps(key: str) -> tuple[float, ...]:
            value = text(key)
            if value is None:
                return ()
            return tuple(number(key, part, high=_MAX_MS) for part in value.split())

        api = text("api")
        if api is not None and api not in APIS:
            raise RecordError(f"api: not one of {', '.join(APIS)}")
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
            api=api,
            ttft_ms=ms("ttft_ms"),
            tpot_ms=ms("tpot_ms"),
            itl_ms=gaps("itl_ms"),
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


class ResultsError(ValueError):
    """A run folder's file is damaged or foreign; the message names the file, line and field."""


def read_records(folder: Path) -> list[RequestRecord]:
    """Every row of every requests*.csv in a run folder, in (done) time order.

    The one reader of these CSVs: a header that is not ours, a row that does not parse or
    bytes that are not UTF-8 raise ResultsError naming the file and line, so a damaged file
    never reads as a shorter (or empty) run. Only the file's last row may be cut short (a
    crash mid-write); it is skipped.
    """
    records: list[RequestRecord] = []
    for path in sorted(folder.glob("requests*.csv")):
        records.extend(_read_csv(path))
    records.sort(key=lambda r: r.done)
    return records


def _read_csv(path: Path) -> list[RequestRecord]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ResultsError(f"{path}, line {line}: not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            if row:
                rows.append((reader.line_num, row))
    except csv.Error as exc:
        # A field past csv.field_size_limit(), a NUL byte, a stray quote.
        raise ResultsError(f"{path}, line {reader.line_num}: not CSV ({exc})") from None
    if not rows:
        return []  # created, and the crash came before the header was flushed
    header = rows[0][1]
    problems = _header_problems(header)
    if problems:
        raise ResultsError(f"{path}: line 1 is not a requests.csv header: {problems}")
    records = []
    for position, (line, row) in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            if len(row) < len(header) and position == len(rows):
                continue  # the last row, cut short by a crash mid-write
            raise ResultsError(
                f"{path}, line {line}: {len(row)} fields, the header has {len(header)}"
            )
        try:
            records.append(RequestRecord.from_row(dict(zip(header, row, strict=False))))
        except RecordError as exc:
            raise ResultsError(f"{path}, line {line}: {exc}") from None
    return records


def _header_problems(header: list[str]) -> str:
    problems = []
    if len(set(header)) != len(header):
        problems.append("a column appears twice")
    unknown = [name for name in header if name not in CSV_COLUMNS]
    if unknown:
        # Only the first few and shortened: the header may be any garbage.
        shown = ", ".join(repr(name[:40]) for name in unknown[:3])
        problems.append(f"{len(unknown)} unknown column(s) ({shown})")
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    return "; ".join(problems)
