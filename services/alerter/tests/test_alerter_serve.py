"""`podpulse alerter serve` end to end on real processes: a slow twin run by the prober, its
spans over OTLP/HTTP, a loopback Slack-shaped receiver and a v4 webhook; then recovery, and a
restart mid-incident."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis
from alerter_helpers import recorder
from ingest_helpers import SpanSpec, job_attrs, proto_request

from podpulse.alerter import SeriesKey
from podpulse.alerter._pipeline import window_store
from podpulse.alerter.settings import AlerterSettings
from podpulse.common.testing import free_port, redis_server, stop_process, wait_until

pytestmark = pytest.mark.slow

PODPULSE = str(Path(sys.executable).with_name("podpulse"))
ENDPOINT = "glue-ep"
FIRING = 'ALERTS{alertname="ExecP95High",alertstate="firing"'
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
    # The restart below leaves a gap in the spans (the prober's exports to a stopped alerter
    # are lost): on a loaded machine the 10 s window can fall under min_samples, which
    # resolves a firing alert, as Prometheus does when its series goes away. Riding that out
    # is what keep_firing_for is for.
    keep_firing_for: 15s
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
        stop_process(popen, timeout_s=20)


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
    results = str(tmp / "results")
    return [
        PODPULSE,
        "loadtest",
        "--target",
        "twin",
        "--concurrency",
        "2",
        "--duration",
        f"{seconds}s",
        "--warmup",
        "0",
        "--run-id",
        name,
        "--results-dir",
        results,
    ]


def statuses(rec) -> list[str]:
    return [b["status"] for b in rec.bodies()]


class Serving:
    """`podpulse alerter serve` as a process that can be stopped and started again."""

    def __init__(self, port: int, rules: Path, env: dict[str, str], log: Path) -> None:
        self.argv = [
            PODPULSE,
            "alerter",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--rules",
            str(rules),
        ]
        self.env, self.log, self.port = env, log, port
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        # Generous, only against a hang: start-up has taken over 30 s on a loaded machine.
        wait_until(lambda: metrics(self.port), timeout_s=120, what="serve's /metrics")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> tuple[int, float]:
        """Send *sig*; the exit status and how long it took."""
        assert self.popen is not None
        sent = time.monotonic()
        self.popen.send_signal(sig)
        try:
            code = self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            code = self.popen.wait()
        return code, time.monotonic() - sent


@contextmanager
def served(server: Serving) -> Iterator[Serving]:
    """*server* started for the block, stopped after it."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


def say(line: str) -> None:
    sys.stderr.write(f"\n{line}\n")


def envs(redis_url: str, port: int, slack: str, hook: str) -> tuple[dict[str, str], dict[str, str]]:
    """The alerter's environment and the prober's (spans over OTLP/HTTP to the alerter)."""
    base = os.environ | {"REDIS_URL": redis_url, "PODPULSE_LOG_FORMAT": "json"}
    base.pop("RUNPOD_ENDPOINT_ID", None)  # the prober's target is its own twin
    alerter = base | {
        "SLACK_WEBHOOK_URL": slack,
        "ALERT_WEBHOOK_URL": hook,
        "OTEL_TRACES_EXPORTER": "none",
        # Short buckets, so a 10 s window is 10 s and the recovery is not held back by one.
        "ALERTER_BUCKET_S": "1",
        "ALERTER_FLUSH_INTERVAL_S": "0.25",
    }
    prober = base | {
        "OTEL_SDK_DISABLED": "false",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "TWIN_ENDPOINT_ID": ENDPOINT,
        "TWIN_CALIBRATED_DISTRIBUTION": "fixed",
    }
    return alerter, prober


