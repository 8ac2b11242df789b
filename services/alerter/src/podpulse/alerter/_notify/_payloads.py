"""What each receiver is sent: Alertmanager's webhook v4, Slack blocks, Alertmanager's v2 API.

- Webhook: ``notify/webhook/webhook.go`` ``Message`` around ``template.Data``, field for
  field. As in Alertmanager, a firing alert's ``endsAt`` is Go's zero time (``types.Alerts``
  hides an end not yet reached). podpulse adds one top-level field, ``idempotencyKey`` (also
  the ``Idempotency-Key`` header); JSON decoders of the v4 payload ignore unknown fields.
- Alertmanager: ``api/v2/openapi.yaml`` ``postableAlerts``: labels, annotations, startsAt,
  endsAt, generatorURL.
- Slack: an incoming webhook's ``text`` (the notification fallback) and ``blocks``.
"""

from __future__ import annotations

from typing import Any

from .._rules._alert import GO_ZERO_TIME, Alert, common, rfc3339
from ._dispatch import Notification

__all__ = ["RECEIVER_NAME", "alertmanager_alerts", "slack_message", "webhook_message"]

# Alertmanager's Data.Receiver names the route's receiver; podpulse has one route.
RECEIVER_NAME = "podpulse"


def _alert_json(alert: Alert, at: float) -> dict[str, Any]:
    resolved = alert.resolved(at)
    return {
        "status": "resolved" if resolved else "firing",
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "startsAt": rfc3339(alert.starts_at),
        "endsAt": rfc3339(alert.ends_at) if resolved and alert.ends_at else GO_ZERO_TIME,
        "generatorURL": alert.generator_url,
        "fingerprint": alert.fingerprint,
    }


def webhook_message(notification: Notification, external_url: str) -> dict[str, Any]:
    """Alertmanager's webhook payload, version 4, for *notification*."""
    at = notification.at
    return {
        "receiver": RECEIVER_NAME,
        "status": notification.status(),
        "alerts": [_alert_json(a, at) for a in notification.alerts],
        "groupLabels": dict(notification.group_labels),
        "commonLabels": common(a.labels for a in notification.alerts),
        "commonAnnotations": common(a.annotations for a in notification.alerts),
        "externalURL": external_url,
        "version": "4",
        "groupKey": notification.group_key,
        "truncatedAlerts": 0,
        "idempotencyKey": notification.key,
    }


def alertmanager_alerts(alerts: list[Alert]) -> list[dict[str, Any]]:
    """``POST /api/v2/alerts`` body; the pusher has set every ``endsAt``."""
    body = []
    for alert in alerts:
        ends = alert.ends_at if alert.ends_at is not None else alert.starts_at
        item: dict[str, Any] = {
            "labels": dict(alert.labels),
            "annotations": dict(alert.annotations),
            "startsAt": rfc3339(alert.starts_at),
            "endsAt": rfc3339(ends),
        }
        if alert.generator_url:
            item["generatorURL"] = alert.generator_url
        body.append(item)
    return body


_ICONS = {"critical": ":rotating_light:", "warning": ":warning:", "info": ":information_source:"}


def slack_message(notification: Notification) -> dict[str, Any]:
    """A Slack incoming-webhook message: a text fallback and one section per alert."""
    at = notification.at
    status = notification.status()
    firing = sum(1 for a in notification.alerts if not a.resolved(at))
    if notification.kind == "announcement":
        headline = notification.title or "podpulse"
    else:
        names = ", ".join(f"{k}={v}" for k, v in sorted(notification.group_labels.items()))
        count = f"{firing} firing" if status == "firing" else "resolved"
        headline = f"[{status.upper()}] {names} ({count})"
    lines = []
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": headline[:150]}}
    ]
    for alert in notification.alerts[:45]:  # Slack takes at most 50 blocks
        state = alert.status(at)
        icon = (
            ":white_check_mark:"
            if state == "resolved"
            else _ICONS.get(alert.labels.get("severity", ""), ":bell:")
        )
        summary = alert.annotations.get("summary") or alert.labels.get("alertname", "alert")
        # The severity in words too: an icon alone does not survive a text-only client.
        severity = alert.labels.get("severity", "")
        shown = f" [{severity.upper()}]" if severity and state != "resolved" else ""
        line = f"{icon}{shown} *{alert.labels.get('alertname', '')}* {state}: {summary}"
        lines.append(line)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": line[:3000]}})
    blocks.append({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": f"podpulse · key {notification.key}"}],
    })  # fmt: skip
    text = headline + ("\n" + "\n".join(lines) if lines else "")
    return {"text": text[:3000], "blocks": blocks}
