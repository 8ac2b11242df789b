"""Notify: alerts in, notifications delivered to the receivers, as Alertmanager would.

A receiver is an integration that takes notifications (``_receivers``: Slack, a webhook,
Alertmanager). ``_notifier`` hands each evaluation's alerts to ``_dispatch`` (groups, their
timers, dedup; silences and inhibition from ``_silences``) and to Alertmanager, into the
``_outbox`` (at-least-once delivery, in Redis); ``_events`` makes the notifications that come
from no rule; ``_payloads`` renders what each receiver is sent.
"""
