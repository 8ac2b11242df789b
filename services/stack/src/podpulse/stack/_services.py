"""The stack's table: every service ``podpulse up`` may run, and what each needs.

A row per service (podpulse.stack._spec.ServiceSpec). The alerter's and the tagger's rows run
only where their members are installed, each found by its ``podpulse.cli`` entry point
(``alerter``, ``release``): a stack without them still runs the rest.
The prober's and the twin's variables are named here, as those services read them; the
stack never imports them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from podpulse.common.redis_process import redis_server_argv
from podpulse.common.settings import (
    ALERT_WEBHOOK_URL,
    ALERTER_RECEIVER_TOKEN,
    RUNPOD_API_KEY,
    SLACK_WEBHOOK_URL,
)

from ._spec import HttpProbe, LogLine, ServiceSpec, TcpProbe
from .settings import StackSettings

__all__ = ["LOCALHOST", "OwnRedis", "StackPlan", "TwinPlan", "enabled", "service_table"]

LOCALHOST = "127.0.0.1"
# Celery's worker logs "<nodename> ready." once it consumes; beat logs this as it starts.
_CELERY_READY = LogLine(r"@\S+ ready\.")
_BEAT_READY = LogLine(r"beat: Starting")


@dataclass(frozen=True)
class OwnRedis:
    """A redis-server the stack starts, because none answered at the URL."""

    executable: str
    port: int
    data_dir: Path


@dataclass(frozen=True)
class TwinPlan:
    """The local twin the stack runs, as the prober must address it."""

    endpoint_id: str
    api_key: str
    port: int

    @property
    def base_url(self) -> str:
        """RUNPOD_ENDPOINT_BASE_URL of a client of this twin."""
        return f"http://{LOCALHOST}:{self.port}/v2"

    def __repr__(self) -> str:  # the key stays out of logs and tracebacks
        return f"TwinPlan(endpoint_id={self.endpoint_id!r}, port={self.port})"


@dataclass(frozen=True)
class StackPlan:
    """Everything the table depends on, decided once by ``podpulse up``."""

    settings: StackSettings
    redis_url: str
    own_redis: OwnRedis | None
    twin: TwinPlan | None  # None: the hosted endpoint RUNPOD_ENDPOINT_ID names
    python: str
    podpulse: str  # the podpulse console script
    installed_commands: frozenset[str]
    started_at: float = 0.0  # Unix time; bus events from before it are not news to this stack

    @property
    def alerter_installed(self) -> bool:
        """Whether the alerter's command is installed."""
        return "alerter" in self.installed_commands


def joined(plan: StackPlan) -> list[str]:
    """What the stack uses, one line each, for its banner: the Redis (started or joined), the
    endpoint (the twin's URL, or the hosted one's id) and the alerter's URLs."""
    parts = urlsplit(plan.redis_url)
    # Host, port and database only: the URL may hold a password.
    redis_at = f"redis://{parts.hostname}:{parts.port or 6379}{parts.path}"
    lines = [
        f"redis: started at {redis_at} (data in {plan.own_redis.data_dir})"
        if plan.own_redis is not None
        else f"redis: joined the one answering at {redis_at}"
    ]
    if plan.twin is not None:
        lines.append(f"twin: endpoint {plan.twin.endpoint_id} at {plan.twin.base_url}")
    else:
        lines.append("endpoint: the hosted one RUNPOD_ENDPOINT_ID names")
    if plan.alerter_installed:
        alerter = f"http://{LOCALHOST}:{plan.settings.otlp_port}"
        lines.append(f"alerter: spans to {alerter}/v1/traces, alerts on {alerter}/metrics")
    return lines


def _otel_env(plan: StackPlan, environ: Mapping[str, str]) -> dict[str, str]:
    # Standard OTEL_* only. Spans go to the stack's alerter when there is one; without it,
    # exporting would fail against a port nobody listens on, so export nothing unless the
    # user chose an exporter themselves.
    if plan.alerter_installed:
        return {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{LOCALHOST}:{plan.settings.otlp_port}",
        }
    return {"OTEL_TRACES_EXPORTER": environ.get("OTEL_TRACES_EXPORTER", "none")}


def _prober_env(plan: StackPlan) -> dict[str, str]:
    settings = plan.settings
    env = {"PROBER_TARGET": "hosted", "PROBER_RESULTS_DIR": str(settings.results_dir)}
    if plan.twin is not None:
        # The stack's twin is the prober's endpoint; its key is the twin's (public by default).
        env |= {
            "RUNPOD_ENDPOINT_ID": plan.twin.endpoint_id,
            "RUNPOD_ENDPOINT_BASE_URL": plan.twin.base_url,
            "RUNPOD_API_KEY": plan.twin.api_key,
            "PROBER_SMOKE_EVERY_S": f"{settings.smoke_every_s:g}",
            "PROBER_SMOKE_CONCURRENCY": str(settings.smoke_concurrency),
            "PROBER_SMOKE_FIRST_AFTER_S": f"{settings.smoke_first_after_s:g}",
        }
    return env


def _watched(plan: StackPlan, environ: Mapping[str, str]) -> dict[str, str]:
    endpoint = plan.twin.endpoint_id if plan.twin is not None else environ.get("RUNPOD_ENDPOINT_ID")
    return {"ALERTER_ENDPOINT_IDS": endpoint} if endpoint else {}


