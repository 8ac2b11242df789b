"""``RunStats``: everything a summary needs, mergeable exactly across shards, and its JSON.

A run split over several prober processes (Celery shards) gives one ``RunStats`` per shard;
``merge`` adds them, and ``to_summary`` of the merge equals ``to_summary`` of one ``RunStats``
built from every record. That holds because each part merges exactly: histograms add counts
in fixed buckets, counters add, first/last take min/max, and failure examples keep the three
smallest distinct reasons (the same three whatever the split).

Shards hand their statistics over as JSON (the Redis board, stats-shard<i>.json) that another
process wrote, so ``RunStats`` is a pydantic model: its fields are declared once, ``to_json``
dumps them and ``from_json`` validates them, and a damaged or foreign entry is an error naming
the field, never a half-read ``RunStats`` or a bare ``KeyError``.

Latency percentiles are over successful requests only (a failure's "latency" is a timeout
or an error page); failures are counted by kind and judged by the success rate.

Streamed requests add TTFT, TPOT (one value per request) and ITL (every gap of every request
in one histogram, as vLLM pools them) and their SLO lines. Goodput (vLLM's ``--goodput``)
counts the completed requests that met every per-request target -- total, and for streamed
requests TTFT and TPOT (an answer of one token has no TPOT and meets that target) -- as
they are added, so it merges across shards as a plain count.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self, cast, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetPydanticSchema,
    NonNegativeInt,
    PlainSerializer,
    ValidationInfo,
    WrapSerializer,
    field_validator,
    model_validator,
)
from pydantic_core import core_schema

from podpulse.common.histogram import Histogram
from podpulse.common.request_records import Outcome, RequestRecord
from podpulse.common.summary import (
    Breakdown,
    FailureKind,
    FailureName,
    Goodput,
    Latencies,
    LatencyStats,
    LevelSummary,
    Slo,
    SloMetric,
    SloRow,
    SloVerdict,
    Tokens,
)

__all__ = ["PERCENTILE_METHOD", "GoodputTargets", "Metric", "RunStats", "targets_of"]

Metric = Literal["total", "exec", "delay", "overhead", "schedule_lag", "ttft", "itl", "tpot"]

PERCENTILE_METHOD = (
    "nearest-rank (the value at rank ceil(q/100*n)) over 0.1 ms buckets, successful requests"
)
_EXAMPLES = 3
_REASON_CHARS = 200
_METRICS: tuple[Metric, ...] = get_args(Metric)
# Passed as the validation context by from_json: JSON another process wrote.
_WIRE = "wire"


class _HistogramJson(BaseModel):
    """A histogram's JSON: ``counts`` maps a bucket (value / resolution) to its count."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resolution_ms: float = Field(gt=0)
    counts: dict[NonNegativeInt, NonNegativeInt]


# A histogram field: read through _HistogramJson (a bad bucket is named by its path), then
# Histogram.from_json (which refuses another resolution); written by Histogram.to_json.
_Hist = Annotated[
    Histogram,
    GetPydanticSchema(
        lambda _, handler: core_schema.no_info_after_validator_function(
            lambda data: Histogram.from_json(data.model_dump()), handler(_HistogramJson)
        )
    ),
    PlainSerializer(Histogram.to_json),
]
# Counts by outcome: non-negative on the way in, a Counter (missing kinds count 0) inside.
_Counts = Annotated[
    Counter[str],
    GetPydanticSchema(
        lambda _, handler: core_schema.no_info_after_validator_function(
            Counter, handler(dict[str, NonNegativeInt])
        )
    ),
]
# Keyed parts are written in key order, so equal statistics give equal JSON.
_Sorted = WrapSerializer(lambda value, dump: dump(dict(sorted(value.items()))))


