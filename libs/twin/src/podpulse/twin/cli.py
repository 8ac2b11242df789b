"""``podpulse twin``: serve the local RunPod twin, or run the demo against one.

Every option of ``serve`` defaults to its ``TWIN_*`` (or ``TWIN_CALIBRATED_*``) variable, then
to the settings' own default; a flag given on the command line wins. The settings are built
once, in the command.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from podpulse.common.cli import env_default
from podpulse.common.output import console
from podpulse.common.runpod import Job, RunPodClient
from podpulse.common.settings import describe_settings_error

from ._app import serve
from ._embed import running_twin
from ._env_command import EnvCommandError, parse_assignments, send_env_patch
from .settings import CalibratedSettings, TwinSettings

__all__ = ["app"]

app = typer.Typer(help="The local twin of RunPod serverless.", no_args_is_help=True)


def _given(**options: Any) -> dict[str, Any]:
    # None means "not on the command line": the environment or the default decides.
    return {name: value for name, value in options.items() if value is not None}


def _build(
    twin: dict[str, Any], calibrated: dict[str, Any]
) -> tuple[TwinSettings, CalibratedSettings]:
    try:
        return TwinSettings(**twin), CalibratedSettings(**calibrated)
    except ValidationError as exc:
        # Exit 2 and one line naming the problem, as for a bad flag; never a value.
        print(f"podpulse twin: invalid settings: {describe_settings_error(exc)}", file=sys.stderr)
        raise typer.Exit(2) from None


@app.command("serve")
def serve_command(
    host: Annotated[
        str | None,
        typer.Option(help="Address to listen on.", show_default=env_default(TwinSettings, "host")),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="Port to listen on.", show_default=env_default(TwinSettings, "port")),
    ] = None,
    endpoint_id: Annotated[
        str | None,
        typer.Option(
            help="Endpoint id in client URLs.",
            show_default=env_default(TwinSettings, "endpoint_id"),
        ),
    ] = None,
    workers_min: Annotated[
        int | None,
        typer.Option(help="workersMin.", show_default=env_default(TwinSettings, "workers_min")),
    ] = None,
    workers_max: Annotated[
        int | None,
        typer.Option(help="workersMax.", show_default=env_default(TwinSettings, "workers_max")),
    ] = None,
    scaler_type: Annotated[
        str | None,
        typer.Option(
            metavar="<QUEUE_DELAY|REQUEST_COUNT>",
            help="How the twin scales.",
            show_default=env_default(TwinSettings, "scaler_type"),
        ),
    ] = None,
    scaler_value: Annotated[
        float | None,
        typer.Option(
            help="QUEUE_DELAY seconds (>= 0.5) or requests per worker.",
            show_default=env_default(TwinSettings, "scaler_value"),
        ),
    ] = None,
    idle_timeout: Annotated[
        int | None,
        typer.Option(
            help="Seconds idle before a worker stops.",
            show_default=env_default(TwinSettings, "idle_timeout_s"),
        ),
    ] = None,
    handler: Annotated[
        str | None,
        typer.Option(
            metavar="<handler>",
            help="calibrated, calibrated-stream, or MODULE:FUNC.",
            show_default=env_default(TwinSettings, "handler"),
        ),
    ] = None,
    worker_command: Annotated[
        str | None,
        typer.Option(
            help="Command each worker runs, split as a shell would, e.g. "
            "'python -m podpulse.worker' for the model.",
            show_default="TWIN_WORKER_COMMAND, else python -m podpulse.twin.worker",
        ),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            help="Jobs one twin worker runs at once.",
            show_default=env_default(TwinSettings, "worker_concurrency"),
        ),
    ] = None,
    exec_ms: Annotated[
        float | None,
        typer.Option(
            help="Calibrated median execution time, ms.",
            show_default=env_default(CalibratedSettings, "exec_ms"),
        ),
    ] = None,
    first_token_ms: Annotated[
        float | None,
        typer.Option(
            help="calibrated-stream: median time to an answer's first token, ms.",
            show_default=env_default(CalibratedSettings, "first_token_ms"),
        ),
    ] = None,
    token_ms: Annotated[
        float | None,
        typer.Option(
            help="calibrated-stream: median time between tokens, ms.",
            show_default=env_default(CalibratedSettings, "token_ms"),
        ),
    ] = None,
    job_loop: Annotated[
        str | None,
        typer.Option(
            metavar="<fast|sdk>",
            help="Workers' job loop: fast (podpulse's) or sdk (the runpod SDK's stock loop, "
            "1 s pauses at the concurrency limit).",
            show_default=env_default(TwinSettings, "job_loop"),
        ),
    ] = None,
    dispatch_ms: Annotated[
        float | None,
        typer.Option(
            help="Routing time from a job queued and a worker free to the job reaching it, ms.",
            show_default=env_default(TwinSettings, "dispatch_ms"),
        ),
    ] = None,
    api_latency_ms: Annotated[
        float | None,
        typer.Option(
            help="One-way network latency of the public API, ms.",
            show_default=env_default(TwinSettings, "api_latency_ms"),
        ),
    ] = None,
    cold_start_ms: Annotated[
        float | None,
        typer.Option(
            help="Extra cold-start delay, ms.",
            show_default=env_default(TwinSettings, "cold_start_ms"),
        ),
    ] = None,
    log_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where worker logs go.", show_default=env_default(TwinSettings, "log_dir")
        ),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", hidden=True, help="Refused: see TWIN_API_KEY.")
    ] = None,
) -> None:
    """Serve a RunPod-compatible endpoint on HOST:PORT with real worker processes.

    The bearer key clients must send comes from TWIN_API_KEY or the file TWIN_API_KEY_FILE
    names (default: the public local key); never from a flag, which `ps` would show.
    """
    if api_key is not None:
        # Refused rather than unknown, so that an old command line learns where the key goes.
        print(
            "podpulse twin serve: --api-key is not accepted (a command line shows in `ps`); "
            "set TWIN_API_KEY, or TWIN_API_KEY_FILE to a file holding the key",
            file=sys.stderr,
        )
        raise typer.Exit(2)
    command = None
    if worker_command is not None:
        try:
            command = shlex.split(worker_command)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--worker-command") from None
    settings, calibrated = _build(
        _given(
            host=host,
            port=port,
            endpoint_id=endpoint_id,
            workers_min=workers_min,
            workers_max=workers_max,
            scaler_type=scaler_type,
            scaler_value=scaler_value,
            idle_timeout_s=idle_timeout,
            handler=handler,
            worker_command=command,
            worker_concurrency=concurrency,
            job_loop=job_loop,
            dispatch_ms=dispatch_ms,
            api_latency_ms=api_latency_ms,
            cold_start_ms=cold_start_ms,
            log_dir=log_dir,
        ),
        _given(exec_ms=exec_ms, first_token_ms=first_token_ms, token_ms=token_ms),
    )
    console().print(
        f"twin serving endpoint [bold]{settings.endpoint_id}[/] at {settings.base_url} "
        f"(workers {settings.workers_min}..{settings.workers_max}, "
        f"worker {shlex.join(settings.worker_command)}, handler {settings.handler}, "
        f"job loop {settings.job_loop}); "
        "Ctrl-C stops it"
    )
    serve(settings, worker_env=calibrated.worker_env())


@app.command("env")
def env_command(
    assignments: Annotated[
        list[str] | None, typer.Argument(help="NAME=VALUE to set in every worker.")
    ] = None,
    unset: Annotated[
        list[str] | None,
        typer.Option(
            metavar="<name>", help="Drop a change made before (repeatable).", show_default="none"
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(help="The twin's address.", show_default="http://TWIN_HOST:TWIN_PORT"),
    ] = None,
) -> None:
    """Change a running twin's worker environment and roll its workers onto it.

    As a template change does on RunPod, every worker is replaced, a busy one after its job:
    `podpulse twin env TWIN_CALIBRATED_EXEC_MS=6000` makes the calibrated handler slow, and
    `--unset TWIN_CALIBRATED_EXEC_MS` fast again. No arguments: show the names set so far.
    """
    settings, _ = _build({}, {})
    changes = None
    if assignments or unset:
        try:
            changes = parse_assignments(assignments or [], unset or [])
        except ValueError as exc:
            print(f"podpulse twin env: {exc}", file=sys.stderr)
            raise typer.Exit(2) from None
    try:
        answer = send_env_patch(settings, changes, url=url)
    except EnvCommandError as exc:
        print(f"podpulse twin env: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    names = ", ".join(answer.get("env") or []) or "none"
    console().print(
        f"worker env overrides in force: {names}; revision {answer.get('revision')}; "
        f"workers to roll: {answer.get('workersToRoll')}",
        highlight=False,
    )


@app.command("demo")
def demo_command(
    jobs: Annotated[int, typer.Option(min=1, max=200, help="Jobs to send.")] = 8,
    workers: Annotated[int, typer.Option(min=1, max=8, help="Warm workers.")] = 2,
    exec_ms: Annotated[float, typer.Option(min=0, help="Calibrated execution time (ms).")] = 150,
) -> None:
    """Start a twin with warm workers, send a handful of jobs, and print their timings."""
    settings, calibrated = _build(
        {"workers_min": workers, "workers_max": workers},
        {"exec_ms": exec_ms, "distribution": "lognormal", "jitter": 0.3},
    )
    started = time.perf_counter()
    with running_twin(settings, calibrated) as twin:
        console().print(
            f"twin up at {twin.endpoint_url} with {workers} warm workers "
            f"in {time.perf_counter() - started:.1f} s; sending {jobs} jobs"
        )
        results = asyncio.run(_send(twin.endpoint_id, twin.api_key, twin.base_url, jobs))
    table = Table(title="jobs on the local twin (ms)")
    for column in ("job", "worker", "status", "delayTime", "executionTime", "total"):
        table.add_column(column, justify="right" if column[0] in "det" else "left")
    for job, total_ms in results:
        table.add_row(
            job.id[:8],
            job.worker_id or "-",
            job.status.value,
            str(job.delay_time_ms),
            str(job.execution_time_ms),
            f"{total_ms:.0f}",
        )
    console().print(table)
    if any(job.status.value != "COMPLETED" for job, _ in results):
        raise typer.Exit(1)


async def _send(endpoint_id: str, key: str, base_url: str, count: int) -> list[tuple[Job, float]]:
    async with RunPodClient(endpoint_id, key, base_url=base_url) as client:

        async def one(index: int) -> tuple[Job, float]:
            sent = time.perf_counter()
            job = await client.runsync({"question": f"demo job {index}"})
            return job, (time.perf_counter() - sent) * 1000

        return list(await asyncio.gather(*(one(i) for i in range(count))))
