"""Breach -> delivered notification: podpulse's alerter beside Prometheus + Alertmanager.

Run: ``.venv/bin/python benchmarks/alerter_breach.py [--breaches N] [--out FILE]``.

One run, real processes on loopback, temporary directories, all stopped at the end:

- **podpulse**: a child process assembled as ``podpulse alerter serve`` would be (until that
  command lands): the uvicorn ingest app on Redis-merged windows, an asyncio loop that
  evaluates the shipped default rules every ``evaluation_interval`` and hands the alerts to
  the notifier (dispatcher + outbox), which delivers to a webhook; every setting is the
  default except ``ALERTER_METRICS_WINDOW_S``, set to the exec rule's window (1 m) so that
  ``/metrics`` shows the statistic the rule judges;
- **Prometheus + Alertmanager, defaults**: Debian's ``prometheus`` scraping the alerter's
  ``/metrics`` (scrape and evaluation every 1 m, their defaults), a rule equivalent to
  podpulse's ExecP95High (the same threshold, ``for`` and minimum samples), alerting a
  ``prometheus-alertmanager`` whose route keeps its timing defaults (group_wait 30 s);
- **Prometheus + Alertmanager, tuned**: the same, scrape and evaluation every 1 s (a whole
  second, the unit their docs' intervals are given in; ``scrape_timeout`` 1 s, as it may not
  exceed the interval), group_wait 0 s and group_interval 1 s.

All three group by ``[alertname, endpoint]`` (podpulse's route) and deliver to one
recording webhook in this process, which notes each arrival's time. Load: ``runpod.job``
spans over OTLP/HTTP (protobuf), ``--rate`` a second per endpoint, exec_ms 800-1500 (below
the 5000 ms threshold) for ``--baseline`` seconds, then 6000-7000. Breach time = the end
of the first span above; delivered = the first firing ExecP95High notification for that
endpoint at the webhook. Each breach has its own endpoint (its own series and alert group
everywhere), and breaches start ``--gap`` seconds apart, so the slow default pipeline's
minutes overlap instead of adding up; an endpoint stops sending once all three delivered.
Part of every figure, on all sides alike, is the rule itself: a P95 over 1 m crosses 5000
only once 5 % of the window's spans are above it (about 3 s at a steady rate).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from podpulse.alerter._rules._model import Rule
from podpulse.alerter._rules._yaml import default_rules
from podpulse.common.testing import free_port, redis_server, wait_until

PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
PIPELINES = ("podpulse", "prom-am-defaults", "prom-am-tuned")
ALERTNAME = "ExecP95High"


def exec_rule() -> Rule:
    """The shipped CRITICAL exec rule, which both sides judge the breach by."""
    return next(r for r in default_rules().rules if r.name == ALERTNAME)


# --- The recording webhook ------------------------------------------------------------------


class Recorder:
    """A loopback webhook (Alertmanager v4 payloads on any path): first firing per endpoint."""

    def __init__(self) -> None:
        self.port = free_port()
        self.lock = threading.Lock()
        self.first: dict[tuple[str, str], float] = {}  # (pipeline, endpoint) -> arrival
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                at = time.time()
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                self.send_response(200)
                self.end_headers()
                recorder.record(self.path.strip("/"), at, body)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, pipeline: str) -> str:
        return f"http://127.0.0.1:{self.port}/{pipeline}"

    def record(self, pipeline: str, at: float, body: bytes) -> None:
        payload = json.loads(body)
        with self.lock:
            for alert in payload.get("alerts", []):
                labels = alert.get("labels", {})
                if alert.get("status") == "firing" and labels.get("alertname") == ALERTNAME:
                    self.first.setdefault((pipeline, labels.get("endpoint", "")), at)

    def delivered(self, pipeline: str, endpoint: str) -> float | None:
        with self.lock:
            return self.first.get((pipeline, endpoint))


# --- podpulse's side, assembled as `podpulse alerter serve` would be ------------------------


async def _serve_alerter(port: int, redis_url: str, events: Path) -> None:
    import redis
    import uvicorn

    from podpulse.alerter import REGISTRY, RedisWindowStore, create_ingest_app
    from podpulse.alerter._notify._dispatch import Dispatcher
    from podpulse.alerter._notify._notifier import Notifier
    from podpulse.alerter._notify._outbox import DeliveryMetrics, Outbox
    from podpulse.alerter._notify._receivers import WebhookReceiver
    from podpulse.alerter._notify._silences import SilenceStore
    from podpulse.alerter._rules._evaluator import Evaluator, EvaluatorMetrics
    from podpulse.alerter._rules._state import StateStore
    from podpulse.alerter.settings import AlerterSettings
    from podpulse.common.events import AlertStateChanged
    from podpulse.common.retry import Backoff
    from podpulse.common.settings import ALERT_WEBHOOK_URL

    settings = AlerterSettings()
    config = default_rules()
    client = redis.Redis.from_url(redis_url)
    store = RedisWindowStore(client, prefix=settings.redis_prefix, bucket_s=settings.bucket_s,
                             retention_s=settings.retention_s, max_series=settings.max_series,
                             clock=time.time)  # fmt: skip
    app = create_ingest_app(settings, store)
    prefix = settings.state_prefix

    def note(event: AlertStateChanged) -> None:
        # When each alert fired, for the report's split of detection and delivery.
        with events.open("a") as out:
            out.write(json.dumps({"state": event.state, "at": event.occurred_at.timestamp(),
                                  **event.labels}) + "\n")  # fmt: skip

    evaluator = Evaluator(store, config, StateStore(client, prefix),
                          metrics=EvaluatorMetrics(REGISTRY), on_change=note,
                          external_url=settings.external_url)  # fmt: skip
    async with httpx.AsyncClient(timeout=settings.notify_timeout_s) as http:
        webhook = WebhookReceiver(http, ALERT_WEBHOOK_URL, external_url=settings.external_url)
        outbox = Outbox(client, prefix, [webhook], metrics=DeliveryMetrics(REGISTRY),
                        backoff=Backoff(), give_up_s=settings.notify_give_up_s)  # fmt: skip
        dispatcher = Dispatcher(client, prefix, config, SilenceStore(client, prefix))
        notifier = Notifier(client, prefix, config, dispatcher, outbox,
                            grouped_receivers=[webhook.name])  # fmt: skip

        async def evaluate_every_interval() -> None:
            interval = config.evaluation_interval
            slot = time.time()
            while True:
                # Evaluated at the slot's time, not the wall clock, as Prometheus's rule groups
                # are: with the wall clock, `for: 4s` at a 2 s interval would see 3.998 s
                # half the time and fire one evaluation later.
                evaluation = await asyncio.to_thread(evaluator.evaluate, slot)
                await notifier.tick(evaluation.alerts, slot)
                # A slot missed (a slow Redis) is skipped, never evaluated late in a burst.
                slot += interval * max(1, math.ceil((time.time() - slot) / interval))
                await asyncio.sleep(max(0.0, slot - time.time()))

        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                               log_level="warning", access_log=False))  # fmt: skip
        loop = asyncio.create_task(evaluate_every_interval())
        try:
            await server.serve()
        finally:
            loop.cancel()


# --- Prometheus and Alertmanager -------------------------------------------------------------

_PROM_RULES = """groups:
  - name: podpulse
    rules:
      - alert: {name}
        # podpulse's rule: exec P95 over the window > threshold on at least min_samples.
        expr: >-
          podpulse_exec_ms{{quantile="0.95"}} > {threshold:g}
          and ignoring(quantile, metric) podpulse_window_samples{{metric="exec_ms"}} >= {n}
        for: {for_s:g}s
        labels: {{severity: {severity}}}
        annotations: {{summary: "exec P95 {{{{ $value }}}} ms on {{{{ $labels.endpoint }}}}"}}
