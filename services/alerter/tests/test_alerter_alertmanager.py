"""A real Alertmanager takes podpulse's alerts over /api/v2/alerts and delivers them."""

from __future__ import annotations

import asyncio
import subprocess
import time

import httpx
import pytest
from alerter_helpers import FakeClock, pipeline, program, recorder, rules_yaml

from podpulse.alerter._notify._receivers import AlertmanagerReceiver
from podpulse.alerter._rules._alert import fingerprint
from podpulse.common.testing import free_port, wait_until

BINARY, pytestmark = program("prometheus-alertmanager", "alertmanager")

CONFIG = """
route:
  receiver: hook
  group_by: [alertname, endpoint]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: {url}
        send_resolved: true
"""


@pytest.fixture
def alertmanager(tmp_path):
    """A real Alertmanager on loopback routing to a recording webhook; (its URL, the hook)."""
    with recorder() as hook:
        (tmp_path / "am.yml").write_text(CONFIG.format(url=hook.url))
        port, cluster = free_port(), free_port()
        assert BINARY is not None
        am = subprocess.Popen([
            BINARY, f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--cluster.listen-address=127.0.0.1:{cluster}",
            "--cluster.advertise-address=127.0.0.1:0",
        ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: _ready(base), timeout_s=30, what="alertmanager ready")
            yield base, hook
        finally:
            am.terminate()
            am.wait(10)


async def test_real_alertmanager_delivers_firing_and_resolved(
    redis_client, key_prefix, alertmanager
) -> None:
    """Pushed like Prometheus pushes, a real Alertmanager delivers the alert and its end."""
    base, hook = alertmanager
    # A real clock: Alertmanager judges startsAt and endsAt against its own.
    clock = FakeClock(now=time.time())
    async with httpx.AsyncClient() as http:
        receiver = AlertmanagerReceiver(http, lambda: base)
        store, evaluator, notifier, _, _ = pipeline(
            redis_client, key_prefix, rules_yaml(), clock, [receiver], am="alertmanager"
        )
        for _ in range(8):
            store.feed("ep1", clock.now, 10, exec_ms=9000, delay_ms=10)
            await notifier.tick(evaluator.evaluate(clock.now).alerts, clock.now)
            clock.now += 1
        firing = await _poll(lambda: [b for b in hook.bodies() if b["status"] == "firing"])
        am_alerts = (await http.get(f"{base}/api/v2/alerts")).json()
        # The handler recovers: the window holds only fast jobs (on the real clock, as
        # Alertmanager resolves an alert once its endsAt has passed on its own).
        store.observations.clear()
        clock.now = max(clock.now, time.time())
        for _ in range(3):
            store.feed("ep1", clock.now, 10, exec_ms=100, delay_ms=10)
            await notifier.tick(evaluator.evaluate(clock.now).alerts, clock.now)
            clock.now += 1
        resolved = await _poll(lambda: [b for b in hook.bodies() if b["status"] == "resolved"])
    alert = firing[0]["alerts"][0]
    assert alert["labels"]["alertname"] == "ExecP95High"
    assert alert["labels"]["endpoint"] == "ep1"
    assert alert["annotations"]["summary"] == "exec P95 9000 ms on ep1"
    # Alertmanager's own fingerprint of the labels is the one podpulse computes.
    assert am_alerts[0]["fingerprint"] == fingerprint(alert["labels"])
    assert resolved[0]["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"


async def _poll(check, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        if time.monotonic() > deadline:
            raise TimeoutError("no such delivery within 30 s")
        await asyncio.sleep(0.05)
    return found


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
