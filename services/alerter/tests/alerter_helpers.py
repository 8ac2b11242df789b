"""Test helpers for the evaluator half: an in-memory WindowStore, a fake clock, a recorder, and
loopback receivers that misbehave (one dripping its answer, one answering a fixed status)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiohttp import web

from podpulse.alerter._windows._contract import Metric, Observation, SeriesKey, Stat, StatValue
from podpulse.common.testing import free_port

KEEP_S = 3600.0


def program(*names: str) -> tuple[str | None, pytest.MarkDecorator]:
    """The first of *names* on PATH, and the mark for tests that run it: skipped where it is
    not installed, except under .ci/run (PODPULSE_TESTS_REQUIRE_PROGRAMS=1), which installs
    it, so that there a missing one fails instead of passing unseen."""
    path = next((found for name in names if (found := shutil.which(name))), None)
    required = os.environ.get("PODPULSE_TESTS_REQUIRE_PROGRAMS") == "1"
    reason = f"{names[0]} is not installed (.ci/run installs it)"
    return path, pytest.mark.skipif(path is None and not required, reason=reason)


class DictStore:
    """A WindowStore over a plain list of observations; statistics computed exactly."""

    def __init__(self) -> None:
        self.observations: list[Observation] = []

    def add(self, observation: Observation) -> None:
        self.observations.append(observation)

    def series(self, now: float) -> list[SeriesKey]:
        return sorted({o.series for o in self.observations if now - KEEP_S < o.at <= now},
                      key=lambda s: (s.endpoint, s.model or ""))  # fmt: skip

    def stat(
        self, key: SeriesKey, metric: Metric, stat: Stat, window_s: float, now: float
    ) -> StatValue:
        obs = [o for o in self.observations if o.series == key and now - window_s < o.at <= now]
        if metric == "fail_rate":
            jobs = [o for o in obs if o.failed is not None]  # None: a GenAI span, not a job
            if not jobs:
                return StatValue(None, 0)
            return StatValue(sum(bool(o.failed) for o in jobs) / len(jobs), len(jobs))
        values = sorted(v for o in obs if (v := getattr(o, metric)) is not None)
        if not values:
            return StatValue(None, 0)
        if stat == "mean":
            value = sum(values) / len(values)
        elif stat == "min":
            value = values[0]
        elif stat == "max":
            value = values[-1]
        elif stat == "rate":
            value = len(values) / window_s
        else:
            q = {"p50": 0.5, "p95": 0.95, "p99": 0.99}[stat]
            value = values[max(0, math.ceil(q * len(values)) - 1)]
        return StatValue(value, len(values))

    def feed(self, endpoint: str, at: float, n: int, **values: float) -> None:
        """*n* jobs of *endpoint* ending at *at*."""
        failed = bool(values.pop("failed", False))
        for _ in range(n):
            self.add(Observation(SeriesKey(endpoint), at=at, failed=failed, **values))


@dataclass
class FakeClock:
    now: float = 1_700_000_000.0
    slept: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@dataclass
class Recorder:
    """A real HTTP receiver on loopback that records every delivery (or answers a fault)."""

    port: int
    deliveries: list[tuple[dict[str, str], object]] = field(default_factory=list)
    # Codes to answer, in order, before accepting; each may carry a Retry-After.
    faults: list[tuple[int, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def bodies(self) -> list:
        with self.lock:
            return [body for _, body in self.deliveries]

    def keys(self) -> list[str]:
        with self.lock:
            return [headers.get("Idempotency-Key", "") for headers, _ in self.deliveries]


@contextmanager
def recorder(port: int | None = None) -> Iterator[Recorder]:
    """Run a recording receiver in a thread with its own event loop; stop it afterwards."""
    rec = Recorder(port=port or free_port())
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runner_box: list[web.AppRunner] = []

    async def handle(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        with rec.lock:
            if rec.faults:
                code, retry_after = rec.faults.pop(0)
                headers = {"Retry-After": retry_after} if retry_after else {}
                return web.Response(status=code, headers=headers)
            rec.deliveries.append((dict(request.headers), body))
        return web.Response(status=200, text="ok")

    async def start() -> None:
        app = web.Application()
        app.router.add_post("/hook", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", rec.port).start()
        runner_box.append(runner)
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()),
                                              loop.run_forever()), daemon=True)  # fmt: skip
    thread.start()
    ready.wait(10)
    try:
        yield rec
    finally:
        asyncio.run_coroutine_threadsafe(runner_box[0].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@dataclass
class Misbehaving:
    """A loopback receiver that misbehaves on purpose; how many POSTs it was sent."""

    port: int
    posts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@contextmanager
def _serving(
    answer: Callable[[BaseHTTPRequestHandler, threading.Event], None],
) -> Iterator[Misbehaving]:
    stop = threading.Event()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                box.posts += 1
            try:
                answer(self, stop)
            except OSError:  # the client hung up mid-answer (as it should, on its timeout)
                self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    box = Misbehaving(port=server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield box
    finally:
        stop.set()  # a drip still going ends now
        server.shutdown()
        server.server_close()
        thread.join(10)


@contextmanager
def dripping(every_s: float = 0.1, length: int = 40) -> Iterator[Misbehaving]:
    """A receiver that answers 200 at once, then its body one byte every *every_s*: no single
    read waits long, the whole answer takes *length* x *every_s*."""

    def answer(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(length))
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.flush()
        for _ in range(length):
            if stop.wait(every_s):
                return
            handler.wfile.write(b"x")
            handler.wfile.flush()

    with _serving(answer) as box:
        yield box


@contextmanager
def answering(status: int, headers: Mapping[str, str] | None = None) -> Iterator[Misbehaving]:
    """A receiver that answers every POST with *status* and *headers*, no body."""

    def answer(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    with _serving(answer) as box:
        yield box


def rules_yaml(**route: str) -> str:
    """One exec rule (p95 > 5000 over 1m, for 4s, 5 samples) and a fast route."""
    opts = {"group_wait": "1s", "group_interval": "10s", "repeat_interval": "1h"} | route
    lines = "\n".join(f"  {k}: {v}" for k, v in opts.items())
    return f"""
