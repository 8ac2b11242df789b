"""The wiring's pure parts on real Redis: ALERTS as Prometheus (and podpulse up) read it, the
step locks, and the bus events."""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, generate_latest

from podpulse.alerter._notify._receivers import AlertmanagerReceiver, WebhookReceiver
from podpulse.alerter._pipeline import Alerter
from podpulse.alerter._rules._state import AlertsCollector, AlertState, StateStore
from podpulse.alerter._rules._yaml import default_rules
from podpulse.alerter._windows._contract import Observation, SeriesKey
from podpulse.alerter.cli import _status_lines
from podpulse.alerter.settings import AlerterSettings
from podpulse.common.events import ProbeRunCompleted
from podpulse.stack._status import firing_alerts

sys.path.insert(0, str(Path(__file__).parents[3] / "libs/common/tests"))
import summary_examples


def _alerter(client, prefix: str, http: httpx.AsyncClient) -> Alerter:
    settings = AlerterSettings.model_validate(
        {"state_prefix": prefix, "redis_prefix": prefix + "w:"}
    )
    hook = WebhookReceiver(http, lambda: "http://127.0.0.1:9/hook")
    return Alerter.build(client, settings, default_rules(), [hook])


def test_alerts_series_is_prometheus_shaped_and_read_by_the_stack(redis_client, key_prefix) -> None:
    """ALERTS has one sample per pending or firing alert with its labels and alertstate;
    resolved and no-data ones are absent; podpulse up's parser finds the firing one."""
    states = StateStore(redis_client, key_prefix)
    states.save({
        ("ExecP95High", SeriesKey("ep1", "m")): AlertState(phase="firing", active_at=1.0),
        ("DelayP50High", SeriesKey("ep1", "m")): AlertState(phase="pending", active_at=2.0),
        ("TotalP95High", SeriesKey("ep2")): AlertState(phase="resolved", resolved_at=3.0),
        ("FailRateHigh", SeriesKey("ep2")): AlertState(phase="no_data"),
    })  # fmt: skip
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AlertsCollector(states, default_rules()))
    text = generate_latest(registry).decode()
    samples = sorted(line for line in text.splitlines() if line.startswith("ALERTS{"))
    assert samples == [
        'ALERTS{alertname="DelayP50High",alertstate="pending",endpoint="ep1",model="m",'
        'severity="warning"} 1.0',
        'ALERTS{alertname="ExecP95High",alertstate="firing",endpoint="ep1",model="m",'
        'severity="critical"} 1.0',
    ]
    firing = firing_alerts(text)
    assert [(a.name, a.severity) for a in firing] == [("ExecP95High", "critical")]


async def test_a_held_lock_skips_the_step_instead_of_doubling_it(redis_client, key_prefix) -> None:
    """While another process holds the evaluate or deliver lock, the step returns None."""
    async with httpx.AsyncClient() as http:
        alerter = _alerter(redis_client, key_prefix, http)
        assert alerter.evaluate(1_700_000_000.0) == 0
        held = redis_client.lock(f"{key_prefix}lock:evaluate", timeout=10)
        assert held.acquire(blocking=False)
        assert alerter.evaluate(1_700_000_000.0) is None
        held.release()
        held = redis_client.lock(f"{key_prefix}lock:deliver", timeout=10)
        assert held.acquire(blocking=False)
        assert await alerter.deliver(1_700_000_000.0) is None
        held.release()
        assert await alerter.deliver(1_700_000_000.0) == 0


async def test_bus_events_failing_run_notified_passing_and_malformed_not(
    redis_client, key_prefix
) -> None:
    """A failing ProbeRunCompleted is queued once per receiver; a passing one is not; a
    malformed payload is dropped with a reason, never raised."""
    async with httpx.AsyncClient() as http:
        alerter = _alerter(redis_client, key_prefix, http)
        outbox = alerter.notifier.outbox
        passing = ProbeRunCompleted.of(summary_examples.load_summary(), results_path="r/1")
        assert alerter.on_event(passing.model_dump(mode="json"), 1.0) == "passed"
        assert outbox.pending() == 0
        failing = ProbeRunCompleted.of(
            summary_examples.load_summary(total_p95=9000.0), results_path="r/2"
        )
        assert alerter.on_event(failing.model_dump(mode="json"), 1.0) == "notified"
        assert outbox.pending() == 1
        # The same event redelivered is notified again (its idempotency key is the same); a
        # second failed run while the first one's alert fires renews it, unsent.
        assert alerter.on_event(failing.model_dump(mode="json"), 1.0) == "notified"
        again = ProbeRunCompleted.of(
            summary_examples.load_summary("run-2", total_p95=9000.0), results_path="r/3"
        )
        assert alerter.on_event(again.model_dump(mode="json"), 1.0) == "renewed"
        assert outbox.pending() == 1
        assert alerter.on_event({"type": "probe_run_completed"}, 1.0) == "invalid"
        assert alerter.on_event({"type": "nonsense"}, 1.0) == "invalid"
        assert outbox.pending() == 1


