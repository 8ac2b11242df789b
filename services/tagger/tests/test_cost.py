"""podpulse cost: prices, the monthly model and the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cost_helpers import job, write_run
from release_helpers import PODPULSE_TOML as _GOOD_TOML
from typer.testing import CliRunner, Result

from podpulse.common.cli import app_from_installed
from podpulse.common.runpod import EndpointConfig, ScalerType
from podpulse.tagger.cost._month import MONTH_S, estimate_month
from podpulse.tagger.cost._prices import PriceError, PriceTable
from podpulse.tagger.cost._scaler_model import Workload


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """`podpulse ...` in this process, in an empty folder, results under tmp/results."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TAGGER_COST_RESULTS_DIR", str(tmp_path / "results"))
    runner = CliRunner()
    app = app_from_installed()

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args), catch_exceptions=False)

    return invoke


def test_a_gpu_name_finds_its_pool_and_an_unknown_one_says_how_to_add_it() -> None:
    """RunPod's GPU name and the pool name both price as 4090 PRO; an unknown GPU is refused."""
    table = PriceTable()
    assert table.lookup("NVIDIA GeForce RTX 4090").pool == "4090 PRO"
    assert table.lookup("4090 pro").flex_per_s == 0.00031
    with pytest.raises(PriceError, match=r'add \[prices."<pool>"\]'):
        table.lookup("Voodoo 5")


def test_two_always_on_workers_at_forty_cents_cost_576_a_month(cli) -> None:
    """The user's figure: 2 x $0.40/h x 720 h = $576.00, without run data."""
    result = cli("cost", "--workers-min", "2", "--price-per-hour", "0.40", "--gpu", "4090 PRO")
    assert result.exit_code == 0, result.output
    assert "$576.00" in result.output
    assert "pass --from RUN_ID" in result.output


def _fixed(arrivals: list[float], exec_s: float) -> Workload:
    return Workload(
        arrivals_s=tuple(arrivals),
        exec_s=(exec_s,) * len(arrivals),
        overhead_s=(0.0,) * len(arrivals),
    )


def _config(mn: int, mx: int, idle: int = 180) -> EndpointConfig:
    return EndpointConfig(
        workers_min=mn,
        workers_max=mx,
        idle_timeout_s=idle,
        scaler_type=ScalerType.QUEUE_DELAY,
        scaler_value=1,
    )


_4090 = PriceTable().lookup("4090 PRO")


def test_sparse_flex_traffic_bills_a_cold_start_each_and_every_request_waits_for_one() -> None:
    """Jobs 1,000 s apart with a 180 s idle timeout: a cold start per job, all of them
    waited for, and cold starts scaled from the simulated horizon to the month."""
    workload = _fixed([i * 1000.0 for i in range(4)], 10.0)
    month = estimate_month(_config(0, 5), workload, price=_4090, cold_start_s=30, job_loop="fast")
    assert month.prediction.cold_starts == 4
    assert month.cold_start_wait_pct == 100.0
    assert month.cold_starts == pytest.approx(4 * MONTH_S / month.prediction.horizon_s)
    # Each worker: its cold start, its job, then the 180 s idle timeout it waits out.
    assert month.prediction.flex_worker_s == pytest.approx(4 * (30 + 10 + 180))
    assert month.flex_usd == pytest.approx(
        month.prediction.flex_worker_s * MONTH_S / month.prediction.horizon_s * 0.00031
    )


def test_always_on_workers_absorb_traffic_up_to_their_number() -> None:
    """Two overlapping jobs on two warm workers bill no flex second and no cold start: the
    month is the two active workers alone."""
    month = estimate_month(
        _config(2, 5), _fixed([0.0, 1.0], 5.0), price=_4090, cold_start_s=30, job_loop="fast"
    )
    assert (month.flex_usd, month.cold_starts, month.cold_start_wait_pct) == (0, 0, 0)
    assert month.monthly_usd == round(2 * 0.00021 * MONTH_S, 2)


