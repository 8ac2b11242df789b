"""The one validating reader of spans: a decoded span becomes an Observation, a rejection
with its reason, or nothing (a span podpulse does not alert on).

Two kinds of span count:

* ``runpod.job`` (the prober's CLIENT span, or any SDK's with the same attributes): one job.
  Series: ``runpod.endpoint.id`` (on the span, else on its resource) and
  ``gen_ai.request.model``. ``runpod.execution_ms``, ``runpod.delay_ms`` and
  ``podpulse.total_ms`` (else the span's duration, which the prober makes the total) are the
  latencies; ``podpulse.tokens_per_second``, else output tokens over exec, the throughput;
  ``gen_ai.server.time_to_first_token`` and ``gen_ai.server.time_per_output_token`` (seconds,
  the OpenTelemetry GenAI names; only streamed requests carry them) the time to first token
  and per output token, kept in ms. A job failed when the span's status is ERROR or
  ``runpod.job.status`` is FAILED or TIMED_OUT; a failed job counts in fail_rate only.
* a GenAI span (``gen_ai.operation.name`` set, as the worker's ``chat {model}`` spans): one
  generation inside a worker. It contributes one tokens/s sample (``podpulse.tokens_per_second``,
  else output tokens over the span's duration), and its time to first token and per output
  token when it carries them (the same two attributes), and nothing else: its duration is generation
  time, not RunPod's executionTime, and the job it belongs to is counted by its
  ``runpod.job`` span. It needs ``runpod.endpoint.id`` on the span or its resource (podpulse's
  telemetry sets it from the ``RUNPOD_ENDPOINT_ID`` RunPod gives workers, or
  ``OTEL_RESOURCE_ATTRIBUTES``); without one, or when failed, it is ignored.

Every other span is ignored (a Collector may forward everything). A span of ours that
carries a wrong attribute (a string latency, a negative or non-finite number, a malformed
endpoint id), no end time, or an end time outside the kept windows is *rejected*: it is
dropped, counted by reason, and the reply's partial_success says so. So is a job span whose
time to first token is longer than its ``podpulse.total_ms`` (milliseconds sent as seconds,
most likely).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from .._windows._contract import Observation, SeriesKey
from ._otlp import RawSpan, Scalar

__all__ = ["RejectReason", "Rejection", "SpanReader"]

RejectReason = Literal["bad_attribute", "no_endpoint", "no_end_time", "too_old", "from_future"]

JOB_SPAN = "runpod.job"
_FAILED_STATUSES = frozenset({"FAILED", "TIMED_OUT"})
# RunPod's endpoint ids are short lowercase alphanumerics; other SDKs' users may pick their
# own, so any printable ASCII word up to 128 characters (it becomes a label and a Redis key).
_ENDPOINT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
_MODEL_MAX = 256
# A latency or rate past this is a unit mistake, not a measurement (1e9 ms is 11 days).
_VALUE_MAX = 1e9
# The GenAI timings, in seconds on the span (OpenTelemetry's unit), in ms in the windows.
TTFT = "gen_ai.server.time_to_first_token"
TPOT = "gen_ai.server.time_per_output_token"
# The prober measures a job's first token and its total from the same send time, so the first
# can pass the total only by rounding; past this slack the units are wrong.
_TTFT_SLACK_MS = 1.0


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one span was dropped: a bounded reason (a metric label) and a message."""

    reason: RejectReason
    message: str


class _Bad(Exception):
    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _short(text: str) -> str:
    return ascii(text[:60] + ("..." if len(text) > 60 else ""))


def _number(
    attrs: dict[str, Scalar],
    key: str,
    *,
    limit: float = _VALUE_MAX,
    what: str = "a finite number in [0, 1e9]",
) -> float | None:
    value = attrs.get(key)
    if value is None:
        return None
    if type(value) not in (int, float):
        raise _Bad("bad_attribute", f"{key} must be a number, got {type(value).__name__}")
    number = float(value)  # type: ignore[arg-type]  # int or float: mypy does not narrow on type()
    if not 0 <= number <= limit:  # NaN fails this too
        raise _Bad("bad_attribute", f"{key} must be {what}, got {number}")
    return number


def _seconds_as_ms(attrs: dict[str, Scalar], key: str) -> float | None:
    seconds = _number(
        attrs, key, limit=_VALUE_MAX / 1000, what="a finite number of seconds in [0, 1e6]"
    )
    return None if seconds is None else seconds * 1000.0


def _text(attrs: dict[str, Scalar], key: str) -> str | None:
    value = attrs.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Bad("bad_attribute", f"{key} must be a string, got {type(value).__name__}")
    return value


