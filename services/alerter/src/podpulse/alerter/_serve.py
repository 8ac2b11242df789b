"""``podpulse alerter serve``: the ingest app under uvicorn, evaluation and delivery beside it.

One process, one event loop: the ingest app answers ``POST /v1/traces`` and ``/metrics``,
and its lifespan runs two loops of an embedded scheduler — an evaluation every
``evaluation_interval`` (in a thread: the evaluator's Redis reads are blocking) and the
outbox's deliveries, woken at once when an evaluation queued something and every half
second otherwise (retries fall due, a Celery worker queued an event). Everything that must
survive lives in Redis (windows, states, groups, the outbox), so a stop loses nothing: on
Ctrl-C or SIGTERM uvicorn stops taking spans, the loops are cancelled (an interrupted send
stays in the outbox and is sent again under the same idempotency key), the windows get their
last flush, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Callable
from types import FrameType

import httpx
import redis
import structlog
import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from ._ingest._http import create_ingest_app
from ._notify._outbox import DeliveryMetrics
from ._pipeline import Alerter, configured_receivers, window_store
from ._rules._evaluator import EvaluatorMetrics
from ._rules._event_alerts import EventAlertStore
from ._rules._model import RulesConfig
from ._rules._state import AlertsCollector, StateStore
from .settings import AlerterSettings

__all__ = ["Scheduler", "create_serving_app", "serve"]

log = structlog.get_logger("podpulse.alerter")

_DELIVER_EVERY_S = 0.5


class Scheduler:
    """Evaluates every *interval_s* and delivers when woken or every *deliver_every_s*."""

    def __init__(
        self,
        alerter: Alerter,
        *,
        clock: Callable[[], float] = time.time,
        deliver_every_s: float = _DELIVER_EVERY_S,
    ) -> None:
        self._alerter = alerter
        self._clock = clock
        self._interval_s = alerter.config.evaluation_interval
        self._deliver_every_s = deliver_every_s
        self._wake = asyncio.Event()

    async def _evaluations(self) -> None:
        due = time.monotonic()
        while True:
            try:
                queued = await asyncio.to_thread(self._alerter.evaluate, self._clock())
            except Exception as exc:  # Redis down, or a bug: log it, evaluate again next time
                log.warning("scheduler.evaluation_failed", error=f"{type(exc).__name__}: {exc}")
                queued = None
            if queued:
                self._wake.set()
            # Fixed-rate ticks: a slow evaluation does not push every later one back.
            due = max(due + self._interval_s, time.monotonic())
            await asyncio.sleep(due - time.monotonic())

    async def _deliveries(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._deliver_every_s)
            self._wake.clear()
            try:
                await self._alerter.deliver(self._clock())
            except Exception as exc:  # the outbox keeps what was not sent; try again
                log.warning("scheduler.delivery_failed", error=f"{type(exc).__name__}: {exc}")

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Both loops, for the duration of the block; cancelled when it ends."""
        tasks = [asyncio.create_task(self._evaluations()), asyncio.create_task(self._deliveries())]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def create_serving_app(
    client: redis.Redis, settings: AlerterSettings, config: RulesConfig
) -> Starlette:
    """The ingest app whose lifespan also runs the scheduler; /metrics shows ``ALERTS`` and
    the evaluator's and the outbox's counters."""
    counters = CollectorRegistry()
    evaluator_metrics = EvaluatorMetrics(counters)
    delivery_metrics = DeliveryMetrics(counters)
    store = window_store(client, settings)
    states = StateStore(client, settings.state_prefix)
    alerts = AlertsCollector(states, config, EventAlertStore(client, settings.state_prefix))
    app = create_ingest_app(settings, store, collectors=[alerts, counters])
    ingesting = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The ingest app's flush loop outlives the scheduler: its last flush comes after the
        # last evaluation, so the windows in Redis hold every span this process took.
        async with ingesting(app), httpx.AsyncClient(timeout=settings.notify_timeout_s) as http:
            alerter = Alerter.build(
                client,
                settings,
                config,
                configured_receivers(settings, http),
                evaluator_metrics=evaluator_metrics,
                delivery_metrics=delivery_metrics,
                store=store,
            )
            names = alerter.notifier.outbox.receivers
            log.info(
                "alerter.serving",
                rules=len(config.rules),
                receivers=names,
                evaluation_interval_s=config.evaluation_interval,
            )
            async with Scheduler(alerter).running():
                yield

    app.router.lifespan_context = lifespan
    return app


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def serve(
    client: redis.Redis, settings: AlerterSettings, config: RulesConfig, host: str, port: int
) -> None:
    """Run the whole alerter in the foreground until Ctrl-C or SIGTERM (then exit 0)."""
    app = create_serving_app(client, settings, config)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
    )
    # uvicorn re-raises the signal it stopped on once it has shut down cleanly; a SIGTERM
    # is then an ordinary exit, as a SIGINT's KeyboardInterrupt is made one below.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
