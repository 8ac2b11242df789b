"""The scaler model, podpulse advise, and advise and cost agreeing through one model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cost_helpers import job, write_run
from release_helpers import PODPULSE_TOML, soak_summary
from typer.testing import CliRunner

from podpulse.common.cli import app_from_installed
from podpulse.common.runpod import EndpointConfig, ScalerType
from podpulse.tagger.cost._advise import MIN_RATE_RPS
from podpulse.tagger.cost._month import MIN_RUN_REQUESTS, MIN_RUN_S, run_warnings
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


def test_every_request_queued_through_a_cold_start_counts_as_waiting_for_it() -> None:
    """Four requests queued while the one flex worker starts all waited for its cold start
    (counted once each); on a warm worker the same four wait for none."""
    burst = _fixed([0.0, 0.0, 0.0, 0.0], 1.0)
    cold = simulate(_config(0, 1), burst, cold_start_s=30)
    warm = simulate(_config(1, 1), burst, cold_start_s=30)
    assert (cold.cold_starts, cold.cold_start_waits) == (1, 4)
    assert (warm.cold_starts, warm.cold_start_waits) == (0, 0)


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


def test_advise_writes_a_tiny_rate_out_without_an_exponent(cli, tmp_path: Path) -> None:
    """A rate of a few requests a day reads 0.00005 req/s in the table's heading and the
    assumptions, not 5e-05."""
    write_run(tmp_path / "results", "calib", [job(i, i * 4.0, 2800) for i in range(20)])
    result = cli("advise", "--rate", "0.00005", "--gpu", "4090 PRO", "--from", "calib")
    assert result.exit_code in (0, 1), result.output
    assert "configurations at 0.00005 req/s" in result.output
    assert "assumes: 0.00005 req/s" in result.output
    assert "e-0" not in result.output


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


def _two_a_second(results: Path, run_id: str, seconds: float) -> None:
    """A closed-loop-like run: two requests a second of ~1 s jobs for ``seconds``."""
    count = int(seconds * 2)
    write_run(results, run_id, [job(i, i * 0.5, 900 + 40 * (i % 5)) for i in range(count)])


def test_cost_and_advise_price_the_same_config_at_the_same_rate_alike(cli, tmp_path: Path) -> None:
    """One model: on the same run, cost (at the measured rate) and advise (without --rate,
    and with that rate given) price podpulse.toml's 2/5 the same, cold starts included."""
    (tmp_path / "podpulse.toml").write_text(PODPULSE_TOML)
    _two_a_second(tmp_path / "results", "soak", 60)
    cost = cli("cost", "--from", "soak", "--json")
    assert cost.exit_code == 0, cost.output
    report = json.loads(cost.output)
    current = report["options"][0]
    rate = report["assumptions"]["rate_rps"]
    assert rate == pytest.approx(2.0, rel=0.01)
    for given in ([], ["--rate", repr(rate)]):
        result = cli("advise", "--from", "soak", "--max-workers", "1", *given, "--json")
        assert result.exit_code in (0, 1), result.output
        advice = json.loads(result.output)
        assert advice["assumptions"] == report["assumptions"] | (
            {"rate_source": "--rate", "warnings": advice["assumptions"]["warnings"]}
            if given
            else {}
        )
        mine = advice["current"]
        assert mine["config"] == current["config"]
        assert mine["monthly_usd"] == current["monthly_usd"]
        assert mine["cold_starts_per_month"] == current["cold_starts_per_month"]
        assert mine["cold_start_share_pct"] == current["cold_start_share_pct"]


def test_both_commands_print_their_assumptions_and_warn_on_a_run_too_short(
    cli, tmp_path: Path
) -> None:
    """60 s at 2 req/s (the issue's soak): each command says the rate and where it came
    from, the exec P50/P95, the prices and the month, and warns the run is too short."""
    (tmp_path / "podpulse.toml").write_text(PODPULSE_TOML)
    _two_a_second(tmp_path / "results", "soak", 60)
    for command in (["cost"], ["advise", "--max-workers", "1"]):
        result = cli(*command, "--from", "soak")
        assert result.exit_code in (0, 1), result.output
        out = result.output
        assert "assumes: 2 req/s (measured: 120 requests over 60 s of soak)" in out
        assert "exec P50 980 ms, P95 1,060 ms (120 requests of soak)" in out
        assert "always-on $0.7560/h a worker, flex $0.00031/s; a month is 720 h" in out
        assert (
            "warning: soak: 120 requests over 60 s is too short to extrapolate to a month "
            "(at least 100 requests and 10 minutes)"
        ) in out


def test_a_run_of_ten_minutes_is_not_warned_and_a_given_rate_needs_only_requests(
    cli, tmp_path: Path
) -> None:
    """12 minutes at 2 req/s supports a month: no warning. With --rate the run supplies only
    execution times, so 60 s of 120 requests is enough."""
    (tmp_path / "podpulse.toml").write_text(PODPULSE_TOML)
    _two_a_second(tmp_path / "results", "long", 720)
    _two_a_second(tmp_path / "results", "short", 60)
    long = cli("cost", "--from", "long")
    assert long.exit_code == 0, long.output
    assert "warning" not in long.output
    given = cli("cost", "--from", "short", "--rate", "0.5")
    assert given.exit_code == 0, given.output
    assert "assumes: 0.5 req/s (--rate)" in given.output
    assert "warning" not in given.output


def test_the_short_run_thresholds_are_100_requests_and_10_minutes() -> None:
    """At the thresholds a run supports a month; a request or a second less does not."""

    def warned(requests: int, run_s: float, *, measured: bool = True) -> bool:
        return bool(
            run_warnings(["r"], requests=requests, run_s=run_s, rate_measured=measured,
                         closed_loop=None)
        )  # fmt: skip

    assert not warned(MIN_RUN_REQUESTS, MIN_RUN_S)
    assert warned(MIN_RUN_REQUESTS - 1, MIN_RUN_S)
    assert warned(MIN_RUN_REQUESTS, MIN_RUN_S - 1)
    assert not warned(MIN_RUN_REQUESTS, 60, measured=False)


def test_a_closed_loop_run_warns_that_its_rate_is_the_clients_not_the_traffic(
    cli, tmp_path: Path
) -> None:
    """A soak's summary.json says closed loop at concurrency 2: a rate measured from it is
    flagged (Poisson arrivals at it queue more); with --rate it is not."""
    _two_a_second(tmp_path / "results", "soak-1", 720)
    (tmp_path / "results" / "soak-1" / "summary.json").write_text(
        soak_summary("soak-1").model_dump_json()
    )
    measured = cli("cost", "--workers-min", "2", "--gpu", "4090 PRO", "--from", "soak-1")
    assert measured.exit_code == 0, measured.output
    assert "warning: soak-1 was a closed loop at concurrency 2" in measured.output
    given = cli("cost", "--workers-min", "2", "--gpu", "4090 PRO", "--from", "soak-1",
                "--rate", "2")  # fmt: skip
    assert "closed loop" not in given.output


def test_a_cold_start_of_zero_is_taken_as_given(cli, tmp_path: Path) -> None:
    """--cold-start 0 (workers that start at once) is priced as 0 s, not as the 45 s default
    that `or` made of it."""
    (tmp_path / "podpulse.toml").write_text(PODPULSE_TOML)
    _two_a_second(tmp_path / "results", "soak", 60)
    for command in (["cost"], ["advise", "--max-workers", "1"]):
        result = cli(*command, "--from", "soak", "--cold-start", "0", "--json")
        assert result.exit_code in (0, 1), result.output
        assert json.loads(result.output)["assumptions"]["cold_start_s"] == 0