class SpanReader:
    """Judges decoded spans against the clock and the alerter's settings."""

    def __init__(
        self,
        *,
        retention_s: float,
        max_clock_skew_s: float,
        accept_twin_spans: bool = True,
        accept_genai_spans: bool = True,
    ) -> None:
        self.retention_s = retention_s
        self.max_clock_skew_s = max_clock_skew_s
        self.accept_twin_spans = accept_twin_spans
        self.accept_genai_spans = accept_genai_spans

    def read(self, span: RawSpan, now: float) -> Observation | Rejection | None:
        """The span's Observation, why it is rejected, or None when it is not one of ours."""
        attrs = span.attributes
        if span.name == JOB_SPAN:
            reader = self._job
        elif "gen_ai.operation.name" in attrs and self.accept_genai_spans:
            reader = self._genai
        else:
            return None
        try:
            return reader(span, now)
        except _Bad as bad:
            return Rejection(bad.reason, f"span {_short(span.name)}: {bad.message}")
        except ArithmeticError as exc:
            # Arithmetic on one span's numbers that this reader did not foresee: that span is
            # refused alone, never the whole batch (a 500 makes the client send it all again).
            message = f"span {_short(span.name)}: its numbers do not compute ({exc})"
            return Rejection("bad_attribute", message)

    def _when(self, span: RawSpan, now: float) -> float:
        if span.end_ns <= 0:
            raise _Bad("no_end_time", "no endTimeUnixNano")
        at = span.end_ns / 1e9
        if at < now - self.retention_s:
            raise _Bad("too_old", f"ended {now - at:.0f} s ago, before the longest window")
        if at > now + self.max_clock_skew_s:
            raise _Bad("from_future", f"ends {at - now:.0f} s in the future (clock skew?)")
        return at

    def _series(self, span: RawSpan, model_keys: tuple[str, ...]) -> SeriesKey | None:
        endpoint = _text(span.attributes, "runpod.endpoint.id")
        if endpoint is None:
            value = span.resource.get("runpod.endpoint.id")
            endpoint = value if isinstance(value, str) else None
        if endpoint is None:
            return None
        if not _ENDPOINT.fullmatch(endpoint):
            raise _Bad("bad_attribute", f"runpod.endpoint.id {_short(endpoint)} is not an id")
        model = None
        for key in model_keys:
            model = _text(span.attributes, key)
            if model is not None:
                break
        if model is not None and (
            len(model) > _MODEL_MAX or not model.isprintable() or not model.isascii()
        ):
            raise _Bad("bad_attribute", f"model name {_short(model)} is not printable ASCII")
        return SeriesKey(endpoint, model or None)

    def _job(self, span: RawSpan, now: float) -> Observation | None:
        attrs = span.attributes
        if not self.accept_twin_spans and attrs.get("podpulse.target.kind") == "twin":
            return None
        series = self._series(span, ("gen_ai.request.model",))
        if series is None:
            raise _Bad("no_endpoint", "runpod.job span without runpod.endpoint.id")
        at = self._when(span, now)
        status = _text(attrs, "runpod.job.status")
        exec_ms = _number(attrs, "runpod.execution_ms")
        delay_ms = _number(attrs, "runpod.delay_ms")
        total_ms = _number(attrs, "podpulse.total_ms")
        # Only the prober's own total counts from the same (intended) send as its first token;
        # a span's duration starts at the real send, which may be later.
        measured_total_ms = total_ms
        if total_ms is None and span.start_ns > 0 and span.end_ns >= span.start_ns:
            total_ms = min((span.end_ns - span.start_ns) / 1e6, _VALUE_MAX)
        _number(attrs, "gen_ai.usage.input_tokens")
        output_tokens = _number(attrs, "gen_ai.usage.output_tokens")
        tokens_per_s = _number(attrs, "podpulse.tokens_per_second")
        ttft_ms = _seconds_as_ms(attrs, TTFT)
        tpot_ms = _seconds_as_ms(attrs, TPOT)
        if (
            ttft_ms is not None
            and measured_total_ms is not None
            and ttft_ms > measured_total_ms + _TTFT_SLACK_MS
        ):
            raise _Bad(
                "bad_attribute",
                f"{TTFT} is {ttft_ms / 1000:g} s, longer than the job's podpulse.total_ms"
                f" {measured_total_ms:g} ms (milliseconds sent as seconds?)",
            )
        if tokens_per_s is None and output_tokens and exec_ms:
            # Tokens over seconds as one division: exec_ms / 1000 underflows to 0 for a
            # subnormal exec_ms (5e-324), and the quotient of a tiny one overflows to inf.
            tokens_per_s = output_tokens * 1000.0 / exec_ms
            if not tokens_per_s <= _VALUE_MAX:
                raise _Bad(
                    "bad_attribute",
                    f"gen_ai.usage.output_tokens over runpod.execution_ms is {tokens_per_s:g}"
                    " tokens/s, past 1e9 (execution_ms too small)",
                )
        return Observation(
            series=series,
            at=at,
            failed=span.error or status in _FAILED_STATUSES,
            exec_ms=exec_ms,
            delay_ms=delay_ms,
            total_ms=total_ms,
            tokens_per_s=tokens_per_s,
            ttft_ms=ttft_ms,
            tpot_ms=tpot_ms,
        )

    def _genai(self, span: RawSpan, now: float) -> Observation | None:
        series = self._series(span, ("gen_ai.response.model", "gen_ai.request.model"))
        if series is None or span.error:
            return None
        at = self._when(span, now)
        tokens_per_s = _number(span.attributes, "podpulse.tokens_per_second")
        output_tokens = _number(span.attributes, "gen_ai.usage.output_tokens")
        seconds = (span.end_ns - span.start_ns) / 1e9
        if tokens_per_s is None and output_tokens is not None and seconds > 0:
            tokens_per_s = min(output_tokens / seconds, _VALUE_MAX)
        ttft_ms = _seconds_as_ms(span.attributes, TTFT)
        tpot_ms = _seconds_as_ms(span.attributes, TPOT)
        if tokens_per_s is None and ttft_ms is None and tpot_ms is None:
            return None
        return Observation(
            series=series,
            at=at,
            failed=None,
            tokens_per_s=tokens_per_s,
            ttft_ms=ttft_ms,
            tpot_ms=tpot_ms,
        )