async def test_an_event_older_than_its_max_age_is_not_news(redis_client, key_prefix) -> None:
    """A release or failed run read an hour after it happened (queued across a restart, or
    published by another stack on a shared Redis) is logged, not notified, not shown."""
    async with httpx.AsyncClient() as http:
        alerter = _alerter(redis_client, key_prefix, http)
        failing = ProbeRunCompleted.of(
            summary_examples.load_summary(total_p95=9000.0), results_path="r/old"
        )
        an_hour_later = failing.occurred_at.timestamp() + 3600
        assert alerter.on_event(failing.model_dump(mode="json"), an_hour_later) == "stale"
        assert alerter.notifier.outbox.pending() == 0
        assert alerter.event_alerts.firing(an_hour_later) == []
        in_time = failing.occurred_at.timestamp() + 60
        assert alerter.on_event(failing.model_dump(mode="json"), in_time) == "notified"


async def test_events_from_before_the_stack_or_of_another_endpoint_are_not_news(
    redis_client, key_prefix
) -> None:
    """With ALERTER_EVENTS_SINCE and ALERTER_ENDPOINT_IDS (podpulse up sets both), a failed
    run from before the stack started, or of an endpoint another deployment probes on the
    same Redis, is logged, not notified and not shown; this endpoint's new one is."""
    failing = ProbeRunCompleted.of(
        summary_examples.load_summary(total_p95=9000.0), results_path="r/x"
    )
    at = failing.occurred_at.timestamp()
    ours = failing.endpoint_id
    async with httpx.AsyncClient() as http:
        alerter = _alerter(redis_client, key_prefix, http)
        alerter.settings = alerter.settings.model_copy(
            update={"events_since": at + 1, "endpoint_ids": (ours,)}
        )
        assert alerter.on_event(failing.model_dump(mode="json"), at + 5) == "stale"
        summary = summary_examples.load_summary("theirs", total_p95=9000.0)
        summary = summary.model_copy(
            update={"target": summary.target.model_copy(update={"endpoint_id": "someone-elses"})}
        )
        theirs = ProbeRunCompleted.of(summary, results_path="r/y")
        alerter.settings = alerter.settings.model_copy(update={"events_since": at})
        assert alerter.on_event(theirs.model_dump(mode="json"), at + 5) == "foreign"
        assert alerter.notifier.outbox.pending() == 0
        assert alerter.event_alerts.firing(at + 5) == []
        assert alerter.on_event(failing.model_dump(mode="json"), at + 5) == "notified"


def test_endpoint_ids_are_read_comma_separated(monkeypatch) -> None:
    monkeypatch.setenv("ALERTER_ENDPOINT_IDS", " ep-a, ep-b ,")
    assert AlerterSettings().endpoint_ids == ("ep-a", "ep-b")
    monkeypatch.setenv("ALERTER_ENDPOINT_IDS", "")
    assert AlerterSettings().endpoint_ids == ()


def test_status_numbers_are_written_out_not_in_scientific_notation() -> None:
    """`alerts status` shows 11020 and 0.0123 as such (it showed 1.102e+04)."""
    states = {
        ("TotalP95High", SeriesKey("ep1")): AlertState(phase="firing", value=11020.4, samples=9),
        ("FailRateHigh", SeriesKey("ep1")): AlertState(phase="firing", value=0.0123, samples=40),
    }
    text = "\n".join(_status_lines(default_rules(), states, 100.0))
    assert "11020" in text
    assert "0.0123" in text
    assert "e+" not in text
    assert "e-" not in text


