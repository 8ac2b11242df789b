"""Notifications that come from no rule: a failed probe run, a recorded release, a test.

Each is one alert in a notification of its own, under an idempotency key of its own: an
event's is derived from its id, so a re-delivered event repeats the same notification (and a
receiver that honours ``Idempotency-Key`` shows it once); ``podpulse alerts test``'s sample
has a new one every run.
"""

from __future__ import annotations

from podpulse.common.events import ProbeRunCompleted, ReleaseRecorded

from .._rules._alert import Alert
from ._dispatch import Notification, group_key, idempotency_key

__all__ = ["probe_run_notification", "release_announcement", "sample_notification"]


def _event_key(kind: str, event_id: str) -> tuple[str, str]:
    key = group_key({"event": kind})
    # One notification per event: its id is the sequence, so a re-delivered event repeats it.
    return key, f"{idempotency_key(key, 0)[:24]}-{event_id}"


def probe_run_notification(
    event: ProbeRunCompleted, *, external_url: str = ""
) -> Notification | None:
    """The notification of a probe run that failed its SLO (None for a run that passed)."""
    if event.slo_passed:
        return None
    at = event.occurred_at.timestamp()
    summary = event.summary
    labels = {
        "alertname": "ProbeRunFailedSlo",
        "severity": "critical",
        "endpoint": event.endpoint_id,
        "probe_kind": event.kind,
    }
    annotations = {
        "summary": f"{event.kind} run {event.run_id} failed its SLO on {event.endpoint_id}",
        "run_id": event.run_id,
        "results_path": event.results_path,
        "target_kind": event.target_kind,
    }
    if summary.end_reason:
        annotations["description"] = summary.end_reason
    group, key = _event_key("probe_run_completed", event.event_id)
    alert = Alert(labels=labels, annotations=annotations, starts_at=at,
                  generator_url=f"{external_url.rstrip('/')}/runs/{event.run_id}"
                  if external_url else "")  # fmt: skip
    return Notification(key=key, group_key=group, group_labels={"alertname": labels["alertname"]},
                        alerts=[alert], at=at)  # fmt: skip


def release_announcement(event: ReleaseRecorded) -> Notification:
    """The announcement of a recorded release: one informational, already-ended alert."""
    at = event.occurred_at.timestamp()
    labels = {
        "alertname": "ReleaseRecorded",
        "severity": "info",
        "endpoint": event.endpoint_id,
        "tag": event.tag,
    }
    annotations = {
        "summary": f"released {event.tag} ({event.commit[:12]}) to {event.endpoint_id}: "
        f"{event.model} on {event.gpu}",
        "image": event.image,
        "commit": event.commit,
        "recorded_at": event.recorded_at.isoformat(),
    }
    group, key = _event_key("release_recorded", event.event_id)
    alert = Alert(labels=labels, annotations=annotations, starts_at=at, ends_at=at)
    return Notification(
        key=key,
        kind="announcement",
        group_key=group,
        group_labels={"alertname": "ReleaseRecorded"},
        alerts=[alert],
        at=at,
        title=f"Release {event.tag} recorded",
    )


def sample_notification(now: float) -> Notification:
    """A firing test alert, marked as such, with a key of its own for every run."""
    labels = {"alertname": "PodpulseTest", "severity": "info", "endpoint": "test"}
    alert = Alert(
        labels=labels,
        annotations={"summary": "podpulse alerts test: a sample notification, not an incident"},
        starts_at=now,
    )
    key = group_key({"alertname": "PodpulseTest"})
    return Notification(
        key=f"test-{int(now * 1000)}",
        group_key=key,
        group_labels={"alertname": "PodpulseTest"},
        alerts=[alert],
        at=now,
        title="podpulse alerts test",
    )