def test_slow_twin_alerts_slack_and_webhook_survives_restart_and_resolves(tmp_path) -> None:
    """A slow twin fires the CRITICAL exec alert to Slack and a v4 webhook; a restarted serve
    neither re-fires nor forgets; the recovered handler's resolution reaches both."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    port = free_port()
    with redis_server() as redis_url, recorder() as slack, recorder() as hook:
        alerter_env, prober_env = envs(redis_url, port, slack.url, hook.url)
        serving = Serving(port, rules, alerter_env, tmp_path / "serve.log")
        serving.start()
        try:
            slow_argv = loadtest(tmp_path, prober_env, 600, 40, "slow")
            with process(slow_argv, dict(prober_env), tmp_path / "slow.log") as slow:
                wait_until(lambda: accepted(port) >= 5, timeout_s=60, what="5 slow spans")
                breach = time.monotonic()  # every span breaches: P95 > 300 from min_samples on
                wait_until(lambda: hook.bodies() and slack.bodies(), timeout_s=30)
                say(f"breach -> delivered to both: {time.monotonic() - breach:.2f} s")
                assert 'alertstate="firing"' in metrics(port)
                assert "podpulse_alerter_evaluations_total" in metrics(port)
                # Restart mid-incident: SIGTERM is a prompt exit 0; Redis keeps the state.
                code, took = serving.stop()
                assert code == 0
                say(f"SIGTERM -> exited 0: {took:.2f} s")
                serving.start()
                wait_until(lambda: FIRING in metrics(port), timeout_s=30, what="ALERTS firing")
                # The slow run has done its part: end it now (a loadtest's SIGTERM is 130)
                # rather than wait out its duration. A re-fire after the restart would still
                # show below, where the webhook must get exactly firing then resolved.
                slow.send_signal(signal.SIGTERM)
                assert slow.wait(timeout=90) == 130
            assert statuses(hook) == ["firing"]  # the restarted alerter did not fire again
            assert len(slack.bodies()) == 1
            fast_argv = loadtest(tmp_path, prober_env, 20, 25, "fast")
            with process(fast_argv, dict(prober_env), tmp_path / "fast.log"):
                recovering = time.monotonic()
                wait_until(lambda: statuses(hook) == ["firing", "resolved"], timeout_s=60)
                took = time.monotonic() - recovering
                say(f"fast run started -> resolution delivered: {took:.2f} s")
                wait_until(lambda: len(slack.bodies()) == 2, timeout_s=15)
        finally:
            serving.stop()
    check_payloads(hook.bodies(), slack.bodies(), hook.keys())


TTFT_RULES = """
evaluation_interval: 1s
route: {group_by: [alertname, endpoint], group_wait: 1s, group_interval: 2s,
        repeat_interval: 1h, send_resolved: true}
rules:
  - name: TtftP95High
    metric: ttft_ms
    stat: p95
    op: ">"
    threshold: 300
    window: 10s
    for: 2s
    keep_firing_for: 5s
    min_samples: 5
    severity: warning
    annotations: {summary: "time to first token P95 {{ value }} ms on {{ endpoint }}"}