evaluation_interval: 2s
route:
{lines}
inhibit: [{{source_severity: critical, target_severity: warning, equal: [endpoint]}}]
rules:
  - name: ExecP95High
    metric: exec_ms
    stat: p95
    op: ">"
    threshold: 5000
    window: 1m
    for: 4s
    min_samples: 5
    severity: critical
    annotations: {{summary: "exec P95 {{{{ value }}}} ms on {{{{ endpoint }}}}"}}
  - name: DelayP50High
    metric: delay_ms
    stat: p50
    op: ">"
    threshold: 2000
    window: 1m
    min_samples: 5
    severity: warning
"""


def pipeline(client, prefix, text, clock, receivers, *, events=None, am=None):
    """An evaluator and a notifier on real Redis, as a restarted process would build them."""
    import httpx  # noqa: F401  (receivers are built by the caller)

    from podpulse.alerter._notify._dispatch import Dispatcher
    from podpulse.alerter._notify._notifier import Notifier
    from podpulse.alerter._notify._outbox import DeliveryMetrics, Outbox
    from podpulse.alerter._notify._silences import SilenceStore
    from podpulse.alerter._rules._evaluator import Evaluator, EvaluatorMetrics
    from podpulse.alerter._rules._state import StateStore
    from podpulse.alerter._rules._yaml import parse_rules
    from podpulse.common.retry import Backoff

    config = parse_rules(text)
    metrics = DeliveryMetrics()  # the outbox's: what the tests read
    store = DictStore()
    evaluator = Evaluator(store, config, StateStore(client, prefix), metrics=EvaluatorMetrics(),
                          on_change=events.append if events is not None else None)  # fmt: skip
    silences = SilenceStore(client, prefix)
    backoff = Backoff(base_s=1.0, max_s=8.0, sleep=clock.sleep, jitter=lambda: 0.0)
    outbox = Outbox(client, prefix, receivers, metrics=metrics, backoff=backoff,
                    sleep=clock.sleep)  # fmt: skip
    grouped = [r.name for r in receivers if r.name != "alertmanager"]
    notifier = Notifier(client, prefix, config, Dispatcher(client, prefix, config, silences),
                        outbox, grouped_receivers=grouped,
                        alertmanager_receiver=am, resend_s=60.0)  # fmt: skip
    return store, evaluator, notifier, silences, metrics
