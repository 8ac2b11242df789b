"""Hardening of the prober's inputs, one case per reported fault: damaged or tampered run
folders under `report`, unusable flags and settings, prompt files that used to raise, and the
soak's last window. All in-process, no twin."""

from __future__ import annotations

import json
import os
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from podpulse.common.cli import ENTRY_POINT_GROUP, build_app
from podpulse.common.probe_spec import ProbeSpec
from podpulse.common.request_records import CSV_COLUMNS, Outcome, RequestRecord
from podpulse.common.summary import TargetInfo, parse_summary
from podpulse.prober import (
    ProberSettings,
    PromptSetError,
    RunStats,
    load_prompts,
    summarize,
)
from podpulse.prober._results_dir import (
    write_json,
    write_summary_file,
    write_target,
)
from podpulse.prober._soak import soak_verdict

_APP = build_app(entry_points(group=ENTRY_POINT_GROUP))
_TARGET = TargetInfo(kind="twin", endpoint_id="ep-twin", base_url="http://127.0.0.1:9/v2")
_START = 1_700_000_000.0


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """`podpulse ...` in this process, results in tmp_path, no RunPod or prober variables."""
    for name in list(os.environ):
        if name.startswith(("RUNPOD_", "PROBER_", "OTEL_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PROBER_RESULTS_DIR", str(tmp_path))
    runner = CliRunner()

    def invoke(*args: str, **env: str) -> Result:
        return runner.invoke(_APP, list(args), env=env, catch_exceptions=False)

    return invoke


def _records(count: int, *, total_s: float = 0.4, step_s: float = 1.0) -> list[RequestRecord]:
    return [
        RequestRecord(
            run_id="r", seq=seq, concurrency=1, intended=_START + seq * step_s,
            sent=_START + seq * step_s, done=_START + seq * step_s + total_s,
            outcome=Outcome.OK, delay_ms=20.0, exec_ms=300.0, output_tokens=40,
        )
        for seq in range(count)
    ]  # fmt: skip


def _passing_summary(folder: Path, kind: str = "load") -> dict[str, Any]:
    """A passing summary.json written to folder (named after its run), returned as JSON."""
    run_id = folder.name
    if kind == "sweep":
        spec = ProbeSpec(run_id=run_id, kind="sweep", concurrency=(1, 2), runs=5, warmup=0)
        stats = {level: RunStats.from_records(_records(5)) for level in (1, 2)}
    else:
        spec = ProbeSpec(run_id=run_id, runs=5, warmup=0)
        stats = {1: RunStats.from_records(_records(5))}
    summary = summarize(spec, stats, ProberSettings(), target=_TARGET)
    assert summary.passed
    write_summary_file(folder, summary)
    data: dict[str, Any] = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    return data


def _rewrite(folder: Path, data: Any) -> None:
    (folder / "summary.json").write_text(json.dumps(data), encoding="utf-8")


def _refused(done: Result, *needles: str) -> None:
    assert done.exit_code == 2, done.output
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "verdict" not in done.stdout


def _without_slo(data: dict[str, Any]) -> dict[str, Any]:
    level = {k: v for k, v in data["levels"][0].items() if k != "slo"}
    return data | {"levels": [level]}


def _at(data: Any, dotted: str, value: Any) -> Any:
    copy = json.loads(json.dumps(data))
    *path, last = dotted.split(".")
    node = copy
    for part in path:
        node = node[int(part)] if part.isdigit() else node[part]
    node[int(last) if last.isdigit() else last] = value
    return copy


# --- item 9: report on a damaged summary.json -------------------------------------------------


@pytest.mark.parametrize(
    ("damage", "field"),
    [
        (lambda d: [], "<summary>: Input should be an object"),
        (lambda d: {}, "schema_version: Field required"),
        (lambda d: None, "<summary>: Input should be an object"),
        (lambda d: {k: v for k, v in d.items() if k != "levels"}, "levels: Field required"),
        (_without_slo, "levels.0.slo: Field required"),
        (lambda d: _at(d, "levels.0.latency_ms.total.p50", "420.0"),
         "levels.0.latency_ms.total.p50"),
        (lambda d: d | {"kind": "sweep"}, "spec names another run or kind"),
        (lambda d: d | {"kind": "sweep", "spec": d["spec"] | {"kind": "sweep"}},
         "a sweep, and only a sweep"),
    ],
    ids=["list", "empty", "null", "no-levels", "no-slo", "string-number", "load-as-sweep",
         "load-as-sweep-spec"],
)  # fmt: skip
def test_report_on_a_damaged_summary_exits_2_naming_the_field(
    cli, tmp_path: Path, damage: Any, field: str
) -> None:
    """Each damaged summary.json exits 2 with one line naming the file and the field."""
    folder = tmp_path / "run"
    _rewrite(folder, damage(_passing_summary(folder)))
    _refused(cli("report", "run"), "run/summary.json is not a valid RunSummary", field)


def test_report_on_a_deeply_nested_summary_exits_2(cli, tmp_path: Path) -> None:
    """100,000 nested brackets are a JSON error, not a RecursionError."""
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "summary.json").write_text("[" * 100_000, encoding="utf-8")
    _refused(cli("report", "deep"), "recursion limit exceeded")