def test_cost_from_a_run_prices_the_config_and_flex_at_the_measured_rate(
    cli, tmp_path: Path
) -> None:
    """--from a requests.csv: the rate is measured from it (5 gaps over 3,000 s), both
    options priced by the model; six requests earn the too-short warning."""
    write_run(tmp_path / "results", "sparse", [job(i, i * 600.0, 2_000) for i in range(6)])
    result = cli("cost", "--workers-min", "1", "--gpu", "4090 PRO", "--from", "sparse", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assumptions = report["assumptions"]
    assert assumptions["rate_rps"] == pytest.approx(5 / 3000)
    assert assumptions["rate_source"] == "measured: 6 requests over 3,000 s of sparse"
    assert assumptions["exec_p50_ms"] == 2000
    assert "too short to extrapolate" in assumptions["warnings"][0]
    current, flex = report["options"]
    assert current["config"]["workers_min"] == 1
    assert current["always_on_usd"] == pytest.approx(0.00021 * 3600 * 720, abs=0.01)
    assert flex["config"]["workers_min"] == 0
    assert flex["always_on_usd"] == 0
    # A request every 10 minutes on average, a 180 s idle timeout: most wait a cold start.
    assert flex["cold_start_share_pct"] > 50
    assert flex["monthly_usd"] < current["monthly_usd"]


def test_podpulse_toml_supplies_gpu_workers_and_price_overrides(cli, tmp_path: Path) -> None:
    """Without flags the file's GPU and workersMin are priced; [prices] replaces the rate."""
    (tmp_path / "podpulse.toml").write_text(
        _GOOD_TOML + '\n[prices."4090 PRO"]\nflex_per_s = 0.0003\nactive_per_s = 0.0001\n'
    )
    result = cli("cost", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["options"][0]["always_on_usd"] == pytest.approx(2 * 0.36 * 720)


@pytest.mark.parametrize(
    ("args", "toml", "expected"),
    [
        (["--gpu", "4090 PRO"], None, "pass --workers-min N"),
        (["--workers-min", "1"], None, "pass --gpu NAME"),
        (["--workers-min", "1", "--gpu", "Voodoo"], None, "no price for GPU 'Voodoo'"),
        (["--workers-min", "1", "--gpu", "A100", "--price-per-hour", "nan"], None, "(0, 1000]"),
        (["--workers-min", "1", "--gpu", "A100", "--from", "nope"], None, "no run 'nope'"),
        (["--workers-min", "1", "--gpu", "A100", "--from", "../x"], None, "--from '../x'"),
        (["--workers-min", "3", "--workers-max", "2", "--gpu", "A100"], None, "below workersMin 3"),
        (["--workers-min", "1", "--gpu", "A100", "--rate", "0"], None, "--rate takes requests"),
        (["--workers-min", "1", "--gpu", "A100", "--rate", "1"], None, "to draw execution times"),
        ([], "[endpoint]\nid = 3\n", "endpoint.id (line 2)"),
        ([], '[prices."x"]\nflex_per_s = -1\n', "prices.x.flex_per_s (line 2)"),
        # tomllib recurses once per nesting level: deep enough, and it runs out of stack.
        ([], "x = " + "[" * 50_000 + "]" * 50_000 + "\n", "nested too deeply to be read"),
    ],
)
def test_bad_flags_and_files_exit_2_with_one_line(
    cli, tmp_path: Path, args: list[str], toml: str | None, expected: str
) -> None:
    """Each bad flag, run or podpulse.toml: exit 2, one line naming it, no traceback."""
    if toml is not None:
        (tmp_path / "podpulse.toml").write_text(toml)
    result = cli("cost", *args)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_damaged_requests_csv_is_refused_naming_file_and_line(cli, tmp_path: Path) -> None:
    """A row with a bad number: exit 2 naming the file and line, never a shorter run."""
    folder = write_run(tmp_path / "results", "bad", [job(0, 0, 1_000)])
    path = folder / "requests.csv"
    path.write_text(path.read_text().replace(",1000,", ",lots,").replace(",1000.0,", ",lots,"))
    result = cli("cost", "--workers-min", "0", "--gpu", "A100", "--from", "bad")
    assert result.exit_code == 2, result.output
    assert "requests.csv, line 2: exec_ms: not a number" in result.output


def test_a_run_of_one_request_has_no_rate_and_asks_for_one(cli, tmp_path: Path) -> None:
    """One request measures no rate: exit 2 asking for --rate; with --rate it is priced."""
    write_run(tmp_path / "results", "one", [job(0, 0, 1_000)])
    args = ["cost", "--workers-min", "1", "--gpu", "A100", "--from", "one"]
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        "error: one sent too few requests to measure a rate: pass --rate"
    )
    assert cli(*args, "--rate", "0.1").exit_code == 0