"""
_PROM_CONFIG = """{globals}
rule_files: [{rules}]
alerting:
  alertmanagers: [{{static_configs: [{{targets: ["127.0.0.1:{am_port}"]}}]}}]
scrape_configs:
  - job_name: podpulse-alerter
    static_configs: [{{targets: ["127.0.0.1:{alerter_port}"]}}]
"""
_AM_CONFIG = """route:
  receiver: hook
  group_by: [alertname, endpoint]   # podpulse's route; grouping is not a timing default
{timing}
receivers:
  - name: hook
    webhook_configs: [{{url: "{url}", send_resolved: true}}]
"""
SETTINGS = {
    # Nothing set: scrape_interval 1m, evaluation_interval 1m, scrape_timeout 10s;
    # group_wait 30s, group_interval 5m, repeat_interval 4h.
    "prom-am-defaults": ("# Prometheus's defaults", "# Alertmanager's defaults"),
    "prom-am-tuned": (
        "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}",
        "  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h",
    ),
}


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def _process(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[None]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _start_prom_am(
    stack: contextlib.ExitStack, name: str, tmp: Path, alerter_port: int, hook: str
) -> None:
    rule = exec_rule()
    prom_globals, am_timing = SETTINGS[name]
    work = tmp / name
    work.mkdir()
    am_port, prom_port = free_port(), free_port()
    (work / "am.yml").write_text(_AM_CONFIG.format(timing=am_timing, url=hook))
    (work / "rules.yml").write_text(_PROM_RULES.format(
        name=rule.name, threshold=rule.threshold, n=rule.min_samples, for_s=rule.for_,
        severity=rule.severity))  # fmt: skip
    (work / "prometheus.yml").write_text(_PROM_CONFIG.format(
        globals=prom_globals, rules=work / "rules.yml", am_port=am_port,
        alerter_port=alerter_port))  # fmt: skip
    stack.enter_context(_process([
        ALERTMANAGER, f"--config.file={work / 'am.yml'}", f"--storage.path={work / 'am'}",
        f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address=",
    ], work / "alertmanager.log"))  # fmt: skip
    stack.enter_context(_process([
        PROMETHEUS, f"--config.file={work / 'prometheus.yml'}",
        f"--storage.tsdb.path={work / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}",
    ], work / "prometheus.log"))  # fmt: skip
    for url in (f"http://127.0.0.1:{am_port}/-/ready", f"http://127.0.0.1:{prom_port}/-/ready"):
        wait_until(functools.partial(_ready, url), timeout_s=60, what=url)


# --- The load and the breaches ---------------------------------------------------------------


@dataclass
class Breach:
    endpoint: str
    starts_at: float  # baseline traffic from here
    breach_at: float  # spans above the threshold from here
    first_above: float | None = None
    stopped: bool = False


def _kv(key: str, value: object) -> KeyValue:
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def _span(endpoint: str, exec_ms: float, end_s: float, n: int) -> Span:
    delay_ms = random.uniform(100, 200)
    attrs = {"runpod.endpoint.id": endpoint, "podpulse.target.kind": "hosted",
             "runpod.job.id": f"job-{n}", "runpod.job.status": "COMPLETED",
             "runpod.execution_ms": exec_ms, "runpod.delay_ms": delay_ms,
             "podpulse.total_ms": exec_ms + delay_ms + 50.0,
             "podpulse.tokens_per_second": 40.0}  # fmt: skip
    end_ns = round(end_s * 1e9)
    return Span(
        trace_id=random.randbytes(16), span_id=random.randbytes(8), name="runpod.job",
        kind=Span.SPAN_KIND_CLIENT, end_time_unix_nano=end_ns,
        start_time_unix_nano=end_ns - round((exec_ms + delay_ms + 50.0) * 1e6),
        attributes=[_kv(k, v) for k, v in attrs.items()],
    )  # fmt: skip


async def drive(
    base: str, breaches: list[Breach], recorder: Recorder, report: ReportWriter, *,
    rate: float, timeout_s: float,
) -> None:  # fmt: skip
    """Send every live endpoint's spans at *rate* per second until each breach is delivered."""
    threshold = exec_rule().threshold
    tick = 1.0 / rate
    due = time.time()
    n = 0
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        while not all(b.stopped for b in breaches):
            now = time.time()
            spans = []
            for b in breaches:
                if b.stopped or now < b.starts_at:
                    continue
                above = now >= b.breach_at
                exec_ms = random.uniform(6000, 7000) if above else random.uniform(800, 1500)
                assert above == (exec_ms > threshold)
                if above and b.first_above is None:
                    b.first_above = now
                n += 1
                spans.append(_span(b.endpoint, exec_ms, now, n))
                done = all(recorder.delivered(p, b.endpoint) for p in PIPELINES)
                if above and (done or now - b.breach_at > timeout_s):
                    b.stopped = True
                    report.write()
            if spans:
                request = ExportTraceServiceRequest(
                    resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])]
                )
                reply = await http.post(
                    "/v1/traces",
                    content=request.SerializeToString(),
                    headers={"content-type": "application/x-protobuf"},
                )
                if reply.status_code != 200 or b"rejected" in reply.content:
                    raise RuntimeError(f"ingest answered {reply.status_code}: {reply.content!r}")
            due += tick
            await asyncio.sleep(max(0.0, due - time.time()))


