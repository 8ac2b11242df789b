"""Generated damage to the prober's inputs: prompt files through load_prompts, and summary.json
and requests.csv through the `report` command in-process. Every bad input is one clear error
(naming the line, or the file and field); nothing raises past the reader or the command."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import typer.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.main import get_command
from typer.testing import CliRunner

from podpulse.common.cli import ENTRY_POINT_GROUP, build_app
from podpulse.common.probe_spec import ProbeSpec
from podpulse.common.request_records import CSV_COLUMNS, Outcome, RequestRecord
from podpulse.common.summary import SummaryError, TargetInfo, parse_summary
from podpulse.common.testing import cases
from podpulse.prober import (
    ProberSettings,
    PromptSetError,
    RunStats,
    load_prompts,
    summarize,
)
from podpulse.prober._results_dir import ResultsWriter, write_json, write_target

_APP = build_app(entry_points(group=ENTRY_POINT_GROUP))
_TARGET = TargetInfo(kind="twin", endpoint_id="ep-twin", base_url="http://127.0.0.1:9/v2")
_CASES = int(os.environ.get("PROPERTY_CASES", cases(2000)))  # 2,000 under the deep profile
_PROPERTY = settings(
    max_examples=_CASES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
_RAN: dict[str, int] = {}


def _count(surface: str) -> None:
    _RAN[surface] = _RAN.get(surface, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def _report_counts() -> Iterator[None]:
    yield
    # Shown with -s; the report of the change quotes these.
    print(f"\ngenerated cases run: {_RAN}")  # noqa: T201


# --- values that break naive readers -----------------------------------------------------------

_nasty_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " ", "no", "yes", "true", "1", "3000", "NaN", "[/x]", "\x00"]),
    st.integers(0xD800, 0xDFFF).map(chr),  # a lone surrogate
)
_nasty_number = st.one_of(
    st.integers(),
    st.integers(min_value=10**30, max_value=10**60),
    st.floats(),  # NaN and infinities too
    st.sampled_from(["__HUGE__", "__1E400__"]),  # written as raw JSON numbers by _dumps
)
_leaf = st.one_of(st.none(), st.booleans(), _nasty_number, _nasty_text)
_json_value = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def _dumps(value: Any) -> str:
    # json.dumps writes NaN and Infinity as such; the markers become numbers no float holds.
    text = json.dumps(value)
    return text.replace('"__HUGE__"', "9" * 5000).replace('"__1E400__"', "1e400")


# --- prompt files ------------------------------------------------------------------------------

_GOOD_LINE = {"question": "How do I become a data analyst?", "profile": {"skills": ["SQL"]}}


@st.composite
def _prompt_line(draw: st.DrawFn) -> bytes:  # noqa: PLR0911  # one return per kind of line
    kind = draw(st.sampled_from(["good", "value", "field", "deep", "bigint", "bytes", "raw"]))
    if kind == "good":
        return json.dumps(_GOOD_LINE).encode()
    if kind == "value":
        return _dumps(draw(_json_value)).encode("utf-8", "surrogatepass")
    if kind == "field":
        key = draw(st.sampled_from(["question", "profile", "max_new_tokens", "extra", "skills"]))
        data: dict[str, Any] = dict(_GOOD_LINE)
        if key == "skills":
            data["profile"] = {"skills": draw(_json_value)}
        else:
            data[key] = draw(_json_value)
        return _dumps(data).encode("utf-8", "surrogatepass")
    if kind == "deep":
        return _deep(draw(st.integers(50, 5000))).encode()
    if kind == "bigint":
        digits = draw(st.integers(1, 6000))
        return b'{"question": "q", "max_new_tokens": ' + b"9" * digits + b"}"
    if kind == "bytes":
        return draw(st.binary(max_size=40)).replace(b"\n", b" ")
    return draw(st.sampled_from([b"NaN", b'{"question": NaN}', b'{"question": "\\ud800"}',
                                 b"\xff\xfe", b'{"question": "a",}', b"{}", b"null"]))  # fmt: skip


@_PROPERTY
@given(lines=st.lists(_prompt_line(), min_size=1, max_size=4))
def test_any_prompt_file_loads_or_names_its_bad_line(lines: list[bytes]) -> None:
    """A generated prompt file loads, or raises one PromptSetError naming a line that is bad;
    whatever loads is a job input that encodes as UTF-8 JSON."""
    _count("prompt files")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "prompts.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        try:
            prompts = load_prompts(path)
        except PromptSetError as exc:
            message = str(exc)
            assert "\n" not in message
            if "holds no prompts" in message:
                assert all(not line.removeprefix(b"\xef\xbb\xbf").strip() for line in lines)
                return
            number = int(message.split(", line ", 1)[1].split(":", 1)[0])
            assert 1 <= number <= len(lines)
            assert lines[number - 1] != json.dumps(_GOOD_LINE).encode()
            return
    for prompt in prompts:
        json.dumps(prompt.to_input(), ensure_ascii=False).encode("utf-8")
        assert prompt.question.strip()


# --- summary.json through `report` -------------------------------------------------------------


def _records(count: int, *, fail_every: int = 0) -> list[RequestRecord]:
    start = 1_700_000_000.0
    records = []
    for seq in range(count):
        ok = not fail_every or seq % fail_every
        records.append(
            RequestRecord(
                run_id="r", seq=seq, concurrency=1, intended=start + seq, sent=start + seq,
                done=start + seq + 0.4 + seq / 100, outcome=Outcome.OK if ok else Outcome.FAILED,
                delay_ms=20.0 if ok else None, exec_ms=300.0 if ok else None,
                output_tokens=40 if ok else None, error=None if ok else "boom [/x]",
            )
        )  # fmt: skip
    return records


def _summary_json(kind: str) -> dict[str, Any]:
    prober = ProberSettings(soak_window_s=2)
    if kind == "sweep":
        spec = ProbeSpec(run_id="r", kind="sweep", concurrency=(1, 2), runs=6, warmup=0)
        stats = {
            1: RunStats.from_records(_records(6)),
            2: RunStats.from_records(_records(6, fail_every=2)),
        }
    elif kind == "soak":
        spec = ProbeSpec(run_id="r", kind="soak", concurrency=(1,), duration_s=9, warmup=0)
        records = _records(9)
        stats = {1: RunStats.from_records(records, window_s=2, origin=records[0].intended)}
    else:
        spec = ProbeSpec(run_id="r", runs=6, warmup=0)
        stats = {1: RunStats.from_records(_records(6))}
    summary = summarize(spec, stats, prober, target=_TARGET)
    return summary.model_dump(mode="json")


_BASES = {kind: _summary_json(kind) for kind in ("load", "sweep", "soak")}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _set(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    copy = dict(data) if isinstance(data, dict) else list(data)
    copy[head] = _set(data[head], rest, value)
    return copy


def _delete(data: Any, path: tuple[Any, ...]) -> Any:
    if len(path) == 1:
        copy = dict(data) if isinstance(data, dict) else list(data)
        del copy[path[0]]
        return copy
    return _set(data, path[:1], _delete(data[path[0]], path[1:]))


@st.composite
def _summary_file(draw: st.DrawFn) -> bytes:
    base = _BASES[draw(st.sampled_from(sorted(_BASES)))]
    kind = draw(st.sampled_from(["edit", "edit", "edit", "delete", "whole", "deep", "bytes"]))
    if kind == "whole":
        return _dumps(draw(_json_value)).encode("utf-8", "surrogatepass")
    if kind == "deep":
        return _deep(draw(st.integers(50, 3000))).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=60))
    data = base
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(data))[1:]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        if kind == "delete":
            data = _delete(data, path)
        else:
            data = _set(data, path, draw(_json_value | st.sampled_from(["no", "PASS", "FAIL"])))
    return _dumps(data).encode("utf-8", "surrogatepass")


@pytest.fixture(scope="module")
def report_env() -> Iterator[tuple[CliRunner, Path]]:
    """A results folder and a runner with only the prober's folder set in its environment."""
    # typer's runner rebuilds the click command from the app on every invoke (15 ms, most of
    # a case); the app does not change, so it is built once.
    command = get_command(_APP)
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as patch:
        patch.setattr(typer.testing, "_get_command", lambda app: command)
        env: dict[str, str | None] = {
            name: None for name in os.environ if name.startswith(("RUNPOD_", "PROBER_"))
        }
        env["PROBER_RESULTS_DIR"] = folder
        yield CliRunner(env=env), Path(folder)


