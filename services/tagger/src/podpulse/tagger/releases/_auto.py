"""Auto-release: a passing soak of the deployment's endpoint releases the commit it soaked.

The tagger's ``on_probe_run`` task hands every ProbeRunCompleted here. Only a passing soak of
the endpoint podpulse.toml names releases, and only with ``TAGGER_RELEASE_AUTO=true``; the
event's own summary is the evidence, so the gate judges exactly the run that completed. A
re-delivered event finds the release already there and does nothing (release is idempotent).
A refusal is logged, not raised: retrying would be refused the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from celery import Celery

from podpulse.common.events import ProbeRunCompleted
from podpulse.common.settings import DEFAULT_RUNPOD_ENDPOINT_BASE_URL

from .._deployment_file import DeploymentFileError, read_deployment_file
from ..settings import ReleaseSettings
from ._git import GitError, Repository
from ._publish import TASK_PUBLISH_DELAYS_S, publish_release
from ._records import RecordsError
from ._release import ReleaseRefused, ReleaseRequest, ReleaseUsageError, release

__all__ = ["AutoRelease", "on_probe_run_completed"]

_log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class AutoRelease:
    """What the task did with one event: its action, and why when it released nothing."""

    action: str
    reason: str = ""
    tag: str | None = None


# One return per reason to release nothing: each is its own outcome, in the order checked.
def on_probe_run_completed(  # noqa: PLR0911
    app: Celery,
    settings: ReleaseSettings,
    event: ProbeRunCompleted,
    *,
    endpoint_api: str = DEFAULT_RUNPOD_ENDPOINT_BASE_URL,
) -> AutoRelease:
    """Release for *event* when it is a passing soak of the deployment and auto is on."""
    run = event.run_id
    if event.kind != "soak":
        return AutoRelease("ignored", f"a {event.kind}, not a soak")
    if not settings.auto:
        return AutoRelease("ignored", "auto-release is off (TAGGER_RELEASE_AUTO)")
    if not event.slo_passed:
        _log.info("auto_release_skipped", run_id=run, reason="the soak did not pass")
        return AutoRelease("ignored", "the soak did not pass")
    try:
        repo = Repository.discover(settings.repo)
        deployment = read_deployment_file(repo.root / settings.deployment_file)
    except (GitError, DeploymentFileError) as exc:
        _log.error("auto_release_failed", run_id=run, reason=str(exc))
        return AutoRelease("failed", str(exc))
    if event.endpoint_id != deployment.endpoint.id:
        return AutoRelease("ignored", f"a soak of {event.endpoint_id}, not the deployment's")
    request = ReleaseRequest(
        evidence=event.summary,
        push_remote=settings.push_remote,
        trigger="auto",
        endpoint_api=endpoint_api,
    )
    try:
        outcome = release(repo, deployment.endpoint, settings, request)
    except (ReleaseRefused, ReleaseUsageError, RecordsError) as exc:
        _log.warning("auto_release_refused", run_id=run, reason=str(exc))
        return AutoRelease("refused", str(exc))
    except (GitError, OSError) as exc:
        _log.error("auto_release_failed", run_id=run, reason=str(exc))
        return AutoRelease("failed", str(exc))
    tag = outcome.record.tag
    published = None
    if outcome.record_written:
        published = publish_release(app, outcome.record, TASK_PUBLISH_DELAYS_S)
        if published is not None:
            _log.error("release_event_unpublished", tag=tag, reason=published)
    _log.info("auto_release", run_id=run, tag=tag, action=outcome.action)
    return AutoRelease(outcome.action, published or "", tag)
