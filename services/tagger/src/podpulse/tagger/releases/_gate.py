"""The release gate: "production-ready" means a passing soak exists for this commit.

The evidence is the latest soak of the deployment's endpoint in the prober's results folder
(or the run ``--evidence`` names, or the summary a soak-completed event carries). It must be
a soak of the hosted endpoint podpulse.toml names, it must have passed, and it must be fresh:
ended within the freshness window and after the released commit was made (a soak that
finished before the commit existed cannot have tested it). The gate only reads verdicts: the
prober judged the soak, and ``read_summary`` refuses a verdict its numbers contradict.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from podpulse.common.summary import RunSummary, SummaryError, check_run_id, read_summary

__all__ = ["EvidenceError", "Scan", "find_latest_soak", "judge", "read_evidence"]

_SUMMARY_FILE = "summary.json"


class EvidenceError(ValueError):
    """The run ``--evidence`` names cannot be read as a summary; the message says why."""


@dataclass(frozen=True)
class Scan:
    """The latest soak of an endpoint, and the summaries that could not be read on the way."""

    latest: RunSummary | None
    unreadable: tuple[str, ...]


def read_evidence(results_dir: Path, run_id: str) -> RunSummary:
    """The summary of run *run_id*; EvidenceError when it is missing or does not validate."""
    try:
        check_run_id(run_id)
    except ValueError as exc:
        raise EvidenceError(f"--evidence: {exc}") from None
    path = results_dir / run_id / _SUMMARY_FILE
    try:
        return read_summary(path)
    except FileNotFoundError:
        raise EvidenceError(f"--evidence: run {run_id} has no {path}") from None
    except OSError as exc:
        raise EvidenceError(f"--evidence: {path} cannot be read ({exc.strerror})") from None
    except SummaryError as exc:
        raise EvidenceError(f"--evidence: {exc}") from None


def find_latest_soak(results_dir: Path, endpoint_id: str) -> Scan:
    """The soak of *endpoint_id* that ended last, among every run under *results_dir*.

    A run still going has no summary yet and is not considered; a summary that cannot be read
    is skipped and named in ``unreadable`` (the caller shows it), so one damaged folder does
    not block every release.
    """
    latest: RunSummary | None = None
    unreadable: list[str] = []
    if not results_dir.is_dir():
        return Scan(None, ())
    for path in sorted(results_dir.glob(f"*/{_SUMMARY_FILE}")):
        try:
            summary = read_summary(path)
        except (OSError, SummaryError):
            unreadable.append(path.parent.name)
            continue
        if summary.kind != "soak" or summary.target.endpoint_id != endpoint_id:
            continue
        ended = summary.level.ended_at
        if ended is None:
            continue
        if latest is None or ended > _ended(latest):
            latest = summary
    return Scan(latest, tuple(unreadable))


# A gate is a list of reasons to refuse, checked in order: one return each.
def judge(  # noqa: PLR0911
    summary: RunSummary | None,
    *,
    endpoint_id: str,
    committed_at: datetime,
    now: datetime,
    max_age_s: float,
    endpoint_api: str,
) -> str | None:
    """Why *summary* cannot carry a release of a commit made at *committed_at*; None if it can.

    *endpoint_api* is the job API the deployment's endpoint is reached at (the tagger's
    RUNPOD_ENDPOINT_BASE_URL): a soak sent anywhere else, a twin posing as the hosted endpoint
    included, did not test it.
    """
    if summary is None:
        return (
            f"no soak of endpoint {endpoint_id} in the results: run `podpulse soak` against it "
            "first (or --force --reason)"
        )
    run = summary.run_id
    if summary.kind != "soak":
        return f"run {run} is a {summary.kind}, not a soak"
    if summary.target.endpoint_id != endpoint_id:
        return f"soak {run} probed endpoint {summary.target.endpoint_id}, not {endpoint_id}"
    if summary.target.kind != "hosted":
        return f"soak {run} probed a local twin, not the hosted endpoint"
    if summary.target.base_url.rstrip("/") != endpoint_api.rstrip("/"):
        return (
            f"soak {run} probed the API at {summary.target.base_url}, not the endpoint's "
            f"{endpoint_api} (RUNPOD_ENDPOINT_BASE_URL)"
        )
    if not summary.passed:
        return f"the latest soak {run} did not pass: {_why_failed(summary)}"
    ended = summary.level.ended_at
    if ended is None:
        return f"soak {run} records no end time"
    if ended < committed_at:
        return (
            f"soak {run} ended {_iso(ended)}, before this commit was made ({_iso(committed_at)}): "
            "soak the deployed commit"
        )
    age = now - ended
    if age > timedelta(seconds=max_age_s):
        return (
            f"soak {run} ended {_hours(age.total_seconds())} ago, outside the freshness window "
            f"of {_hours(max_age_s)} (TAGGER_RELEASE_MAX_EVIDENCE_AGE_S)"
        )
    return None


def _why_failed(summary: RunSummary) -> str:
    if summary.interrupted:
        return summary.end_reason or "it was interrupted"
    if summary.soak is not None:
        failed = [f"{c.check} ({c.detail})" for c in summary.soak.checks if not c.passed]
        if failed:
            return "; ".join(failed)
    return "its SLO failed"


def _ended(summary: RunSummary) -> datetime:
    ended = summary.level.ended_at
    assert ended is not None
    return ended


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"