def _report(runner: CliRunner, run_id: str) -> tuple[int, str, str]:
    # click's own invoke: typer's would rebuild the command from the app first.
    done = runner.invoke(_APP, ["report", run_id, "--json"])
    if done.exception is not None and not isinstance(done.exception, SystemExit):
        raise done.exception
    return done.exit_code, done.stdout, done.stderr


def _one_clear_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


@_PROPERTY
@given(text=_summary_file())
def test_report_on_any_summary_file_exits_0_1_or_2_with_one_line(
    report_env: tuple[CliRunner, Path], text: bytes
) -> None:
    """report on a damaged summary.json exits 2 with one line naming the file and a field (or
    the JSON problem); when it does not, the file was a valid summary and the exit code is its
    verdict (0 pass, 1 fail)."""
    _count("summary.json via report")
    runner, folder = report_env
    (folder / "r").mkdir(exist_ok=True)
    (folder / "r" / "summary.json").write_bytes(text)
    code, stdout, stderr = _report(runner, "r")
    if code == 2:
        line = _one_clear_line(stderr)
        assert "summary.json is not a valid RunSummary: " in line
        with pytest.raises(SummaryError):
            parse_summary(text)
        return
    summary = parse_summary(stdout)
    assert code == (0 if summary.passed else 1)
    assert summary == parse_summary(text)


