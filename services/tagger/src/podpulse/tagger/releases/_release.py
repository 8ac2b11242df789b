"""A production release: the gate, an annotated tag, a DEPLOYMENT.md record, in that order.

:func:`release` is the one core that ``podpulse release`` and the tagger's Celery task call.
It refuses a detached HEAD, a dirty tree (the record file, the results folder and podpulse's
own ``.podpulse/`` folders aside) and a tag that points at another commit; then the gate
(podpulse.tagger.releases._gate) must pass, or ``--force`` with a reason is recorded instead.
Everything after the checks runs under a lock in the repository's git folder, so two releases
never interleave: the second waits, then finds the first one's tag and record and does nothing.

Each step looks first at what is already there, which makes the whole idempotent and
repairable: the same commit and tag again is a no-op; a tag without its record (a crash
between the two) gets its record on the next run, with no second tag; a record without its
tag gets the tag back. ``dry_run`` takes no lock and writes nothing: it returns what would be
done.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from podpulse.common.events import ReleaseRecorded
from podpulse.common.settings import DEFAULT_RUNPOD_ENDPOINT_BASE_URL
from podpulse.common.summary import RunSummary

from .._deployment_file import EndpointSpec
from ..settings import ReleaseSettings
from ._gate import find_latest_soak, judge, read_evidence
from ._git import Repository
from ._records import (
    DeployedEndpoint,
    Evidence,
    ReleaseRecord,
    Trigger,
    append_record,
    describe_evidence,
    read_records,
)

__all__ = [
    "LOCK_FILE",
    "STATE_FOLDER",
    "ReleaseOutcome",
    "ReleaseRefused",
    "ReleaseRequest",
    "ReleaseUsageError",
    "next_tag",
    "release",
    "release_event",
    "tag_message",
]

LOCK_FILE = "podpulse-release.lock"
# podpulse's own state beside the user's files (the endpoint history, the stack's logs): it is
# written by podpulse after the fact, like DEPLOYMENT.md, so it never makes the tree dirty.
STATE_FOLDER = ".podpulse"
_LOCK_POLL_S = 0.05
_REASON = re.compile(r"^[^\x00-\x1f\x7f\u2028\u2029]{1,500}$")

Action = Literal["released", "repaired", "already_released", "dry_run"]


class ReleaseRefused(RuntimeError):
    """The gate or the repository's state forbids the release; the message is the reason."""


class ReleaseUsageError(ValueError):
    """A bad request (tag name, reason, evidence run); the message names what is wrong."""


@dataclass(frozen=True)
class ReleaseRequest:
    """What was asked for. *evidence* is a summary in hand (the event's); else the results."""

    tag: str | None = None
    dry_run: bool = False
    force_reason: str | None = None
    push_remote: str | None = None
    evidence_run_id: str | None = None
    evidence: RunSummary | None = None
    trigger: Trigger = "cli"
    # Where the endpoint's job API is (RUNPOD_ENDPOINT_BASE_URL): the evidence must have
    # probed it there.
    endpoint_api: str = DEFAULT_RUNPOD_ENDPOINT_BASE_URL


@dataclass(frozen=True)
class ReleaseOutcome:
    """What a release did (or, dry, would do), and the record it rests on."""

    action: Action
    record: ReleaseRecord
    message: str = field(repr=False)
    steps: tuple[str, ...]
    tag_created: bool = False
    record_written: bool = False
    pushed: bool = False
    warnings: tuple[str, ...] = ()


