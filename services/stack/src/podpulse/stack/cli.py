"""``podpulse up``: the whole stack as local processes, until Ctrl-C.

Settings are built once here (flags win over ``STACK_*``, ``REDIS_URL`` and the twin's
``TWIN_*``); a bad one is one line on stderr and exit 2. Then the supervisor runs the table
(podpulse.stack._services) and the status view draws it until SIGINT or SIGTERM, which stop
everything; a second signal cuts the grace short.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import threading
import time
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from pydantic import ValidationError
from rich.console import Console

from podpulse.common.cli import ENTRY_POINT_GROUP, env_default
from podpulse.common.output import console as output_console
from podpulse.common.redis_process import find_redis_server, wait_for_ping
from podpulse.common.retry import Backoff
from podpulse.common.settings import (
    RUNPOD_API_KEY,
    CommonSettings,
    SecretError,
    describe_settings_error,
    settings_variable,
)
from podpulse.twin.settings import TwinSettings

from ._env import service_env
from ._services import (
    LOCALHOST,
    OwnRedis,
    StackPlan,
    TwinPlan,
    enabled,
    joined,
    service_table,
)
from ._supervisor import Supervisor, SupervisorTimings
from ._view import StatusView
from .settings import StackSettings

__all__ = ["up"]

_EXIT_USAGE = 2
_TICK_S = 0.1
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_REDIS_PING_S = 1.0


class UsageError(Exception):
    """Something the user must change before the stack can start; the message says what."""


def up(
    redis_url: Annotated[
        str | None,
        typer.Option(
            help="Redis to use; started here when none answers on loopback.",
            show_default=env_default(CommonSettings, "redis_url"),
        ),
    ] = None,
    twin_port: Annotated[
        int | None,
        typer.Option(
            help="Port of the local twin.", show_default=env_default(StackSettings, "twin_port")
        ),
    ] = None,
    otlp_port: Annotated[
        int | None,
        typer.Option(
            help="Port of the alerter's OTLP/HTTP receiver.",
            show_default=env_default(StackSettings, "otlp_port"),
        ),
    ] = None,
    log_dir: Annotated[
        Path | None,
        typer.Option(
            help="Per-service logs and status.json.",
            show_default=env_default(StackSettings, "log_dir"),
        ),
    ] = None,
    results_dir: Annotated[
        Path | None,
        typer.Option(
            help="The prober's results.", show_default=env_default(StackSettings, "results_dir")
        ),
    ] = None,
) -> None:
    """Run the stack on this machine until Ctrl-C.

    Redis, the twin or a hosted endpoint, the prober's worker and beat, and the alerter and
    tagger when installed.
    """
    console = output_console()
    try:
        plan = _plan(redis_url, twin_port, otlp_port, log_dir, results_dir)
    except UsageError as exc:
        print(f"podpulse up: {exc}", file=sys.stderr)
        raise typer.Exit(_EXIT_USAGE) from None
    raise typer.Exit(run_stack(plan, console))


def _given(**options: Any) -> dict[str, Any]:
    return {name: value for name, value in options.items() if value is not None}


def _plan(
    redis_url: str | None,
    twin_port: int | None,
    otlp_port: int | None,
    log_dir: Path | None,
    results_dir: Path | None,
) -> StackPlan:
    try:
        settings = StackSettings(
            **_given(
                twin_port=twin_port, otlp_port=otlp_port, log_dir=log_dir, results_dir=results_dir
            )
        )
        common = CommonSettings(**_given(redis_url=redis_url))
    except ValidationError as exc:
        raise UsageError(f"invalid settings: {describe_settings_error(exc)}") from None
    _check_redis_port(common.redis_url)
    installed = frozenset(ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP))
    twin = _twin_plan(common, settings)
    plan = StackPlan(
        settings=settings,
        redis_url=common.redis_url,
        own_redis=_redis(common.redis_url, settings),
        twin=twin,
        python=sys.executable,
        podpulse=_podpulse_script(),
        installed_commands=installed,
        started_at=time.time(),
    )
    ports = [("the twin", settings.twin_port)] if twin is not None else []
    if plan.alerter_installed:
        ports.append(("the alerter", settings.otlp_port))
    for who, port in ports:
        if not _port_free(port):
            raise UsageError(f"port {port} for {who} is in use (another podpulse up or twin?)")
    return plan


def _check_redis_port(url: str) -> None:
    # The scheme is the common settings' check; a port that is not a number would surface as
    # a ValueError from deep inside the first ping. The URL is not echoed: it may hold a
    # password.
    try:
        urlsplit(url).port  # noqa: B018  # parsing it is the check
    except ValueError:
        raise UsageError(
            "invalid settings: redis_url (--redis-url or REDIS_URL): its port is not a number "
            "from 0 to 65535"
        ) from None


def _twin_plan(common: CommonSettings, settings: StackSettings) -> TwinPlan | None:
    if common.runpod_endpoint_id:
        try:
            RUNPOD_API_KEY.require()
        except SecretError as exc:
            raise UsageError(f"RUNPOD_ENDPOINT_ID is set (hosted), but {exc}") from None
        return None
    try:
        twin = TwinSettings(port=settings.twin_port, host=LOCALHOST)
    except ValidationError as exc:
        raise UsageError(f"invalid twin settings: {describe_settings_error(exc)}") from None
    return TwinPlan(twin.endpoint_id, twin.api_key.get_secret_value(), settings.twin_port)


def _redis(url: str, settings: StackSettings) -> OwnRedis | None:
    """None when a Redis answers at *url*; else the one to start there (loopback only)."""
    if not wait_for_ping(url, _REDIS_PING_S):
        return None
    parts = urlsplit(url)
    # Host and port only: the URL may hold a password.
    where = f"{parts.hostname}:{parts.port or 6379}"
    if parts.scheme != "redis" or parts.hostname not in _LOOPBACK:
        raise UsageError(f"no Redis answers at {where}; start it or pass --redis-url")
    executable = find_redis_server()
    if executable is None:
        raise UsageError(
            f"no Redis answers at {where} and redis-server is not installed "
            "(apt install redis-server, brew install redis), or pass --redis-url"
        )
    data_dir = settings.log_dir / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    return OwnRedis(executable, parts.port or 6379, data_dir.resolve())


def _podpulse_script() -> str:
    beside = Path(sys.executable).with_name("podpulse")
    found = str(beside) if beside.exists() else shutil.which("podpulse")
    if found is None:
        raise UsageError("the podpulse command is not installed beside this Python")
    return found


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOCALHOST, port))
        except OSError:
            return False
        return True


def run_stack(plan: StackPlan, console: Console) -> int:
    """Supervise the plan's services until SIGINT/SIGTERM; 0 once everything has stopped."""
    settings = plan.settings
    rows = enabled(service_table(plan, os.environ), plan.installed_commands)
    twin_key = settings_variable(TwinSettings, "api_key")
    withheld = (twin_key, settings_variable(TwinSettings, "api_key_file"))
    envs = {row.name: service_env(row, os.environ, withheld=withheld) for row in rows}
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    signals = _Signals()
    metrics = f"http://{LOCALHOST}:{settings.otlp_port}/metrics"
    view = StatusView(
        console,
        status_path=settings.log_dir / "status.json",
        results_dir=settings.results_dir,
        metrics_url=metrics if plan.alerter_installed else None,
    )
    supervisor = Supervisor(
        rows,
        log_dir=settings.log_dir,
        envs=envs,
        timings=SupervisorTimings(
            ready_timeout_s=settings.ready_timeout_s,
            stop_grace_s=settings.stop_grace_s,
            backoff=Backoff(base_s=settings.restart_base_s, max_s=settings.restart_max_s),
            stable_after_s=settings.stable_after_s,
        ),
        on_event=view.event,
    )
    target = "the local twin" if plan.twin is not None else "the hosted endpoint"
    with signals, view:
        started = time.monotonic()
        view.event(
            f"podpulse up: {', '.join(r.name for r in rows)} against {target}; "
            f"logs in {settings.log_dir}; Ctrl-C stops everything"
        )
        for line in joined(plan):
            view.event(line)
        up_reported = False
        try:
            while not signals.stop.wait(_TICK_S):
                supervisor.tick()
                ready = supervisor.all_ready()
                if ready and not up_reported:
                    up_reported = True
                    view.event(f"stack up in {time.monotonic() - started:.1f} s")
                view.update(supervisor.statuses(), all_ready=ready)
        finally:
            stopping = time.monotonic()
            view.event("stopping every service")
            supervisor.stop(hurry=lambda: signals.count > 1)
            view.update(supervisor.statuses(), all_ready=False)
            view.event(f"stopped in {time.monotonic() - stopping:.1f} s")
    return 0


class _Signals:
    """SIGINT and SIGTERM set :attr:`stop`; :attr:`count` says how many came."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.count = 0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        self.stop.set()

    def __enter__(self) -> _Signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *_: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
