"""The scaler model and podpulse advise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cost_helpers import job, write_run
from typer.testing import CliRunner

from podpulse.common.cli import app_from_installed
from podpulse.common.runpod import EndpointConfig, ScalerType
from podpulse.tagger.cost._advise import MIN_RATE_RPS
from podpulse.tagger.cost._scaler_model import Workload, simulate


def _config(mn: int, mx: int, scaler: str = "QUEUE_DELAY", value: float = 1, idle: int = 180):
    return EndpointConfig(
        workers_min=mn,
        workers_max=mx,
        idle_timeout_s=idle,
        scaler_type=ScalerType(scaler),
        scaler_value=value,
    )


def _fixed(arrivals: list[float], exec_s: float) -> Workload:
    return Workload(
        arrivals_s=tuple(arrivals),
        exec_s=(exec_s,) * len(arrivals),
        overhead_s=(0.0,) * len(arrivals),
    )


def test_a_free_warm_worker_takes_each_job_at_once() -> None:
    """Jobs spaced wider than their execution time on one warm worker never queue."""
    p = simulate(_config(1, 1), _fixed([1.0, 3.0, 5.0], 1.0), cold_start_s=30)
    assert (p.delay_p95_ms, p.total_p95_ms, p.cold_starts) == (0, 1000, 0)


def test_the_stock_sdk_loop_makes_back_to_back_jobs_wait_for_its_one_second_sleep() -> None:
    """A job queued behind a 0.2 s job waits until the loop wakes 1 s after the take."""
    p = simulate(_config(1, 1), _fixed([0.0, 0.01], 0.2), cold_start_s=30, job_loop="sdk")
    assert p.delay_p95_ms == pytest.approx(990, abs=1)
    assert p.exec_p50_ms == pytest.approx(250)  # plus the loop's ~50 ms in executionTime


def test_queue_delay_starts_a_worker_only_after_the_delay_and_pays_a_cold_start() -> None:
    """With a 10 s job busy, a second request waits value (2 s) + a tick + the 5 s cold start."""
    p = simulate(_config(1, 2, value=2), _fixed([0.0, 0.0], 10.0), cold_start_s=5)
    assert p.cold_starts == 1
    assert p.peak_workers == 2
    assert p.delay_p95_ms == pytest.approx(7050, abs=60)


def test_request_count_scales_to_the_jobs_at_once() -> None:
    """REQUEST_COUNT 1 starts a worker per queued job at the next tick, up to workersMax."""
    p = simulate(
        _config(0, 3, "REQUEST_COUNT", 1), _fixed([0.0, 0.0, 0.0, 0.0], 1.0), cold_start_s=2
    )
    assert (p.cold_starts, p.peak_workers) == (3, 3)


def test_idle_workers_beyond_workers_min_stop_after_the_idle_timeout() -> None:
    """Two requests 100 s apart with a 5 s idle timeout need two cold starts; 180 s needs one."""
    short = simulate(_config(0, 1, idle=5), _fixed([0.0, 100.0], 1.0), cold_start_s=2)
    long = simulate(_config(0, 1, idle=180), _fixed([0.0, 100.0], 1.0), cold_start_s=2)
    assert (short.cold_starts, long.cold_starts) == (2, 1)
    assert short.flex_worker_s < long.flex_worker_s


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """`podpulse ...` in this process, in an empty folder, results under tmp/results."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TAGGER_COST_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("TAGGER_ADVISE_REQUESTS", "500")
    runner = CliRunner()
    app = app_from_installed()
    return lambda *args: runner.invoke(app, list(args), catch_exceptions=False)