# --- requests.csv through `report` -------------------------------------------------------------

# A streamed row, so the fuzzed cells land among valid TTFT/TPOT/ITL values too.
_ROW = {**RequestRecord(run_id="r", seq=0, concurrency=1, intended=1.7e9, sent=1.7e9,
                        done=1.7e9 + 0.5, outcome=Outcome.OK, exec_ms=300.0, output_tokens=3,
                        api="stream", ttft_ms=120.0, tpot_ms=30.0,
                        itl_ms=(30.0, 31.5)).to_row()}  # fmt: skip
_csv_cell = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", "1e400", "-1", "nan", "inf", "1_0", "٣", "OK", "FAILED", "x" * 200_000]),
    _nasty_number.map(lambda n: {"__HUGE__": "9" * 5000, "__1E400__": "1e400"}.get(str(n), str(n))),
)


@st.composite
def _csv_file(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["cells", "cells", "header", "short", "bytes"]))
    header = list(CSV_COLUMNS)
    rows = [dict(_ROW, seq=i) for i in range(draw(st.integers(1, 3)))]
    if kind == "header":
        header = draw(
            st.lists(st.sampled_from([*CSV_COLUMNS, "bogus", "", "Total_MS"]), max_size=8)
        )
    elif kind == "bytes":
        return (
            b",".join(header_.encode() for header_ in header) + b"\n" + draw(st.binary(max_size=60))
        )
    elif kind == "cells":
        for _ in range(draw(st.integers(1, 3))):
            row = draw(st.sampled_from(rows))
            row[draw(st.sampled_from(CSV_COLUMNS))] = draw(_csv_cell)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        cells = [str(row.get(name, "")) for name in header]
        if kind == "short":
            cells = cells[: draw(st.integers(0, len(cells)))]
        writer.writerow(cells)
    return out.getvalue().encode("utf-8", "surrogatepass")


@_PROPERTY
@given(data=_csv_file())
def test_report_rebuilding_from_any_csv_exits_1_or_2_with_one_line(
    report_env: tuple[CliRunner, Path], data: bytes
) -> None:
    """report on a run folder whose requests.csv is damaged exits 2 with one line naming the
    file; otherwise it rebuilds an interrupted summary (exit 1: a rebuilt run never passes)."""
    _count("requests.csv via report")
    runner, folder = report_env
    run = folder / "dead"
    if not (run / "spec.json").exists():
        write_json(run / "spec.json", ProbeSpec(run_id="dead", runs=10).model_dump(mode="json"))
        write_target(run, _TARGET)
    (run / "requests.csv").write_bytes(data)
    code, stdout, stderr = _report(runner, "dead")
    if code == 2:
        line = _one_clear_line(stderr)
        assert "requests.csv" in line, line
        return
    assert code == 1, stderr
    summary = parse_summary(stdout)
    assert summary.interrupted
    assert not summary.passed


def test_the_writer_and_the_reader_agree(tmp_path: Path) -> None:
    """What ResultsWriter writes, report reads back (the property tests' baseline)."""
    folder = tmp_path / "ok"
    with ResultsWriter(folder) as writer:
        for record in _records(3):
            writer.write(record)
    write_json(folder / "spec.json", ProbeSpec(run_id="ok", runs=3).model_dump(mode="json"))
    write_target(folder, _TARGET)
    runner = CliRunner(env={"PROBER_RESULTS_DIR": str(tmp_path)})
    code, stdout, _ = _report(runner, "ok")
    assert code == 1
    assert parse_summary(stdout).level.requests == 3