def _tagger_env(plan: StackPlan, base: dict[str, str]) -> dict[str, str]:
    # The release gate takes only soaks of the endpoint's own API; with the twin, that is the
    # twin's (a podpulse.toml must still name the twin's endpoint id for a soak to release).
    if plan.twin is None:
        return base
    return {**base, "RUNPOD_ENDPOINT_BASE_URL": plan.twin.base_url}


def service_table(plan: StackPlan, environ: Mapping[str, str]) -> tuple[ServiceSpec, ...]:
    """Every row, in start order, whether or not its command is installed."""
    settings = plan.settings
    base = {
        "REDIS_URL": plan.redis_url,
        "PYTHONUNBUFFERED": "1",
        # Logs go to files: one JSON object a line, whatever the terminal is.
        "PODPULSE_LOG_FORMAT": "json",
        **_otel_env(plan, environ),
    }
    rows: list[ServiceSpec] = []
    bus: tuple[str, ...] = ()
    if plan.own_redis is not None:
        own = plan.own_redis
        rows.append(
            ServiceSpec(
                name="redis",
                argv=tuple(
                    redis_server_argv(own.executable, own.port, own.data_dir, None, persist=True)
                ),
                ready=TcpProbe(LOCALHOST, own.port),
                stop_last=True,
            )
        )
        bus = ("redis",)
    endpoint: tuple[str, ...] = ()
    if plan.twin is not None:
        twin = plan.twin
        rows.append(
            ServiceSpec(
                name="twin",
                argv=(
                    plan.podpulse,
                    "twin",
                    "serve",
                    "--host",
                    LOCALHOST,
                    "--port",
                    str(twin.port),
                    "--log-dir",
                    str(settings.log_dir / "twin-workers"),
                ),
                # The key as resolved (TWIN_API_KEY or its file), so no other row needs either.
                env={**base, "TWIN_API_KEY": twin.api_key},
                ready=HttpProbe(
                    f"http://{LOCALHOST}:{twin.port}/v2/{twin.endpoint_id}/health",
                    headers={"Authorization": f"Bearer {twin.api_key}"},
                ),
            )
        )
        endpoint = ("twin",)
    prober = {**base, **_prober_env(plan)}
    # The prober's spans carry the alerter's token where the user set one (its telemetry
    # sends it as the bearer), and the alerter requires it of them.
    token = (ALERTER_RECEIVER_TOKEN,)
    prober_secrets = ((RUNPOD_API_KEY,) if plan.twin is None else ()) + token
    worker_name = "podpulse-up-{}@%h"
    rows += [
        ServiceSpec(
            name="prober-worker",
            argv=(
                plan.python,
                "-m",
                "podpulse.prober",
                "worker",
                "-Q",
                "prober",
                "-c",
                str(settings.prober_concurrency),
                "-l",
                "INFO",
                "-n",
                worker_name.format("prober"),
            ),
            env=prober,
            secrets=prober_secrets,
            ready=_CELERY_READY,
            after=bus + endpoint,
        ),
        ServiceSpec(
            name="prober-beat",
            argv=(plan.python, "-m", "podpulse.prober", "beat", "-l", "INFO"),
            env=prober,
            secrets=prober_secrets,
            ready=_BEAT_READY,
            after=bus,
        ),
    ]
    alerter_env = {
        **base,
        "OTEL_TRACES_EXPORTER": "none",  # its own spans must not feed it
        # A joined Redis may hold other deployments' events, or this one's from before.
        "ALERTER_EVENTS_SINCE": f"{plan.started_at:.3f}",
        **_watched(plan, environ),
    }
    notify = (SLACK_WEBHOOK_URL, ALERT_WEBHOOK_URL)
    rows += [
        # The whole alerter (receive, evaluate, notify) in one command.
        ServiceSpec(
            name="alerter",
            argv=(
                plan.podpulse,
                "alerter",
                "serve",
                "--host",
                LOCALHOST,
                "--port",
                str(settings.otlp_port),
            ),
            env=alerter_env,
            secrets=notify + token,
            ready=TcpProbe(LOCALHOST, settings.otlp_port),
            after=bus,
            needs_command="alerter",
        ),
        # Its Celery side, the events on the alerter and notify queues.
        ServiceSpec(
            name="alerter-worker",
            argv=(
                plan.python,
                "-m",
                "podpulse.alerter",
                "worker",
                "-Q",
                "alerter,notify",
                "-l",
                "INFO",
                "-n",
                worker_name.format("alerter"),
            ),
            env=alerter_env,
            secrets=notify,
            ready=_CELERY_READY,
            after=bus,
            needs_command="alerter",
        ),
        # The tagger's worker on the tagger queue (auto-release behind the gate).
        ServiceSpec(
            name="tagger-worker",
            argv=(
                plan.python,
                "-m",
                "podpulse.tagger",
                "worker",
                "-Q",
                "tagger",
                "-l",
                "INFO",
                "-n",
                worker_name.format("tagger"),
            ),
            env=_tagger_env(plan, base),
            ready=_CELERY_READY,
            after=bus,
            needs_command="release",
        ),
    ]
    return tuple(rows)


def enabled(rows: tuple[ServiceSpec, ...], installed: Collection[str]) -> tuple[ServiceSpec, ...]:
    """The rows whose command is installed (or that need none)."""
    return tuple(row for row in rows if row.needs_command in (None, *installed))