class GoodputTargets(BaseModel):
    """Per-request targets a request must all meet to count towards goodput, in ms."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    total_ms: float = Field(default=Slo().total_p95_ms, gt=0)
    ttft_ms: float = Field(default=Slo().ttft_p95_ms, gt=0)
    tpot_ms: float = Field(default=Slo().tpot_p95_ms, gt=0)

    def met_by(self, record: RequestRecord) -> bool:
        """Whether a completed request met every target that applies to it."""
        if record.total_ms > self.total_ms:
            return False
        if not record.streamed:
            return True
        if record.ttft_ms is None or record.ttft_ms > self.ttft_ms:
            return False
        return record.tpot_ms is None or record.tpot_ms <= self.tpot_ms


def targets_of(slo: Slo) -> GoodputTargets:
    """Goodput's targets: the SLO's P95 thresholds, applied to each request."""
    return GoodputTargets(
        total_ms=slo.total_p95_ms, ttft_ms=slo.ttft_p95_ms, tpot_ms=slo.tpot_p95_ms
    )


class RunStats(BaseModel):
    """Histograms, outcome counts, tokens and time span of a set of requests.

    With ``window_s`` set it also keeps one ``RunStats`` per window of that length, counted
    from ``origin`` (epoch seconds) by each request's done time: the soak's windows. Shards
    of one soak must share ``origin`` (the probe's ``start_at``) for their windows to line up.
    """

    model_config = ConfigDict(extra="forbid")

    window_s: float | None = None
    origin: float | None = None
    hist: dict[Metric, _Hist] = Field(default_factory=lambda: {m: Histogram() for m in _METRICS})
    outcomes: Annotated[_Counts, _Sorted] = Field(default_factory=Counter)
    examples: Annotated[dict[str, list[str]], _Sorted] = Field(default_factory=dict)
    input_tokens: NonNegativeInt = 0
    output_tokens: NonNegativeInt = 0
    # Execution time of the successful requests that reported output tokens, in 0.1 ms
    # units (an integer, so shards add up exactly): the denominator of decode tokens/s.
    token_exec_units: NonNegativeInt = 0
    rate_limited: NonNegativeInt = 0
    targets: GoodputTargets = Field(default_factory=GoodputTargets)
    good: NonNegativeInt = 0  # completed requests that met every goodput target
    streamed: NonNegativeInt = 0  # requests read as a stream (their TTFT lines then show)
    # Requests sent through the OpenAI route, which reports no delayTime or executionTime.
    openai: NonNegativeInt = 0
    first_intended: float | None = None
    last_done: float | None = None
    windows: Annotated[dict[NonNegativeInt, RunStats], _Sorted] = Field(default_factory=dict)

    if TYPE_CHECKING:
        # Built empty (with its windows) and filled by add and merge; every other field comes
        # in through from_json. For the type checker only: pydantic runs a model's own
        # __init__ inside validation, where from_json's context would not reach it.
        def __init__(
            self,
            *,
            window_s: float | None = None,
            origin: float | None = None,
            targets: GoodputTargets = ...,
        ) -> None: ...

    @model_validator(mode="before")
    @classmethod
    def _complete_json(cls, data: Any, info: ValidationInfo) -> Any:
        # to_json writes every field, so one missing from a shard's JSON is damage, and must
        # not read as zero; only the window settings may be left out (they default to none).
        if info.context == _WIRE and isinstance(data, Mapping):
            optional = {"window_s", "origin", "targets"}
            missing = [name for name in cls.model_fields if name not in {*data, *optional}]
            if missing:
                raise ValueError(f"RunStats JSON lacks the fields {missing}")
        return data

    @field_validator("hist")
    @classmethod
    def _every_metric(cls, hist: dict[Metric, Histogram]) -> dict[Metric, Histogram]:
        missing = sorted(set(_METRICS) - set(hist))
        if missing:
            raise ValueError(f"RunStats JSON lacks the histograms {missing}")
        return {name: hist[name] for name in _METRICS}

    @model_validator(mode="after")
    def _windowed(self) -> Self:
        if self.window_s is not None and (self.window_s <= 0 or self.origin is None):
            raise ValueError("windows need window_s > 0 and an origin")
        return self

    @classmethod
    def from_records(
        cls,
        records: Iterable[RequestRecord],
        *,
        window_s: float | None = None,
        origin: float | None = None,
        targets: GoodputTargets | None = None,
    ) -> RunStats:
        """Statistics over ``records``."""
        stats = cls(window_s=window_s, origin=origin, targets=targets or GoodputTargets())
        for record in records:
            stats.add(record)
        return stats

    @property
    def requests(self) -> int:
        """Measured requests (warm-up excluded)."""
        return sum(self.outcomes.values())

    @property
    def ok(self) -> int:
        """Requests that completed."""
        return self.outcomes[Outcome.OK.value]

    def add(self, record: RequestRecord) -> None:
        """Count one finished request."""
        kind = record.outcome.value
        self.outcomes[kind] += 1
        self.rate_limited += record.rate_limited
        self.first_intended = _min(self.first_intended, record.intended)
        self.last_done = _max(self.last_done, record.done)
        self.hist["schedule_lag"].add(record.schedule_lag_ms)
        if record.streamed:
            self.streamed += 1
        if record.api == "openai":
            self.openai += 1
        if record.ok:
            self._add_chat(record)
            self.hist["total"].add(record.total_ms)
            if record.exec_ms is not None:
                self.hist["exec"].add(record.exec_ms)
            if record.delay_ms is not None:
                self.hist["delay"].add(record.delay_ms)
            if (overhead := record.overhead_ms) is not None:
                self.hist["overhead"].add(overhead)
            self.input_tokens += record.input_tokens or 0
            if record.output_tokens and record.exec_ms:
                self.output_tokens += record.output_tokens
                self.token_exec_units += round(record.exec_ms * 10)
        else:
            reason = (record.error or record.status or kind)[:_REASON_CHARS]
            self.examples[kind] = _smallest({*self.examples.get(kind, ()), reason})
        if self.window_s is not None:
            assert self.origin is not None
            index = max(0, int((record.done - self.origin) // self.window_s))
            if index not in self.windows:
                self.windows[index] = RunStats(targets=self.targets)
            self.windows[index].add(record)

    def _add_chat(self, record: RequestRecord) -> None:
        """A completed request's TTFT, TPOT and gaps, and whether it was good."""
        if record.ttft_ms is not None:
            self.hist["ttft"].add(record.ttft_ms)
        if record.tpot_ms is not None:
            self.hist["tpot"].add(record.tpot_ms)
        for gap in record.itl_ms:
            self.hist["itl"].add(gap)
        if self.targets.met_by(record):
            self.good += 1

    def merge(self, other: RunStats) -> RunStats:
        """A new ``RunStats`` over both sets of requests (exact, order-independent)."""
        if (self.window_s, self.origin) != (other.window_s, other.origin):
            raise ValueError(
                "cannot merge RunStats with different windows "
                f"({self.window_s}@{self.origin} vs {other.window_s}@{other.origin})"
            )
        if self.targets != other.targets:
            raise ValueError("cannot merge RunStats counted against different goodput targets")
        merged = RunStats(window_s=self.window_s, origin=self.origin, targets=self.targets)
        merged.hist = {name: self.hist[name].merge(other.hist[name]) for name in _METRICS}
        merged.outcomes = self.outcomes + other.outcomes
        for kind in {*self.examples, *other.examples}:
            merged.examples[kind] = _smallest(
                {*self.examples.get(kind, ()), *other.examples.get(kind, ())}
            )
        merged.input_tokens = self.input_tokens + other.input_tokens
        merged.output_tokens = self.output_tokens + other.output_tokens
        merged.token_exec_units = self.token_exec_units + other.token_exec_units
        merged.rate_limited = self.rate_limited + other.rate_limited
        merged.good = self.good + other.good
        merged.streamed = self.streamed + other.streamed
        merged.openai = self.openai + other.openai
        merged.first_intended = _min(self.first_intended, other.first_intended)
        merged.last_done = _max(self.last_done, other.last_done)
        for index in {*self.windows, *other.windows}:
            mine, theirs = self.windows.get(index), other.windows.get(index)
            merged.windows[index] = (
                mine.merge(theirs)
                if mine and theirs
                else (mine or theirs or RunStats(targets=self.targets))
            )
        return merged

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict that ``from_json`` reads back into an equal ``RunStats``."""
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunStats:
        """Read ``to_json`` output back; ValueError (a ValidationError) naming a bad field."""
        return cls.model_validate(data, context=_WIRE)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunStats) and self.to_json() == other.to_json()

    __hash__ = None  # type: ignore[assignment]  # mutable: equal by value, so not hashable

    @property
    def duration_s(self) -> float:
        """From the first intended start to the last result."""
        if self.first_intended is None or self.last_done is None:
            return 0.0
        return max(0.0, self.last_done - self.first_intended)

    @property
    def success_pct(self) -> float | None:
        """Completed requests as a percentage of all measured requests."""
        return 100.0 * self.ok / self.requests if self.requests else None

    @property
    def tokens_per_second(self) -> float | None:
        """Output tokens over execution seconds of successful requests (the alert's tokens/s)."""
        if not self.token_exec_units:
            return None
        return self.output_tokens / (self.token_exec_units / 10_000)

    def latency(self, name: Metric) -> LatencyStats:
        """P50/P90/P95/P99 and mean of one metric, in ms."""
        hist = self.hist[name]
        return LatencyStats(
            p50=_round(_p(hist, 50)),
            p90=_round(_p(hist, 90)),
            p95=_round(_p(hist, 95)),
            p99=_round(_p(hist, 99)),
            mean=_round(hist.mean()),
            count=hist.count,
        )

    def slo_rows(self, slo: Slo) -> tuple[SloRow, ...]:
        """The user's table: metric, SLO, actual, margin, status, one row per threshold."""
        total, execution = self.hist["total"], self.hist["exec"]
        checks: list[tuple[SloMetric, float, float | None, str]] = []
        if not self.requests or self.openai < self.requests:
            # Not on the OpenAI route alone: it reports no executionTime, so there is nothing
            # to hold the exec lines against (they would fail on no data).
            checks += [
                ("Exec P50", slo.exec_p50_ms, _p(execution, 50), "<="),
                ("Exec P95", slo.exec_p95_ms, _p(execution, 95), "<="),
            ]
        checks += [
            ("Total P50", slo.total_p50_ms, _p(total, 50), "<="),
            ("Total P95", slo.total_p95_ms, _p(total, 95), "<="),
            ("Success rate", slo.success_pct, self.success_pct, ">="),
        ]
        if self.streamed:
            checks += [
                ("TTFT P95", slo.ttft_p95_ms, _p(self.hist["ttft"], 95), "<="),
                ("ITL P95", slo.itl_p95_ms, _p(self.hist["itl"], 95), "<="),
                ("TPOT P95", slo.tpot_p95_ms, _p(self.hist["tpot"], 95), "<="),
            ]
        rows = []
        for metric, limit, actual, sense in checks:
            unit: Literal["ms", "%"] = "%" if metric == "Success rate" else "ms"
            # Percentages keep three decimals: 98.96% must not print as 99.0 and FAIL.
            digits = 3 if unit == "%" else 1
            margin = (
                None if actual is None else (limit - actual if sense == "<=" else actual - limit)
            )
            rows.append(
                SloRow(
                    metric=metric,
                    slo=f"{'≤' if sense == '<=' else '≥'} {limit:g} {unit}",
                    threshold=limit,
                    unit=unit,
                    actual=_round(actual, digits),
                    margin=_round(margin, digits),
                    # Headroom as a share of the threshold, comparable across metrics.
                    margin_pct=None if margin is None else round(100 * margin / limit, 2),
                    status="PASS" if margin is not None and margin >= 0 else "FAIL",
                )
            )
        return tuple(rows)

    def breakdown_pct(self) -> Breakdown:
        """Mean total split into execution, queue (delayTime) and overhead, in percent."""
        total = self.hist["total"].mean()

        def share(metric: Metric) -> float | None:
            mean = self.hist[metric].mean()
            return None if not total or mean is None else _round(100 * mean / total, 2)

        return Breakdown(execution=share("exec"), queue=share("delay"), overhead=share("overhead"))

    def to_summary(self, slo: Slo, concurrency: int) -> LevelSummary:
        """The summary of these requests, as one level of a run."""
        rows = self.slo_rows(slo)
        duration = self.duration_s
        return LevelSummary(
            concurrency=concurrency,
            requests=self.requests,
            ok=self.ok,
            failed=self.requests - self.ok,
            success_rate_pct=_round(self.success_pct, 3),
            failures={
                cast(FailureName, kind): FailureKind(
                    count=count, examples=tuple(self.examples.get(kind, ()))
                )
                for kind, count in sorted(self.outcomes.items())
                if kind != Outcome.OK.value and count
            },
            rate_limited_responses=self.rate_limited,
            percentile_method=PERCENTILE_METHOD,
            latency_ms=Latencies(
                total=self.latency("total"),
                exec=self.latency("exec"),
                delay=self.latency("delay"),
                overhead=self.latency("overhead"),
                schedule_lag=self.latency("schedule_lag"),
                ttft=self.latency("ttft") if self.streamed else None,
                itl=self.latency("itl") if self.streamed else None,
                tpot=self.latency("tpot") if self.streamed else None,
            ),
            breakdown_pct=self.breakdown_pct(),
            tokens=Tokens(
                input=self.input_tokens,
                output=self.output_tokens,
                tokens_per_second=_round(self.tokens_per_second, 2),
                throughput_tokens_per_s=_round(
                    self.output_tokens / duration if duration else None, 2
                ),
            ),
            throughput_rps=_round(self.ok / duration if duration else None, 3),
            goodput=Goodput(
                good=self.good,
                rps=_round(self.good / duration if duration else None, 3),
                total_ms=self.targets.total_ms,
                ttft_ms=self.targets.ttft_ms if self.streamed else None,
                tpot_ms=self.targets.tpot_ms if self.streamed else None,
            ),
            started_at=_utc(self.first_intended),
            ended_at=_utc(self.last_done),
            duration_s=round(duration, 3),
            slo=SloVerdict(
                passed=all(row.status == "PASS" for row in rows),
                thresholds=slo,
                rows=rows,
            ),
        )


def _p(hist: Histogram, q: float) -> float | None:
    return hist.percentile(q) if hist.count else None


def _smallest(reasons: set[str]) -> list[str]:
    return sorted(reasons)[:_EXAMPLES]


def _min(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _utc(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)