async def test_a_failed_run_fires_on_alerts_and_status_until_a_later_run_passes(
    redis_client, key_prefix
) -> None:
    """A failed probe run's alert shows in ALERTS (so on podpulse up's view) and in
    `alerts status` as firing; a pass from before it leaves it, a later pass ends it."""
    async with httpx.AsyncClient() as http:
        alerter = _alerter(redis_client, key_prefix, http)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(AlertsCollector(alerter.states, default_rules(), alerter.event_alerts))
        failing = ProbeRunCompleted.of(
            summary_examples.load_summary("run-9", total_p95=9000.0), results_path="r/9"
        )
        at = failing.occurred_at
        assert alerter.on_event(failing.model_dump(mode="json"), at.timestamp()) == "notified"
        firing = firing_alerts(generate_latest(registry).decode())
        assert [(a.name, a.severity) for a in firing] == [("ProbeRunFailedSlo", "critical")]
        lines = _status_lines(
            default_rules(), {}, at.timestamp() + 5, alerter.event_alerts.firing(at.timestamp())
        )
        assert lines[-1].startswith("FIRING CRITICAL ProbeRunFailedSlo on ")
        assert "load run run-9 failed its SLO since" in lines[-1]
        earlier = ProbeRunCompleted.of(summary_examples.load_summary("run-8"), results_path="r/8")
        earlier = earlier.model_copy(update={"occurred_at": at - timedelta(seconds=30)})
        assert alerter.on_event(earlier.model_dump(mode="json"), at.timestamp()) == "passed"
        assert firing_alerts(generate_latest(registry).decode()) != []
        later = ProbeRunCompleted.of(summary_examples.load_summary("run-10"), results_path="r/10")
        later = later.model_copy(update={"occurred_at": at + timedelta(seconds=30)})
        assert alerter.on_event(later.model_dump(mode="json"), at.timestamp()) == "passed"
        assert firing_alerts(generate_latest(registry).decode()) == []


async def test_an_evaluation_a_little_early_counts_at_its_slot(redis_client, key_prefix) -> None:
    """Ticks 2 s apart that run a few ms early still meet `for: 4s` on the third tick: each
    evaluation counts at its slot of evaluation_interval, as Prometheus's rule groups do."""
    t0 = float(int(time.time()) // 2 * 2)  # a slot; the windows keep only recent spans
    async with httpx.AsyncClient() as http:
        alerter = _alerter(redis_client, key_prefix, http)
        for i in range(30):  # a breach of ExecP95High (exec P95 > 5000 ms) in its 1 m window
            alerter.store.add(
                Observation(SeriesKey("ep1"), at=t0 - 30 + i, failed=False, exec_ms=6000.0)
            )
        alerter.store.flush()
        for tick in (t0 + 0.004, t0 + 2 - 0.006, t0 + 4 - 0.008):
            alerter.evaluate(tick)
        phase = StateStore(redis_client, key_prefix).load()[("ExecP95High", SeriesKey("ep1"))].phase
    assert phase == "firing"


async def test_an_alertmanager_only_alerter_pushes_firing_alerts_alone(
    redis_client, key_prefix
) -> None:
    """With Alertmanager the only receiver, only the pusher's alerts reach it (a group flush
    sent there too carried no endsAt, and Alertmanager resolved the alert at once); and an
    alert's startsAt is when it fired, as Prometheus sends it, not when it went pending."""
    t0 = float(int(time.time()) // 2 * 2)
    settings = AlerterSettings.model_validate(
        {"state_prefix": key_prefix, "redis_prefix": key_prefix + "w:"}
    )
    async with httpx.AsyncClient() as http:
        am = AlertmanagerReceiver(http, lambda: "http://127.0.0.1:9")
        alerter = Alerter.build(redis_client, settings, default_rules(), [am])
        for i in range(30):
            alerter.store.add(
                Observation(SeriesKey("ep1"), at=t0 - 30 + i, failed=False, exec_ms=6000.0)
            )
        alerter.store.flush()
        for tick in (t0, t0 + 2, t0 + 4, t0 + 6, t0 + 8):  # pending at t0, fires at t0 + 4
            alerter.evaluate(tick)
        firing = alerter.evaluator.evaluate(t0 + 8).alerts
    assert [alert.starts_at for alert in firing] == [t0 + 4]
    assert alerter.notifier.outbox.pending() == 1  # the one push; no group flush
