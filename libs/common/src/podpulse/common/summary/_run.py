"""The whole run, and the one validating reader of summary.json."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ..probe_spec import ProbeKind, ProbeSpec, check_run_id
from ._base import Verdict, _Model
from ._level import LevelSummary, TargetInfo
from ._soak import SoakVerdict
from ._sweep import SweepResult

# --- sharded runs -----------------------------------------------------------------------------


class ShardInfo(_Model):
    """Which shards of a sharded run failed or never reported (set only when some did)."""

    count: Annotated[int, Field(ge=2)]
    failed: dict[int, str] = Field(description="Shard index -> why it failed.")
    missing: tuple[int, ...] = Field(description="Shards whose statistics are not included.")


# --- the run ----------------------------------------------------------------------------------


class RunSummary(_Model):
    """A run's summary: its levels, and a sweep's table or a soak's verdict, and the verdict.

    ``passed`` is what the CLI's exit code and the completion event report: the SLO held, a
    sweep found a level to recommend (it is there to find where the SLO breaks), or the soak
    passed. An interrupted run never passes: its evidence is incomplete.

    A verdict its own numbers contradict is refused, not recomputed. Every link is checked:
    ``passed`` against the SLO rows, sweep recommendation or soak checks; each row's status
    against its margin, its margin against threshold and actual, its actual against the
    level's percentiles and counts; a sweep's table against its levels. Refusing rather than
    recomputing keeps one judge: the prober, with the SLO and soak settings of the run, decides
    a verdict; a reader (``report``, the alerter, the tagger) has neither, and a second judge
    in the readers could drift from the first. A tampered or damaged summary.json is then an
    error naming the field, never a corrected verdict that hides the edit; ``report`` on a run
    folder without a summary rebuilds one from requests.csv through the prober's judge.
    """

    # Required, so a summary.json from before the schema says so first.
    schema_version: Literal[1]
    run_id: str
    kind: ProbeKind
    target: TargetInfo
    interrupted: Verdict = Field(
        description="Cancelled, or shards failed: the evidence is partial."
    )
    end_reason: str | None = Field(
        default=None,
        description="Why the prober ended the run early itself, in one line (its stop rule: the "
        "endpoint could not be reached); None when it ran to its end or was cancelled.",
    )
    passed: Verdict
    spec: ProbeSpec
    levels: tuple[LevelSummary, ...] = Field(
        min_length=1, description="One per concurrency level, in ascending order."
    )
    sweep: SweepResult | None = None
    soak: SoakVerdict | None = None
    shards: ShardInfo | None = None

    @field_validator("run_id")
    @classmethod
    def _safe_run_id(cls, value: str) -> str:
        return check_run_id(value)

    @model_validator(mode="after")
    def _verdict_matches_evidence(self) -> Self:
        if self.spec.run_id != self.run_id or self.spec.kind != self.kind:
            raise ValueError("spec names another run or kind than the summary")
        concurrencies = [level.concurrency for level in self.levels]
        if concurrencies != sorted(set(concurrencies)):
            raise ValueError(f"levels must be distinct and ascending, got {concurrencies}")
        if (self.kind == "sweep") != (self.sweep is not None):
            raise ValueError("a sweep, and only a sweep, has a sweep result")
        if (self.kind == "soak") != (self.soak is not None):
            raise ValueError("a soak, and only a soak, has a soak verdict")
        if self.kind != "sweep" and len(self.levels) != 1:
            raise ValueError(f"a {self.kind} has one level, got {len(self.levels)}")
        if self.end_reason is not None and not self.interrupted:
            raise ValueError("a run that ended early (end_reason) is interrupted")
        if self.shards is not None and not self.interrupted:
            raise ValueError("a run with failed or missing shards is interrupted")
        self._parts_match_levels()
        if self.passed != (not self.interrupted and self._evidence_passes()):
            raise ValueError(f"passed={self.passed} contradicts the run's own evidence")
        return self

    def _parts_match_levels(self) -> None:
        if self.sweep is not None:
            table = [(row.concurrency, row.status) for row in self.sweep.table]
            levels = [
                (level.concurrency, "PASS" if level.slo.passed else "FAIL") for level in self.levels
            ]
            if table != levels:
                raise ValueError(f"the sweep table {table} contradicts the levels {levels}")
        if self.soak is not None and self.soak.passed:
            # A soak passes on zero failures and every window under its P95 threshold: a
            # passing verdict over numbers that say otherwise was not written by the prober.
            level = self.levels[0]
            over = [
                w.index
                for w in self.soak.windows
                if w.p95_ms is not None and w.p95_ms >= self.soak.p95_threshold_ms
            ]
            if level.failed or not level.requests or over:
                raise ValueError(
                    f"a passing soak with {level.failed} failures of {level.requests} "
                    f"and windows over its P95 threshold: {over}"
                )

    def _evidence_passes(self) -> bool:
        if self.sweep is not None:
            return self.sweep.recommendation is not None
        if self.soak is not None:
            return self.soak.passed
        return self.levels[0].slo.passed

    @property
    def level(self) -> LevelSummary:
        """The headline level: the only one, or a sweep's recommended (else highest) level."""
        if self.sweep is not None and self.sweep.recommendation is not None:
            wanted = self.sweep.recommendation.concurrency
            return next(level for level in self.levels if level.concurrency == wanted)
        return self.levels[-1]

    def at(self, concurrency: int) -> LevelSummary:
        """The summary of one level; KeyError when the run had no such level."""
        for level in self.levels:
            if level.concurrency == concurrency:
                return level
        raise KeyError(f"run {self.run_id} has no concurrency level {concurrency}")


# --- reading ----------------------------------------------------------------------------------


class SummaryError(ValueError):
    """A summary that does not validate; the message names the file and each bad field."""


def parse_summary(text: str | bytes, *, source: str = "summary") -> RunSummary:
    """Validate summary JSON into a RunSummary; SummaryError naming each bad field."""
    try:
        # strict: JSON carries types, so "no" is not a verdict and "3000" not a latency.
        return RunSummary.model_validate_json(text, strict=True)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(_shown(part) for part in error['loc']) or '<summary>'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)
        )
        raise SummaryError(f"{source} is not a valid RunSummary: {problems}") from None


def _shown(part: str | int) -> str:
    # A key from the file itself (an unknown field) may be anything, a line break included.
    text = str(part)
    return text if text.isprintable() and len(text) <= 60 else repr(text[:60])


def read_summary(path: Path) -> RunSummary:
    """Read and validate a summary.json; SummaryError (a ValueError) naming the bad field.

    An unreadable file raises OSError as usual.
    """
    return parse_summary(path.read_bytes(), source=str(path))