# --- item 10: a tampered verdict -------------------------------------------------------------


@pytest.mark.parametrize("fake", ["yes", "true", 1])
def test_report_refuses_a_verdict_that_is_not_a_boolean(cli, tmp_path: Path, fake: Any) -> None:
    """passed: "yes" (or "true", or 1) was coerced to True and shown as PASS with exit 0."""
    folder = tmp_path / "run"
    _rewrite(folder, _passing_summary(folder) | {"passed": fake})
    _refused(cli("report", "run"), "passed: Input should be a valid boolean")


@pytest.mark.parametrize(
    ("dotted", "value", "why"),
    [
        # The numbers fail the SLO; the row still claims its old margin and PASS.
        ("levels.0.latency_ms.total.p95", 9000.0, "SLO line Total P95 reports 400.0"),
        # The row's actual edited with its margin left: the headroom no longer adds up.
        ("levels.0.slo.rows.3.actual", 7999.0, "is not the headroom of actual 7999.0"),
        # The success rate edited to pass over counts that fail.
        ("levels.0.success_rate_pct", 50.0, "success_rate_pct 50.0 is not ok/requests"),
        ("levels.0.slo.thresholds.exec_p50_ms", 100000.0, "threshold 3000.0 is not the SLO's"),
    ],
)
def test_report_refuses_a_verdict_its_numbers_contradict(
    cli, tmp_path: Path, dotted: str, value: float, why: str
) -> None:
    """An edit anywhere between the verdict and the measured numbers is refused, naming it."""
    folder = tmp_path / "run"
    _rewrite(folder, _at(_passing_summary(folder), dotted, value))
    _refused(cli("report", "run"), why)


def test_report_refuses_a_sweep_recommendation_its_table_does_not_give(cli, tmp_path: Path) -> None:
    """A sweep whose table row was flipped to FAIL but kept its recommendation is refused."""
    folder = tmp_path / "sweep"
    data = _passing_summary(folder, "sweep")
    _rewrite(folder, _at(data, "sweep.table.1.status", "FAIL"))
    _refused(cli("report", "sweep"), "the recommendation contradicts the table")


# --- items 9 and 10: report on a damaged requests.csv -----------------------------------------


def _dead_run(tmp_path: Path, csv_text: str) -> None:
    folder = tmp_path / "dead"
    write_json(folder / "spec.json", ProbeSpec(run_id="dead", runs=10).model_dump(mode="json"))
    write_target(folder, _TARGET)
    (folder / "requests.csv").write_text(csv_text, encoding="utf-8")


def _row(**changes: object) -> str:
    row = _records(1)[0].to_row() | changes
    return ",".join("" if row[name] is None else str(row[name]) for name in CSV_COLUMNS)


@pytest.mark.parametrize(
    ("csv_text", "why"),
    [
        ("what,ever\n1,2\n", "line 1 is not a requests.csv header"),
        (",".join(CSV_COLUMNS) + "\n" + _row(error="x" * 200_000) + "\n", "line 2: not CSV"),
        (",".join(CSV_COLUMNS) + "\n" + _row(done="1e400") + "\n", "line 2: done: inf is outside"),
        (",".join(CSV_COLUMNS) + "\n" + _row(seq="9" * 5000) + "\n", "line 2: seq: not a count"),
        (",".join(CSV_COLUMNS) + "\n" + _row(outcome="MAYBE") + "\n" + _row() + "\n",
         "line 2: outcome"),
    ],
    ids=["garbage-header", "200k-field", "done-1e400", "huge-seq", "bad-outcome"],
)  # fmt: skip
def test_report_on_a_damaged_csv_exits_2_naming_file_line_and_column(
    cli, tmp_path: Path, csv_text: str, why: str
) -> None:
    """A garbage header is refused (it read as a clean 0-request run); a bad row names its
    line and column (it raised a traceback)."""
    _dead_run(tmp_path, csv_text)
    _refused(cli("report", "dead"), "dead/requests.csv", why)


def test_only_the_last_row_may_be_cut_short(cli, tmp_path: Path) -> None:
    """A crash cuts the last row: it is skipped; the same cut in the middle is damage."""
    header, row = ",".join(CSV_COLUMNS), _row()
    cut = row.rsplit(",", 3)[0]
    _dead_run(tmp_path, f"{header}\n{row}\n{cut}\n")
    done = cli("report", "dead", "--json")
    assert done.exit_code == 1, done.output
    assert parse_summary(done.stdout).level.requests == 1
    _dead_run(tmp_path, f"{header}\n{cut}\n{row}\n")
    _refused(cli("report", "dead"), "line 2")


# --- item 9 and 13: flags and settings refused before anything starts -------------------------


