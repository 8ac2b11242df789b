"""``podpulse twin``: serve the local RunPod twin, or run the demo against one."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated

import typer
from pydantic import SecretStr, ValidationError
from rich.console import Console
from rich.table import Table

from podpulse.common.runpod import EndpointConfig, Job, RunPodClient, ScalerType

from .twin import DEFAULT_API_KEY, TwinConfig, serve
from .twin.testing import running_twin

__all__ = ["app"]

app = typer.Typer(help="The local twin of RunPod serverless.", no_args_is_help=True)
console = Console()


def _scaling(
    workers_min: int, workers_max: int, scaler_type: str, scaler_value: float, idle_timeout: int
) -> EndpointConfig:
    try:
        return EndpointConfig(
            workers_min=workers_min,
            workers_max=workers_max,
            scaler_type=ScalerType(scaler_type),
            scaler_value=scaler_value,
            idle_timeout_s=idle_timeout,
        )
    except (ValidationError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8765,
    endpoint_id: Annotated[str, typer.Option(help="Endpoint id in client URLs.")] = "podpulse-twin",
    api_key: Annotated[
        str,
        typer.Option(
            envvar="PODPULSE_TWIN_API_KEY",
            show_default=False,
            help="Bearer key clients must send (default: the public local key).",
        ),
    ] = DEFAULT_API_KEY,
    workers_min: Annotated[int, typer.Option(min=0, help="workersMin.")] = 1,
    workers_max: Annotated[int, typer.Option(min=1, help="workersMax.")] = 3,
    scaler_type: Annotated[
        str, typer.Option(help="QUEUE_DELAY or REQUEST_COUNT.", case_sensitive=False)
    ] = "QUEUE_DELAY",
    scaler_value: Annotated[
        float, typer.Option(help="QUEUE_DELAY seconds (>= 0.5) or requests per worker.")
    ] = 1.0,
    idle_timeout: Annotated[int, typer.Option(help="Seconds idle before a worker stops.")] = 5,
    handler: Annotated[str, typer.Option(help="calibrated, model, or MODULE:FUNC.")] = "calibrated",
    exec_ms: Annotated[
        float | None, typer.Option(min=0, help="Calibrated handler execution time (ms).")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="WORKER_MAX_CONCURRENCY for each worker.")
    ] = None,
    dispatch_ms: Annotated[float, typer.Option(min=0, help="Extra dispatch latency (ms).")] = 0,
    cold_start_ms: Annotated[float, typer.Option(min=0, help="Extra cold-start delay (ms).")] = 0,
    log_dir: Annotated[Path | None, typer.Option(help="Where worker logs go.")] = None,
) -> None:
    """Serve a RunPod-compatible endpoint on HOST:PORT with real worker processes."""
    worker_env: dict[str, str] = {}
    if exec_ms is not None:
        worker_env["CALIBRATED_EXEC_MS"] = str(exec_ms)
    if concurrency is not None:
        worker_env["WORKER_MAX_CONCURRENCY"] = str(concurrency)
    try:
        config = TwinConfig(
            host=host,
            port=port,
            endpoint_id=endpoint_id,
            api_key=SecretStr(api_key),
            scaling=_scaling(
                workers_min, workers_max, scaler_type.upper(), scaler_value, idle_timeout
            ),
            handler=handler,
            worker_env=worker_env,
            dispatch_ms=dispatch_ms,
            cold_start_ms=cold_start_ms,
            log_dir=log_dir
            or TwinConfig.model_fields["log_dir"].get_default(call_default_factory=True),
        )
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from None
    console.print(
        f"twin serving endpoint [bold]{config.endpoint_id}[/] at {config.base_url} "
        f"(workers {workers_min}..{workers_max}, handler {handler}); Ctrl-C stops it"
    )
    serve(config)


@app.command("demo")
def demo_command(
    jobs: Annotated[int, typer.Option(min=1, max=200, help="Jobs to send.")] = 8,
    workers: Annotated[int, typer.Option(min=1, max=8, help="Warm workers.")] = 2,
    exec_ms: Annotated[float, typer.Option(min=0, help="Calibrated execution time (ms).")] = 150,
) -> None:
    """Start a twin with warm workers, send a handful of jobs, and print their timings."""
    env = {"CALIBRATED_EXEC_MS": str(exec_ms), "CALIBRATED_DISTRIBUTION": "lognormal",
           "CALIBRATED_JITTER": "0.3"}  # fmt: skip
    started = time.perf_counter()
    with running_twin(workers_min=workers, workers_max=workers, env=env) as twin:
        console.print(
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
    console.print(table)
    if any(job.status.value != "COMPLETED" for job, _ in results):
        raise typer.Exit(1)


async def _send(endpoint_id: str, key: str, base_url: str, count: int) -> list[tuple[Job, float]]:
    async with RunPodClient(endpoint_id, key, base_url=base_url) as client:

        async def one(index: int) -> tuple[Job, float]:
            sent = time.perf_counter()
            job = await client.runsync({"question": f"demo job {index}"})
            return job, (time.perf_counter() - sent) * 1000

        return list(await asyncio.gather(*(one(i) for i in range(count))))
