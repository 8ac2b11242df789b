"""Incidents end to end on real Redis and a real loopback webhook, on a fake clock."""

from __future__ import annotations

import itertools

import httpx
import pytest
from alerter_helpers import FakeClock, pipeline, recorder, rules_yaml

from podpulse.alerter._notify._receivers import SlackReceiver, WebhookReceiver
from podpulse.alerter._notify._silences import Silence, parse_matcher

V4_KEYS = {
    "version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels",
    "commonLabels", "commonAnnotations", "externalURL", "alerts", "idempotencyKey",
}  # fmt: skip
ALERT_KEYS = {
    "status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint",
}  # fmt: skip


async def cycle(store, evaluator, notifier, clock, seconds, *, slow):
    """Feed 10 jobs a second (exec slow or fast) and evaluate every 2 s for *seconds*."""
    for _ in range(int(seconds)):
        store.feed("ep1", clock.now, 10, exec_ms=9000 if slow else 100, delay_ms=10)
        if int(clock.now) % 2 == 0:
            await notifier.tick(evaluator.evaluate(clock.now).alerts, clock.now)
        clock.now += 1


async def test_breach_fires_once_and_resolves_with_v4_payload(redis_client, key_prefix) -> None:
    """A breach fires after `for`, is delivered once as Alertmanager v4, and its end resolves."""
    clock = FakeClock()
    events: list = []
    with recorder() as rec:
        async with httpx.AsyncClient() as http:
            hook = WebhookReceiver(http, lambda: rec.url, external_url="http://pp")
            store, evaluator, notifier, _, metrics = pipeline(
                redis_client, key_prefix, rules_yaml(), clock, [hook], events=events
            )
            await cycle(store, evaluator, notifier, clock, 20, slow=True)
            assert len(rec.bodies()) == 1
            await cycle(store, evaluator, notifier, clock, 80, slow=False)
    firing, resolved = rec.bodies()
    assert set(firing) == V4_KEYS
    assert set(firing["alerts"][0]) == ALERT_KEYS
    assert firing["version"] == "4"
    assert firing["status"] == "firing"
    assert firing["groupKey"] == '{}:{alertname="ExecP95High", endpoint="ep1"}'
    assert firing["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"
    assert firing["commonLabels"] == {"alertname": "ExecP95High", "endpoint": "ep1",
                                      "severity": "critical"}  # fmt: skip
    assert firing["commonAnnotations"]["summary"] == "exec P95 9000 ms on ep1"
    assert resolved["status"] == "resolved"
    assert resolved["alerts"][0]["endsAt"] != ("0001-01-01T00:00:00Z")
    # Resolved with data: the value is the one measured now, under the threshold.
    assert resolved["alerts"][0]["annotations"]["summary"] == "exec P95 100 ms on ep1"
    keys = rec.keys()
    assert len(set(keys)) == 2
    assert keys[0] == firing["idempotencyKey"]
    assert [(e.rule, e.state, e.severity) for e in events] == [
        ("ExecP95High", "firing", "CRITICAL"),
        ("ExecP95High", "resolved", "CRITICAL"),
    ]
    assert metrics.sent.labels(receiver="webhook")._value.get() == 2


async def test_a_resolution_for_want_of_data_does_not_show_the_breach_as_current(
    redis_client, key_prefix
) -> None:
    """The spans stop mid-incident: the resolution's summary has no value (n/a) rather than the
    breaching one, and its resolution annotation says there was no data and what was last."""
    clock = FakeClock()
    with recorder() as rec:
        async with httpx.AsyncClient() as http:
            hook = WebhookReceiver(http, lambda: rec.url)
            store, evaluator, notifier, _, _ = pipeline(
                redis_client, key_prefix, rules_yaml(), clock, [hook]
            )
            await cycle(store, evaluator, notifier, clock, 20, slow=True)
            for _ in range(60):  # no spans at all: the window empties
                clock.now += 2
                await notifier.tick(evaluator.evaluate(clock.now).alerts, clock.now)
    firing, resolved = rec.bodies()
    assert firing["alerts"][0]["annotations"]["summary"] == "exec P95 9000 ms on ep1"
    annotations = resolved["alerts"][0]["annotations"]
    assert annotations["summary"] == "exec P95 n/a ms on ep1"
    assert annotations["resolution"].startswith("no data: under")
    assert annotations["resolution"].endswith("the last p95 measured was 9000")


async def test_restart_mid_incident_neither_refires_nor_forgets(redis_client, key_prefix) -> None:
    """A new evaluator and notifier on the same Redis send no second firing, and the resolution."""
    clock = FakeClock()
    with recorder() as rec:
        async with httpx.AsyncClient() as http:
            hook = WebhookReceiver(http, lambda: rec.url)
            first = pipeline(redis_client, key_prefix, rules_yaml(), clock, [hook])
            await cycle(first[0], first[1], first[2], clock, 20, slow=True)
            assert [b["status"] for b in rec.bodies()] == ["firing"]
            store = first[0]
            del first  # the evaluator object is gone; only Redis remembers
            store2, evaluator, notifier, _, _ = pipeline(
                redis_client, key_prefix, rules_yaml(), clock, [hook]
            )
            store2.observations = store.observations  # the windows outlive the evaluator too
            await cycle(store2, evaluator, notifier, clock, 20, slow=True)
            assert [b["status"] for b in rec.bodies()] == ["firing"]
            await cycle(store2, evaluator, notifier, clock, 80, slow=False)
    assert [b["status"] for b in rec.bodies()] == ["firing", "resolved"]


class Killed(BaseException):
    """The process dying at this point (not an Exception: nothing may catch it)."""


async def test_a_process_killed_while_queuing_a_firing_loses_it_not(
    redis_client, key_prefix
) -> None:
    """Killed between deciding to notify and queuing it: the restarted alerter still sends it."""
    clock = FakeClock()
    with recorder() as rec:
        async with httpx.AsyncClient() as http:
            hook = WebhookReceiver(http, lambda: rec.url)
            store, evaluator, notifier, _, _ = pipeline(
                redis_client, key_prefix, rules_yaml(), clock, [hook]
            )
            stage = notifier.outbox.stage

            def killed_once_there_is_something(pipe, notifications, *args, **kwargs):
                if notifications:
                    raise Killed
                stage(pipe, notifications, *args, **kwargs)

            notifier.outbox.stage = killed_once_there_is_something
            with pytest.raises(Killed):
                await cycle(store, evaluator, notifier, clock, 40, slow=True)
            assert rec.bodies() == []
            store2, evaluator, notifier, _, _ = pipeline(
                redis_client, key_prefix, rules_yaml(), clock, [hook]
            )
            store2.observations = store.observations
            await cycle(store2, evaluator, notifier, clock, 20, slow=True)
    assert [b["status"] for b in rec.bodies()] == ["firing"]


async def test_receiver_500_429_and_down_for_30s_loses_nothing(redis_client, key_prefix) -> None:
    """500s, a 429 with Retry-After and 30 s down: every notification arrives, keys unique."""
    clock = FakeClock()
    with recorder() as rec:
        port = rec.port
        rec.faults = [(429, "3"), (500, None), (500, None), (500, None)]
        async with httpx.AsyncClient() as http:
            hook = WebhookReceiver(http, lambda: f"http://127.0.0.1:{port}/hook")
            store, evaluator, notifier, _, metrics = pipeline(
                redis_client, key_prefix, rules_yaml(), clock, [hook]
            )
            await cycle(store, evaluator, notifier, clock, 20, slow=True)
            delivered = list(rec.deliveries)
    assert 3 in clock.slept  # the 429's Retry-After was waited out
    # The receiver is down now (nothing listens): the resolution must wait in Redis.
    async with httpx.AsyncClient() as http:
        hook = WebhookReceiver(http, lambda: f"http://127.0.0.1:{port}/hook")
        store2, evaluator, notifier, _, metrics = pipeline(
            redis_client, key_prefix, rules_yaml(), clock, [hook]
        )
        store2.observations = store.observations
        await cycle(store2, evaluator, notifier, clock, 75, slow=False)
        assert notifier.outbox.pending() == 1
        down_since = clock.now
        await cycle(store2, evaluator, notifier, clock, 30, slow=False)
        assert clock.now - down_since >= 30
        assert notifier.outbox.pending() == 1
        with recorder(port) as back:
            for _ in range(20):
                clock.now += 2
                await notifier.outbox.deliver_due(clock.now)
            assert notifier.outbox.pending() == 0
            later = list(back.deliveries)
    statuses = [b["status"] for _, b in delivered + later]
    assert statuses == ["firing", "resolved"]
    keys = [h["Idempotency-Key"] for h, _ in delivered + later]
    assert len(keys) == len(set(keys))
    assert metrics.failed.labels(receiver="webhook")._value.get() >= 1


async def test_silence_and_inhibition_mute_what_they_match(redis_client, key_prefix) -> None:
    """A silenced group sends nothing; a critical alert inhibits the endpoint's warning."""
    clock = FakeClock()
    with recorder() as rec:
        async with httpx.AsyncClient() as http:
            hook = WebhookReceiver(http, lambda: rec.url)
            store, evaluator, notifier, silences, _ = pipeline(
                redis_client, key_prefix, rules_yaml(), clock, [hook]
            )
            silences.add(Silence(matchers=(parse_matcher('endpoint=~"ep.*"'),),
                                 starts_at=clock.now, ends_at=clock.now + 30))  # fmt: skip
            for _ in range(20):
                store.feed("ep1", clock.now, 10, exec_ms=9000, delay_ms=5000)
                await notifier.tick(evaluator.evaluate(clock.now).alerts, clock.now)
                clock.now += 1
            assert rec.bodies() == []
            for _ in range(30):  # the silence ends; only the critical one is let through
                store.feed("ep1", clock.now, 10, exec_ms=9000, delay_ms=5000)
                await notifier.tick(evaluator.evaluate(clock.now).alerts, clock.now)
                clock.now += 1
    names = [a["labels"]["alertname"] for b in rec.bodies() for a in b["alerts"]]
    assert names == ["ExecP95High"]


async def test_slack_paces_one_per_second_and_waits_retry_after(redis_client, key_prefix) -> None:
    """Slack gets blocks and a text fallback, 1 message/s, and a 429's Retry-After is obeyed."""
    clock = FakeClock()
    calls: list[tuple[float, dict]] = []
    answers = [httpx.Response(429, headers={"Retry-After": "2"})]

    def slack(request: httpx.Request) -> httpx.Response:
        import json

        assert request.url.host == "hooks.slack.com"
        if answers:
            return answers.pop(0)
        calls.append((clock.now, json.loads(request.content)))
        return httpx.Response(200, text="ok")

    url = "https://hooks.slack.com/" + "services/" + "/".join(["T0CANARY", "B0CANARY", "c" * 24])
    async with httpx.AsyncClient(transport=httpx.MockTransport(slack)) as http:
        receiver = SlackReceiver(http, lambda: url, clock=clock, sleep=clock.sleep)
        text = rules_yaml(group_by="['...']")
        store, evaluator, notifier, _, _ = pipeline(
            redis_client, key_prefix, text, clock, [receiver]
        )
        for endpoint in ("ep1", "ep2", "ep3"):
            store.feed(endpoint, clock.now, 10, exec_ms=9000, delay_ms=10)
        for _ in range(8):
            await notifier.tick(evaluator.evaluate(clock.now).alerts, clock.now)
            clock.now += 1
    assert len(calls) == 3
    assert 2 in clock.slept
    times = [t for t, _ in calls]
    assert all(b - a >= 1.0 for a, b in itertools.pairwise(times))
    body = calls[0][1]
    assert body["text"].startswith("[FIRING]")
    assert body["blocks"][0]["type"] == "header"


@pytest.mark.parametrize("passed", [True, False])
async def test_probe_and_release_events_go_through_the_notifier(
    redis_client, key_prefix, passed
) -> None:
    """A failing probe run notifies (a passing one does not); a release is announced."""
    from datetime import UTC, datetime

    from podpulse.alerter._notify._events import probe_run_notification, release_announcement
    from podpulse.common.events import ProbeRunCompleted, ReleaseRecorded

    summary = _summary(passed)
    clock = FakeClock()
    with recorder() as rec:
        async with httpx.AsyncClient() as http:
            hook = WebhookReceiver(http, lambda: rec.url)
            _, _, notifier, _, _ = pipeline(redis_client, key_prefix, rules_yaml(), clock, [hook])
            probe = probe_run_notification(ProbeRunCompleted.of(summary, results_path="results/r"))
            assert (probe is None) == passed
            if probe is not None:
                notifier.notify_event(probe, clock.now)
            release = ReleaseRecorded(tag="v1.0-production", commit="abcdef1234", endpoint_id="ep1",
                                      image="img", model="m", gpu="g",
                                      recorded_at=datetime.now(UTC))  # fmt: skip
            notifier.notify_event(release_announcement(release), clock.now)
            await notifier.outbox.deliver_due(clock.now)
    names = [b["alerts"][0]["labels"]["alertname"] for b in rec.bodies()]
    assert names == ([] if passed else ["ProbeRunFailedSlo"]) + ["ReleaseRecorded"]


def _summary(passed: bool):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[3] / "libs/common/tests"))
    import summary_examples

    return summary_examples.load_summary(total_p95=3150.0 if passed else 9000.0)