# --- The report -----------------------------------------------------------------------------


def _rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class ReportWriter:
    """Writes the report file whenever a breach is done, so a cut-short run keeps its figures."""

    def __init__(
        self, out: Path, header: list[str], breaches: list[Breach], rec: Recorder, events: Path
    ) -> None:
        self.out, self.header, self.breaches, self.rec = out, header, breaches, rec
        self.events = events

    def fired(self) -> dict[str, float]:
        """When podpulse's evaluator fired ExecP95High, per endpoint."""
        if not self.events.exists():
            return {}
        out: dict[str, float] = {}
        for line in self.events.read_text().splitlines():
            event = json.loads(line)
            if event["state"] == "firing" and event.get("alertname") == ALERTNAME:
                out.setdefault(event["endpoint"], event["at"])
        return out

    def latencies(self, pipeline: str) -> list[float]:
        return [d - b.first_above for b in self.breaches
                if b.first_above is not None and b.stopped
                and (d := self.rec.delivered(pipeline, b.endpoint)) is not None]  # fmt: skip

    def write(self) -> None:
        lines = [*self.header, "", "breach -> delivered, seconds, per breach (podpulse fired: "
                 "breach -> its evaluator's firing transition):"]  # fmt: skip
        lines.append(f"{'endpoint':<14}{'podpulse fired':>16}"
                     + "".join(f"{p:>18}" for p in PIPELINES))  # fmt: skip
        fired = self.fired()
        for b in self.breaches:
            if not b.stopped or b.first_above is None:
                continue
            at = fired.get(b.endpoint)
            cells = [f"{at - b.first_above:>16.2f}" if at is not None else f"{'none':>16}"]
            for p in PIPELINES:
                d = self.rec.delivered(p, b.endpoint)
                cells.append(f"{d - b.first_above:>18.2f}" if d is not None else f"{'none':>18}")
            lines.append(f"{b.endpoint:<14}" + "".join(cells))
        lines += ["", f"{'pipeline':<18}{'n':>4}{'P50 s':>9}{'P95 s':>9}{'min s':>9}"
                  f"{'max s':>9}{'P50 x':>8}{'P95 x':>8}"]  # fmt: skip
        ours = self.latencies("podpulse")
        for p in PIPELINES:
            lat = self.latencies(p)
            if not lat:
                lines.append(f"{p:<18}{0:>4}   (no deliveries)")
                continue
            p50, p95 = _rank(lat, 0.5), _rank(lat, 0.95)
            ratio = (f"{p50 / _rank(ours, 0.5):>8.1f}{p95 / _rank(ours, 0.95):>8.1f}"
                     if ours else "")  # fmt: skip
            lines.append(f"{p:<18}{len(lat):>4}{p50:>9.2f}{p95:>9.2f}{min(lat):>9.2f}"
                         f"{max(lat):>9.2f}{ratio}")  # fmt: skip
        lines += ["", "P50/P95 nearest rank (with n < 20, P95 is the largest); x = the "
                  "pipeline's figure over podpulse's."]  # fmt: skip
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text("\n".join(lines) + "\n")