def test_an_unusable_results_dir_exits_2_naming_it(cli, tmp_path: Path) -> None:
    """--results-dir that is a file, or under /proc, exits 2 before a twin is started."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    _refused(
        cli("loadtest", "--runs", "1", "--results-dir", str(afile)),
        f"--results-dir {afile} is not a folder",
    )
    _refused(
        cli("loadtest", "--runs", "1", "--results-dir", "/proc/x"),
        "--results-dir /proc/x cannot be created",
    )
    done = cli("soak", "--runs", "1", PROBER_RESULTS_DIR=str(afile / "sub"))
    _refused(done, "PROBER_RESULTS_DIR")


@pytest.mark.parametrize(("command", "flag"), [("loadtest", "--duration"), ("soak", "--window")])
def test_an_infinite_duration_or_window_is_refused(cli, command: str, flag: str) -> None:
    """A 400-digit number parsed as inf and ran; now it exits 2 naming the flag."""
    _refused(cli(command, "--runs", "1", flag, "9" * 400), f"{flag} takes a positive duration")


def test_a_base_url_with_userinfo_is_refused_without_the_password(cli) -> None:
    """RUNPOD_ENDPOINT_BASE_URL with user:pass@ exits 2 naming the variable, never the password."""
    url = "https://user:hunter2@api.runpod.ai/v2"
    done = cli("loadtest", "--runs", "1", "--target", "hosted", RUNPOD_ENDPOINT_ID="abc123",
               RUNPOD_API_KEY="k", RUNPOD_ENDPOINT_BASE_URL=url)  # fmt: skip
    _refused(done, "RUNPOD_ENDPOINT_BASE_URL", "must not carry a user or password")
    assert "hunter2" not in done.output


def test_a_key_shaped_endpoint_id_is_refused_without_echoing_it(cli) -> None:
    """An API key in RUNPOD_ENDPOINT_ID was printed and written to target.json; now refused."""
    key = "rpa_" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCD"
    done = cli("loadtest", "--runs", "1", "--target", "hosted", RUNPOD_ENDPOINT_ID=key,
               RUNPOD_API_KEY="k")  # fmt: skip
    _refused(done, "RUNPOD_ENDPOINT_ID", "not an endpoint id")
    assert key not in done.output
    assert key.lower() not in done.output


def test_a_sweep_cron_error_names_the_variable_not_the_value(cli) -> None:
    """PROBER_SWEEP_CRON with the wrong field count says so without quoting the value."""
    done = cli("loadtest", "--runs", "1", PROBER_SWEEP_CRON="secret-looking value")
    _refused(done, "PROBER_SWEEP_CRON", "must have 5 fields")
    assert "secret-looking" not in done.output


# --- item 9: prompt files that raised ---------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b"[" * 100_000, "not JSON (recursion limit exceeded"),
        (b'{"question": "q", "max_new_tokens": ' + b"9" * 5000 + b"}",
         "not JSON (number out of range"),
        (b'{"question": "\\ud800"}', "not JSON"),
        (b'{"question": "q\xff"}', "not UTF-8"),
        (b'{"question": NaN}', "'question': Input should be a valid string"),
    ],
    ids=["deep", "huge-int", "surrogate", "bad-utf8", "nan"],
)  # fmt: skip
def test_a_bad_prompt_line_is_one_error_naming_it(tmp_path: Path, line: bytes, why: str) -> None:
    """Lines that raised RecursionError, ValueError or a file-wide decode error name line 2."""
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"question": "fine"}\n' + line + b"\n")
    with pytest.raises(PromptSetError, match=r"line 2: ") as caught:
        load_prompts(path)
    assert why in str(caught.value)


# --- item 14: the soak's last window ----------------------------------------------------------


def test_a_soak_tail_counts_in_its_last_window_at_the_real_rate() -> None:
    """A 30 s soak at concurrency 2 with 10 s windows: the last two requests finish 0.06 and
    0.13 s after the end. They count in window 2, not a 0.13 s window of their own at 15.9
    req/s; a run that ends inside a window marks it partial with its rate over what it lasted."""
    records = []
    for seq in range(30):
        sent = _START + seq
        records.append(RequestRecord(run_id="r", seq=seq, concurrency=2, intended=sent,
                                     sent=sent, done=sent + 1.0, outcome=Outcome.OK))  # fmt: skip
    tail = [_START + 30.06, _START + 30.126]
    records += [RequestRecord(run_id="r", seq=30 + i, concurrency=2, intended=done - 1,
                              sent=done - 1, done=done, outcome=Outcome.OK)
                for i, done in enumerate(tail)]  # fmt: skip
    stats = RunStats.from_records(records, window_s=10, origin=_START)
    verdict = soak_verdict(stats, p95_threshold_ms=4000, min_change_pct=10, duration_s=30)
    assert [w.index for w in verdict.windows] == [0, 1, 2]
    assert [w.partial for w in verdict.windows] == [False, False, False]
    assert max(w.throughput_rps or 0 for w in verdict.windows) < 1.5
    # Without a set duration (a --runs soak) the run ends at its last result: 25 s in.
    short = RunStats.from_records(records[:25], window_s=10, origin=_START)
    rows = soak_verdict(short, p95_threshold_ms=4000, min_change_pct=10).windows
    assert (rows[-1].partial, rows[-1].covered_s, rows[-1].requests) == (True, 5.0, 6)
    assert rows[-1].throughput_rps == 1.2