def test_advise_recommends_the_cheapest_config_that_meets_the_slo(cli, tmp_path: Path) -> None:
    """1 s jobs at 1.5 req/s need two warm workers; cheaper ones fail the SLO, saying why."""
    write_run(
        tmp_path / "results", "calib", [job(i, i * 2.0, 1000 + 10 * (i % 7)) for i in range(50)]
    )
    result = cli("advise", "--rate", "1.5", "--gpu", "4090 PRO", "--from", "calib", "--json")
    assert result.exit_code == 0, result.output
    advice = json.loads(result.output)
    chosen = advice["chosen"]
    assert chosen["total_p95_ms"] <= 8000
    assert chosen["config"]["workers_min"] >= 1
    cheaper = [c for c in advice["candidates"] if c["monthly_usd"] < chosen["monthly_usd"]]
    assert cheaper
    assert all("ms >" in c["verdict"] for c in cheaper)
    table = cli("advise", "--rate", "1.5", "--gpu", "4090 PRO", "--from", "calib")
    assert "recommended:" in table.output
    assert "why (not)" in table.output


def test_advise_exits_1_when_nothing_meets_the_slo(cli, tmp_path: Path) -> None:
    """9 s jobs break the 3 s exec P50 whatever the scaling: exit 1, no recommendation."""
    write_run(tmp_path / "results", "slow", [job(i, i * 20.0, 9000) for i in range(10)])
    result = cli("advise", "--rate", "0.1", "--gpu", "A100", "--from", "slow", "--max-workers", "2")
    assert result.exit_code == 1, result.output
    assert "no configuration" in result.output
    assert "exec P50 9,000 ms > 3,000 ms" in result.output


@pytest.mark.parametrize("rate", [2.0, 0.1, 0.01, MIN_RATE_RPS])
@pytest.mark.parametrize(
    "config",
    [_config(0, 5, idle=5), _config(0, 5, "REQUEST_COUNT", 1, idle=5), _config(2, 5, value=4)],
)
def test_the_simulated_events_are_a_few_per_request_whatever_the_rate(
    rate: float, config: EndpointConfig
) -> None:
    """At a low rate every request waits out a cold start: the model does not tick through
    it, so its work (events processed) stays a few per request, as at 2 req/s."""
    requests = 400
    workload = Workload.draw(
        rate_rps=rate, requests=requests, exec_ms=[2788.0, 2847.0], overhead_ms=[50.0], seed=1
    )
    prediction = simulate(config, workload, cold_start_s=45.0, job_loop="sdk")
    assert prediction.events <= 8 * requests
    if rate <= 0.01 and config.workers_min == 0:
        assert prediction.cold_starts >= requests // 2  # the case that used to tick for minutes


def test_advise_at_a_low_rate_answers_and_below_one_request_a_month_refuses(
    cli, tmp_path: Path
) -> None:
    """0.01 req/s gets advice; a rate under one request a month (1e-308 overflowed) is exit 2
    with the floor named."""
    write_run(tmp_path / "results", "calib", [job(i, i * 4.0, 2800) for i in range(20)])
    low = cli("advise", "--rate", "0.01", "--gpu", "4090 PRO", "--from", "calib", "--json")
    assert low.exit_code == 0, low.output
    # One always-on worker: at 0.01 req/s every request would otherwise wait a cold start.
    assert json.loads(low.output)["chosen"]["config"]["workers_min"] == 1
    tiny = cli("advise", "--rate", "1e-308", "--gpu", "4090 PRO", "--from", "calib")
    assert tiny.exit_code == 2, tiny.output
    assert tiny.output.strip() == (
        "error: --rate takes requests per second from 0.00000039 (one a month) to 1000, got 1e-308"
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--rate", "0"], "--rate takes requests per second"),
        (["--rate", "inf"], "--rate takes requests per second"),
        (["--rate", "1", "--job-loop", "slow"], "--job-loop must be fast or sdk"),
        (["--rate", "1"], "no run in"),
        (["--rate", "1", "--from", "missing"], "no run 'missing'"),
        (["--rate", "1", "--from", "../up"], "--from '../up'"),
    ],
)
def test_bad_advise_flags_exit_2_with_one_line(cli, args: list[str], expected: str) -> None:
    """Each bad flag: exit 2 and one line naming it."""
    result = cli("advise", "--gpu", "4090 PRO", *args)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert len(result.output.strip().splitlines()) == 1