"""


def streaming_loadtest(tmp: Path, env: dict[str, str], first_token_ms: int, seconds: int,
                       name: str) -> list[str]:  # fmt: skip
    env.update(TWIN_HANDLER="calibrated-stream", TWIN_CALIBRATED_FIRST_TOKEN_MS=str(first_token_ms),
               TWIN_CALIBRATED_TOKEN_MS="5", TWIN_CALIBRATED_OUTPUT_TOKENS="8")  # fmt: skip
    return [*loadtest(tmp, env, 20, seconds, name), "--api", "stream"]


def test_a_slow_first_token_fires_ttft_and_a_fast_one_resolves_it(tmp_path) -> None:
    """Streamed prober runs on a twin whose first token is slow fire TtftP95High at the
    webhook (the time to first token read from the prober's spans); a run whose first token
    is quick resolves it."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(TTFT_RULES)
    port = free_port()
    with redis_server() as redis_url, recorder() as slack, recorder() as hook:
        alerter_env, prober_env = envs(redis_url, port, slack.url, hook.url)
        with served(Serving(port, rules, alerter_env, tmp_path / "serve.log")):
            slow_argv = streaming_loadtest(tmp_path, prober_env, 700, 40, "slow")
            with process(slow_argv, dict(prober_env), tmp_path / "slow.log") as slow:
                wait_until(lambda: statuses(hook) == ["firing"], timeout_s=90, what="firing")
                slow.send_signal(signal.SIGTERM)
                assert slow.wait(timeout=90) == 130
            fast_argv = streaming_loadtest(tmp_path, prober_env, 20, 30, "fast")
            with process(fast_argv, dict(prober_env), tmp_path / "fast.log"):
                wait_until(lambda: statuses(hook) == ["firing", "resolved"], timeout_s=90,
                           what="the resolution")  # fmt: skip
    firing, resolved = hook.bodies()
    assert firing["commonLabels"]["alertname"] == "TtftP95High"
    summary = firing["commonAnnotations"]["summary"]
    assert summary.startswith("time to first token P95 ")
    # At least the handler's 700 ms first token; a loaded machine only adds to it.
    assert float(summary.split()[5]) >= 700
    assert resolved["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"


def check_payloads(hook: list, slack: list, keys: list[str]) -> None:
    firing, resolved = hook
    assert firing["version"] == "4"
    assert firing["groupKey"] == f'{{}}:{{alertname="ExecP95High", endpoint="{ENDPOINT}"}}'
    # The calibrated handler's spans name their model: it is the series' and a label.
    assert firing["commonLabels"] == {
        "alertname": "ExecP95High",
        "severity": "critical",
        "endpoint": ENDPOINT,
        "model": "calibrated",
    }
    assert resolved["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
    assert slack[0]["text"].startswith("[FIRING]")
    assert slack[1]["text"].startswith("[RESOLVED]")
    assert slack[0]["blocks"]
    assert len(set(keys)) == 2


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_right_after_spans_arrive_keeps_every_span(tmp_path, sig) -> None:
    """Ctrl-C or SIGTERM just after an export: exit 0 within seconds, and every accepted span
    is in the Redis windows (the last flush), though the flush interval had not come round."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    port = free_port()
    with redis_server() as redis_url:
        env, _ = envs(redis_url, port, "", "")
        env |= {"ALERTER_FLUSH_INTERVAL_S": "60"}
        serving = Serving(port, rules, env, tmp_path / "serve.log")
        serving.start()
        now = time.time()
        body = proto_request(SpanSpec(job_attrs(exec_ms=100.0 + n), end_s=now) for n in range(200))
        reply = httpx.post(
            f"http://127.0.0.1:{port}/v1/traces",
            content=body.SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
        )
        assert reply.status_code == 200
        code, took = serving.stop(sig)  # a process still running after 15 s is killed: not 0
        assert code == 0
        say(f"{sig.name} -> exited 0: {took:.2f} s")
        client = redis.Redis.from_url(redis_url)
        store = window_store(client, AlerterSettings(bucket_s=1.0))
        stat = store.stat(SeriesKey("ep1", "qwen"), "exec_ms", "max", 600.0, time.time())
        assert stat.samples == 200
        assert stat.value == pytest.approx(299.0, rel=0.02)


def test_a_body_that_never_arrives_is_408_and_the_server_serves_on(tmp_path) -> None:
    """A client declaring 1000 bytes and sending 10 gets 408 and a closed connection after
    ALERTER_BODY_TIMEOUT_S, and a refusal with the body unread closes it at once; a proper
    export on another connection is still answered."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    with redis_server() as redis_url:
        # Refused before its body was read (no token here: a wrong content type), a connection
        # is closed too, so the rest cannot be trickled in with no timeout. "At once": with the
        # body timeout at its ten-minute maximum, a server that went on waiting for the body
        # would outlast _slow_post's 10 s socket timeout.
        port = free_port()
        env, _ = envs(redis_url, port, "", "")
        with served(Serving(port, rules, env | {"ALERTER_BODY_TIMEOUT_S": "600"}, tmp_path / "p")):
            head, _ = _slow_post(port, b"Content-Type: text/plain\r\n")
            assert head.startswith(b"HTTP/1.1 415"), head
            assert b"connection: close" in head.lower()
        port = free_port()
        env, _ = envs(redis_url, port, "", "")
        with served(Serving(port, rules, env | {"ALERTER_BODY_TIMEOUT_S": "0.5"}, tmp_path / "l")):
            head, body = _slow_post(port, b"Content-Type: application/json\r\n")
            assert head.startswith(b"HTTP/1.1 408"), head
            assert b"connection: close" in head.lower()
            # The server's own word that its 0.5 s ran out (not a clock reading here).
            assert json.loads(body)["message"] == (
                "request body incomplete after 0.5 s (10 of 1000 bytes received)"
            )
            good = proto_request([SpanSpec(job_attrs(exec_ms=100.0), end_s=time.time())])
            ok = httpx.post(f"http://127.0.0.1:{port}/v1/traces", content=good.SerializeToString(),
                            headers={"Content-Type": "application/x-protobuf"})  # fmt: skip
            assert ok.status_code == 200


def _slow_post(port: int, headers: bytes) -> tuple[bytes, bytes]:
    """POST declaring 1000 bytes and sending 10; the reply's head and body, read until the
    server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: a\r\n" + headers
                     + b'Content-Length: 1000\r\n\r\n{"resource')  # fmt: skip
        reply = b""
        while chunk := conn.recv(4096):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return head, body