def release(
    repo: Repository,
    endpoint: EndpointSpec,
    settings: ReleaseSettings,
    request: ReleaseRequest,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ReleaseOutcome:
    """Release HEAD of *repo* as *request* asks; ReleaseRefused or ReleaseUsageError if not.

    A GitError or OSError from a step that was started propagates; rerunning repairs.
    """
    if request.force_reason is not None and not _REASON.match(request.force_reason):
        raise ReleaseUsageError("--reason must be one line of 1-500 printable characters")
    if request.tag is not None and not repo.is_valid_tag_name(request.tag):
        raise ReleaseUsageError(f"--tag {request.tag!r} is not a valid git tag name")
    lock = nullcontext() if request.dry_run else _locked(repo, settings.lock_timeout_s)
    with lock:
        return _release(repo, endpoint, settings, request, now())


def _release(
    repo: Repository,
    endpoint: EndpointSpec,
    settings: ReleaseSettings,
    request: ReleaseRequest,
    now: datetime,
) -> ReleaseOutcome:
    if repo.branch() is None:
        raise ReleaseRefused("HEAD is detached: check out the branch to release")
    records_path = repo.root / settings.records_file
    dirty = repo.changes(
        ignoring=(records_path, repo.root / settings.results_dir),
        ignoring_folders=(STATE_FOLDER,),
    )
    if dirty:
        shown = ", ".join(dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
        raise ReleaseRefused(f"the work tree has uncommitted changes: {shown}")
    commit = repo.head()
    records = read_records(records_path)
    tag = request.tag or _tag_for(repo, records, commit, settings.tag_suffix)

    recorded = next((r for r in records if r.tag == tag), None)
    if recorded is not None and recorded.commit != commit:
        raise ReleaseRefused(
            f"tag {tag} is already recorded for commit {recorded.commit[:12]} "
            f"in {settings.records_file}"
        )
    earlier = next((r for r in records if r.commit == commit and r.tag != tag), None)
    if earlier is not None:
        raise ReleaseRefused(f"commit {commit[:12]} was already released as {earlier.tag}")
    tagged = repo.tag_commit(tag)
    if tagged is not None and tagged != commit:
        raise ReleaseRefused(f"tag {tag} already points at another commit, {tagged[:12]}")
    if tagged is not None and not repo.tag_is_annotated(tag):
        raise ReleaseRefused(f"tag {tag} exists as a lightweight tag; releases are annotated")

    warnings: tuple[str, ...] = ()
    if recorded is not None:
        record = recorded  # already recorded: the record is the evidence, no second gate
    else:
        record, warnings = _gated_record(
            repo, endpoint, settings, request, tag=tag, commit=commit, now=now
        )
    message = tag_message(record)
    steps = _steps(record, settings, request, tag_exists=tagged is not None, recorded=recorded)
    if request.dry_run:
        return ReleaseOutcome("dry_run", record, message, steps, warnings=warnings)

    tag_created = record_written = False
    if tagged is None:
        repo.create_tag(tag, commit, message)
        tag_created = True
    if recorded is None:
        append_record(records_path, record)
        record_written = True
    pushed = False
    if request.push_remote is not None:
        repo.push_tag(request.push_remote, tag)
        pushed = True
    action: Action = (
        "released"
        if tag_created and record_written
        else "repaired"
        if tag_created or record_written
        else "already_released"
    )
    return ReleaseOutcome(
        action, record, message, steps, tag_created, record_written, pushed, warnings
    )


def _gated_record(
    repo: Repository,
    endpoint: EndpointSpec,
    settings: ReleaseSettings,
    request: ReleaseRequest,
    *,
    tag: str,
    commit: str,
    now: datetime,
) -> tuple[ReleaseRecord, tuple[str, ...]]:
    """The record of a new release, once the gate passed or was forced."""
    results_dir = repo.root / settings.results_dir
    warnings: tuple[str, ...] = ()
    if request.evidence is not None:
        summary: RunSummary | None = request.evidence
    elif request.evidence_run_id is not None:
        try:
            summary = read_evidence(results_dir, request.evidence_run_id)
        except ValueError as exc:
            raise ReleaseUsageError(str(exc)) from None
    else:
        scan = find_latest_soak(results_dir, endpoint.id)
        summary = scan.latest
        if scan.unreadable:
            warnings = (f"skipped runs whose summary.json is unreadable: {scan.unreadable}",)
    problem = judge(
        summary,
        endpoint_id=endpoint.id,
        committed_at=repo.committed_at(commit),
        now=now,
        max_age_s=settings.max_evidence_age_s,
        endpoint_api=request.endpoint_api,
    )
    if problem is not None and request.force_reason is None:
        raise ReleaseRefused(problem)
    if problem is None and request.force_reason is not None:
        warnings += ("the gate passed: --force was not needed, and its reason is not recorded",)
    record = ReleaseRecord(
        tag=tag,
        commit=commit,
        recorded_at=now,
        endpoint=DeployedEndpoint(
            id=endpoint.id,
            image=endpoint.image,
            model=endpoint.model,
            model_size_gb=endpoint.model_size_gb,
            gpu=endpoint.gpu,
            config=endpoint.config(),
        ),
        evidence=None if summary is None else Evidence.of(summary),
        # A gate that passed needs no override: the reason is recorded only when it was used.
        force_reason=request.force_reason if problem is not None else None,
        trigger=request.trigger,
    )
    return record, warnings


def tag_message(record: ReleaseRecord) -> str:
    """The annotated tag's message: exec and total P50 first, then the evidence run."""
    evidence = record.evidence
    if evidence is not None and evidence.passed and record.force_reason is None:
        headline = (
            f"{record.tag}: exec P50 {_ms(evidence.exec_p50_ms)}, "
            f"total P50 {_ms(evidence.total_p50_ms)} (soak {evidence.run_id})"
        )
    else:
        headline = f"{record.tag}: forced release, without a passing soak"
    endpoint = record.endpoint
    lines = [
        headline,
        "",
        f"Evidence: {describe_evidence(evidence)}",
        f"Endpoint: {endpoint.id}; image {endpoint.image}",
        f"Model: {endpoint.model} ({endpoint.model_size_gb:g} GB) on {endpoint.gpu}",
    ]
    if record.force_reason is not None:
        lines.append(f"Forced: {record.force_reason}")
    lines.append(f"Recorded by podpulse release (trigger: {record.trigger})")
    return "\n".join(lines) + "\n"


def release_event(record: ReleaseRecord) -> ReleaseRecorded:
    """The release-recorded event of *record*."""
    endpoint = record.endpoint
    return ReleaseRecorded(
        tag=record.tag,
        commit=record.commit,
        endpoint_id=endpoint.id,
        image=endpoint.image,
        model=endpoint.model,
        gpu=endpoint.gpu,
        recorded_at=record.recorded_at,
    )


def next_tag(existing: list[str], suffix: str) -> str:
    """The tag after the highest ``v<major>.<minor><suffix>`` in *existing*: its minor + 1."""
    versions = [version for version in map(_version_key(suffix), existing) if version >= (0, 0)]
    if not versions:
        return f"v1.0{suffix}"
    major, minor = max(versions)
    return f"v{major}.{minor + 1}{suffix}"


def _tag_for(repo: Repository, records: list[ReleaseRecord], commit: str, suffix: str) -> str:
    # A commit keeps the tag it was given: recorded, or tagged by a run that crashed before
    # writing its record. Only a commit never released gets the next one.
    for record in reversed(records):
        if record.commit == commit:
            return record.tag
    glob = f"v*{suffix}"
    tagged = repo.tags_at(commit, glob)
    if tagged:
        return max(tagged, key=_version_key(suffix))
    return next_tag(repo.tags(glob) + [r.tag for r in records], suffix)


def _version_key(suffix: str) -> Callable[[str], tuple[int, int]]:
    pattern = re.compile(rf"^v(\d+)\.(\d+){re.escape(suffix)}$")

    def key(tag: str) -> tuple[int, int]:
        match = pattern.match(tag)
        return (int(match.group(1)), int(match.group(2))) if match else (-1, -1)

    return key


def _steps(
    record: ReleaseRecord,
    settings: ReleaseSettings,
    request: ReleaseRequest,
    *,
    tag_exists: bool,
    recorded: ReleaseRecord | None,
) -> tuple[str, ...]:
    short = record.commit[:12]
    steps = [
        f"tag {record.tag} exists on {short}"
        if tag_exists
        else f"create annotated tag {record.tag} on {short}",
        f"{settings.records_file} already records {record.tag}"
        if recorded is not None
        else f"append the record of {record.tag} to {settings.records_file}",
    ]
    if request.push_remote is not None:
        steps.append(f"push {record.tag} to {request.push_remote}")
    if recorded is None:
        steps.append("publish release_recorded")
    return tuple(steps)


@contextmanager
def _locked(repo: Repository, timeout_s: float) -> Iterator[None]:
    """Hold the repository's release lock; ReleaseRefused after *timeout_s* of waiting.

    An flock: the kernel drops it when the holder dies, so a crashed release never leaves
    the repository locked.
    """
    path = repo.git_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ReleaseRefused(
                        f"another release held {Path(path).name} for over {timeout_s:g} s "
                        "(TAGGER_RELEASE_LOCK_TIMEOUT_S)"
                    ) from None
                time.sleep(_LOCK_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"