def _version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).splitlines()[0]


def main() -> None:
    """Start every part, run the breaches, write the report, stop everything."""
    if len(sys.argv) == 5 and sys.argv[1] == "_alerter":
        asyncio.run(_serve_alerter(int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--breaches", type=int, default=10, help="breaches (one endpoint each)")
    # Not a whole number of seconds: successive breaches meet every scrape and evaluation
    # cycle (1 s, 2 s, 1 m) at a different phase.
    parser.add_argument("--gap", type=float, default=17.3, help="seconds between breach starts")
    parser.add_argument("--baseline", type=float, default=60.0, help="seconds below threshold")
    parser.add_argument("--rate", type=float, default=10.0, help="spans/s per endpoint")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up on a breach after")
    parser.add_argument("--out", type=Path,
                        default=Path("benchmarks/reports/alerter_breach_cpu2.txt"))  # fmt: skip
    args = parser.parse_args()
    for binary in (PROMETHEUS, ALERTMANAGER):
        if not os.access(binary, os.X_OK):
            parser.exit(2, f"{binary} is not installed (apt install prometheus "
                           "prometheus-alertmanager)\n")  # fmt: skip
    rule = exec_rule()
    started = time.time()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="alerter-breach-")))
        redis_url = stack.enter_context(redis_server())
        rec = Recorder()
        rec.thread.start()
        stack.callback(rec.server.shutdown)
        alerter_port = free_port()
        # Only what the alerter needs: none of this shell's secrets reach the child.
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
        env |= {"ALERT_WEBHOOK_URL": rec.url("podpulse"),
                "ALERTER_METRICS_WINDOW_S": f"{rule.window:g}"}  # fmt: skip
        events = tmp / "alerter-events.jsonl"
        argv = [sys.executable, __file__, "_alerter", str(alerter_port), redis_url, str(events)]
        stack.enter_context(_process(argv, tmp / "alerter.log", env))
        base = f"http://127.0.0.1:{alerter_port}"
        wait_until(lambda: _ready(base + "/-/healthy"), timeout_s=60, what="the alerter")
        for name in SETTINGS:
            _start_prom_am(stack, name, tmp, alerter_port, rec.url(name))
        t0 = time.time() + 1.0
        breaches = [Breach(f"bench{k:02d}", t0 + k * args.gap, t0 + k * args.gap + args.baseline)
                    for k in range(args.breaches)]  # fmt: skip
        header = [
            f"podpulse alerter breach -> notification benchmark: {os.cpu_count()} CPUs, python "
            f"{platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
            f"{_version(PROMETHEUS)}; {_version(ALERTMANAGER)}",
            f"rule {rule.name}: exec_ms p95 {rule.op} {rule.threshold:g} over {rule.window:g} s, "
            f"for {rule.for_:g} s, min_samples {rule.min_samples} (podpulse defaults: "
            f"evaluation {default_rules().evaluation_interval:g} s, group_wait "
            f"{default_rules().route.group_wait:g} s)",
            f"{args.breaches} breaches, {args.gap:g} s apart, one endpoint each; "
            f"{args.rate:g} spans/s per endpoint, {args.baseline:g} s below the threshold "
            "(800-1500 ms) then above (6000-7000 ms) until all three delivered",
            "prom-am-defaults: scrape 1m, evaluation 1m, group_wait 30s (all defaults); "
            "prom-am-tuned: scrape 1s, evaluation 1s, group_wait 0s, group_interval 1s",
        ]
        report = ReportWriter(args.out, header, breaches, rec, events)
        asyncio.run(drive(base, breaches, rec, report, rate=args.rate, timeout_s=args.timeout))
        report.header.append(f"wall time of the run: {time.time() - started:.0f} s")
        report.write()
    print(args.out.read_text(), end="")


if __name__ == "__main__":
    main()
