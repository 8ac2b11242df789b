"""podpulse cost: prices, the traffic replay and the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cost_helpers import job, write_run
from release_helpers import PODPULSE_TOML as _GOOD_TOML
from typer.testing import CliRunner, Result

from podpulse.common.cli import app_from_installed
from podpulse.tagger.cost._estimate import Traffic, bill
from podpulse.tagger.cost._prices import PriceError, PriceTable


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


def test_sparse_traffic_prices_busy_seconds_idle_tails_and_cold_starts() -> None:
    """Two 10 s jobs 1,000 s apart on flex: 2 cold starts, 20 s busy, two full idle tails."""
    traffic = Traffic.from_records(["r"], [job(0, 0, 10_000), job(1, 1000, 10_000)])
    billing = bill(traffic, warm=0, idle_timeout_s=180, cold_start_s=30, max_workers=5)
    assert (billing.cold_starts, billing.cold_start_waits) == (2, 2)
    assert billing.flex_busy_s == pytest.approx(20)
    assert billing.flex_idle_s == pytest.approx(360)
    assert billing.flex_cold_s == pytest.approx(60)


def test_a_job_inside_the_idle_timeout_reuses_the_worker_and_bills_the_gap() -> None:
    """A second job 100 s after the first (timeout 180 s) pays the 90 s gap, not a cold start."""
    traffic = Traffic.from_records(["r"], [job(0, 0, 10_000), job(1, 100, 10_000)])
    billing = bill(traffic, warm=0, idle_timeout_s=180, cold_start_s=30, max_workers=5)
    assert billing.cold_starts == 1
    # 40 s: the first job ends at 30 (cold) + 10; the gap to 100 is 60 s, then a final 180 s.
    assert billing.flex_idle_s == pytest.approx(60 + 180)


def test_always_on_workers_absorb_traffic_up_to_their_number() -> None:
    """Two overlapping jobs on two warm workers bill no flex second and no cold start."""
    traffic = Traffic.from_records(["r"], [job(0, 0, 5_000), job(1, 1, 5_000)])
    billing = bill(traffic, warm=2, idle_timeout_s=180, cold_start_s=30, max_workers=5)
    assert (billing.flex_s, billing.cold_starts) == (0, 0)


def test_cost_from_a_run_compares_always_on_with_flex_in_json(cli, tmp_path: Path) -> None:
    """--from a real requests.csv: both options, the flex one with busy time and cold starts."""
    write_run(tmp_path / "results", "sparse", [job(i, i * 600.0, 2_000) for i in range(6)])
    result = cli("cost", "--workers-min", "1", "--gpu", "4090 PRO", "--from", "sparse", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    always_on, flex = report["options"]
    assert always_on["always_on_usd"] == pytest.approx(0.00021 * 3600 * 720, abs=0.01)
    assert flex["workers_min"] == 0
    assert flex["cold_start_share_pct"] == 100.0
    assert report["busy_s"] == pytest.approx(12.0)
    # 6 cold starts (45 s) + 12 s busy + 6 idle tails (180 s) over 3,000 + 2 + 180 s.
    billed = 6 * 45 + 12 + 6 * 180
    assert flex["flex_usd"] == pytest.approx(billed * 0.00031 * 2_592_000 / 3182, rel=1e-3)


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
