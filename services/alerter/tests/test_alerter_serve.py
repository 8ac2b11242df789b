"""`podpulse alerter serve` end to end on real processes: a slow twin run by the prober, its
spans over OTLP/HTTP, a loopback Slack-shaped receiver and a v4 webhook; then recovery, and a
restart mid-incident."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from alerter_helpers import recorder

from podpulse.common.testing import free_port, redis_server, wait_until

pytestmark = pytest.mark.slow

PODPULSE = str(Path(sys.executable).with_name("podpulse"))
ENDPOINT = "glue-ep"
RULES = """
evaluation_interval: 1s
route: {group_by: [alertname, endpoint], group_wait: 1s, group_interval: 2s,
        repeat_interval: 1h, send_resolved: true}
rules:
  - name: ExecP95High
    metric: exec_ms
    stat: p95
    op: ">"
    threshold: 300
    window: 10s
    for: 2s
    min_samples: 5
    severity: critical
    annotations: {summary: "exec P95 {{ value }} ms on {{ endpoint }}"}
"""


@contextmanager
def process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A subprocess logging to *log*; SIGTERM (then kill) when the block ends."""
    with log.open("ab") as out:
        popen = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield popen
    finally:
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()


def metrics(port: int) -> str:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return ""


def accepted(port: int) -> float:
    found = re.search(r"^podpulse_alerter_spans_accepted_total (\S+)$", metrics(port), re.M)
    return float(found.group(1)) if found else 0.0


def loadtest(tmp: Path, env: dict[str, str], exec_ms: int, seconds: int, name: str) -> list[str]:
    env.update(TWIN_CALIBRATED_EXEC_MS=str(exec_ms))
    return [PODPULSE, "loadtest", "--target", "twin", "--concurrency", "2", "--duration",
            f"{seconds}s", "--warmup", "0", "--run-id", name, "--results-dir", str(tmp / "results")]  # fmt: skip


def statuses(rec) -> list[str]:
    return [b["status"] for b in rec.bodies()]


def slack_texts(rec) -> list[str]:
    return [b["text"] for b in rec.bodies()]


def test_slow_twin_alerts_slack_and_webhook_survives_restart_and_resolves(tmp_path) -> None:
    """A slow twin fires the CRITICAL exec alert to Slack and a v4 webhook; a restarted serve
    neither re-fires nor forgets; the recovered handler's resolution reaches both."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    port = free_port()
    with redis_server() as redis_url, recorder() as slack, recorder() as hook:
        base = os.environ | {"REDIS_URL": redis_url, "PODPULSE_LOG_FORMAT": "json",
                             "OTEL_SDK_DISABLED": "false"}  # fmt: skip
        base.pop("RUNPOD_ENDPOINT_ID", None)
        alerter_env = base | {
            "SLACK_WEBHOOK_URL": slack.url, "ALERT_WEBHOOK_URL": hook.url,
            "ALERTER_BUCKET_S": "1", "ALERTER_FLUSH_INTERVAL_S": "0.25",
            "OTEL_TRACES_EXPORTER": "none",
        }  # fmt: skip
        prober_env = base | {
            "OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_BSP_SCHEDULE_DELAY": "200", "TWIN_ENDPOINT_ID": ENDPOINT,
            "TWIN_CALIBRATED_DISTRIBUTION": "fixed", "PROBER_WARMUP": "0",
        }  # fmt: skip
        serve = [PODPULSE, "alerter", "serve", "--host", "127.0.0.1", "--port", str(port),
                 "--rules", str(rules)]  # fmt: skip
        log = tmp_path / "serve.log"
        first = process(serve, alerter_env, log)
        alerter = first.__enter__()
        try:
            wait_until(lambda: metrics(port), timeout_s=30)
            slow_argv = loadtest(tmp_path, prober_env, 600, 40, "slow")
            with process(slow_argv, dict(prober_env), tmp_path / "slow.log") as slow:
                wait_until(lambda: accepted(port) >= 5, timeout_s=60)
                breach = time.monotonic()  # every span breaches: P95 > 300 from min_samples on
                wait_until(lambda: statuses(hook) and slack.bodies(), timeout_s=30)
                delivered = time.monotonic()
                print(f"breach -> delivered (min_samples in, for 2s, group_wait 1s): "
                      f"{delivered - breach:.2f} s")  # fmt: skip
                assert 'alertstate="firing"' in metrics(port)
                # Restart mid-incident: SIGTERM is a prompt exit 0, Redis keeps the state.
                alerter.send_signal(signal.SIGTERM)
                stopped = time.monotonic()
                assert alerter.wait(timeout=15) == 0
                print(f"SIGTERM -> exited: {time.monotonic() - stopped:.2f} s")
                first.__exit__(None, None, None)
                first = process(serve, alerter_env, log)
                first.__enter__()
                wait_until(lambda: 'ALERTS{alertname="ExecP95High",alertstate="firing"'
                           in metrics(port), timeout_s=30)  # fmt: skip
                assert slow.wait(timeout=90) in (0, 1)
            assert statuses(hook) == ["firing"]  # the restarted alerter did not fire again
            assert len(slack.bodies()) == 1
            fast_argv = loadtest(tmp_path, prober_env, 20, 25, "fast")
            with process(fast_argv, dict(prober_env), tmp_path / "fast.log"):
                recovering = time.monotonic()
                wait_until(lambda: statuses(hook) == ["firing", "resolved"], timeout_s=60)
                print(f"fast run started -> resolution delivered: "
                      f"{time.monotonic() - recovering:.2f} s")  # fmt: skip
                wait_until(lambda: len(slack.bodies()) == 2, timeout_s=15)
        finally:
            first.__exit__(None, None, None)
    firing, resolved = hook.bodies()
    assert firing["version"] == "4"
    assert firing["groupKey"] == f'{{}}:{{alertname="ExecP95High", endpoint="{ENDPOINT}"}}'
    # The calibrated handler's spans name their model: it is the series' and a label.
    assert firing["commonLabels"] == {"alertname": "ExecP95High", "severity": "critical",
                                      "endpoint": ENDPOINT, "model": "calibrated"}  # fmt: skip
    assert resolved["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
    assert slack_texts(slack)[0].startswith("[FIRING]")
    assert slack_texts(slack)[1].startswith("[RESOLVED]")
    assert slack.bodies()[0]["blocks"]
    assert len(set(hook.keys())) == 2
