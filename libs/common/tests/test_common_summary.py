"""RunSummary: JSON round trips, and summaries that must not validate (old, garbage, or with a
verdict their own evidence contradicts) refused with the field named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from summary_examples import level, load_summary

from podpulse.common.probe_spec import ProbeSpec
from podpulse.common.summary import (
    ShardInfo,
    SummaryError,
    parse_summary,
    read_summary,
)


def test_a_summary_round_trips_through_json(tmp_path: Path) -> None:
    """summary -> summary.json -> read_summary gives an equal RunSummary."""
    summary = load_summary()
    path = tmp_path / "summary.json"
    path.write_text(summary.model_dump_json(indent=2), encoding="utf-8")
    assert read_summary(path) == summary
    assert json.loads(path.read_text(encoding="utf-8"))["schema_version"] == 1


def test_an_interrupted_sharded_summary_round_trips() -> None:
    """Shard info (integer keys in JSON) survives the round trip; such a run does not pass."""
    summary = load_summary().model_copy(
        update={"interrupted": True, "passed": False,
                "shards": ShardInfo(count=3, failed={2: "OSError: gone"}, missing=(2,))}
    )  # fmt: skip
    again = parse_summary(summary.model_dump_json())
    assert again == summary
    assert again.shards is not None
    assert again.shards.failed == {2: "OSError: gone"}


def test_garbage_is_refused_naming_the_problem(tmp_path: Path) -> None:
    """Not JSON at all: SummaryError naming the file and 'Invalid JSON'."""
    path = tmp_path / "summary.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(SummaryError, match=r"summary\.json is not a valid RunSummary.*JSON"):
        read_summary(path)


def test_an_old_summary_is_refused_naming_its_fields() -> None:
    """A pre-schema summary (flat, no schema_version) names what is missing and what is extra."""
    old = {"run_id": "r", "kind": "load", "passed": True, "requests": 3, "endpoint_id": "ep"}
    with pytest.raises(SummaryError) as caught:
        parse_summary(json.dumps(old))
    message = str(caught.value)
    assert "schema_version: Field required" in message
    assert "target: Field required" in message
    assert "requests: Extra inputs are not permitted" in message


def test_a_newer_schema_version_is_refused() -> None:
    """schema_version 2 is not read as 1."""
    data = load_summary().model_dump(mode="json") | {"schema_version": 2}
    with pytest.raises(SummaryError, match="schema_version: Input should be 1"):
        parse_summary(json.dumps(data))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"passed": False}, "passed=False contradicts the run's own evidence"),
        ({"interrupted": True}, "passed=True contradicts the run's own evidence"),
        ({"kind": "sweep"}, "spec names another run or kind"),
        ({"levels": []}, "levels: Tuple should have at least 1 item"),
    ],
)
def test_a_verdict_its_evidence_contradicts_is_refused(
    change: dict[str, object], field: str
) -> None:
    """Editing the verdict, or the facts it rests on, makes the summary invalid."""
    data = load_summary().model_dump(mode="json") | change
    with pytest.raises(SummaryError, match=field):
        parse_summary(json.dumps(data))


def test_a_failing_run_cannot_claim_to_pass() -> None:
    """A run whose SLO row fails, written with passed=true, does not validate."""
    failing = load_summary(total_p95=9000.0)
    assert failing.passed is False
    data = failing.model_dump(mode="json") | {"passed": True}
    with pytest.raises(SummaryError, match="passed"):
        parse_summary(json.dumps(data))


def test_an_slo_row_status_must_match_its_margin() -> None:
    """A row marked PASS with a negative margin does not validate, naming the row."""
    data = load_summary().model_dump(mode="json")
    data["levels"][0]["slo"]["rows"][0] |= {"status": "PASS", "margin": -5.0}
    with pytest.raises(SummaryError, match=r"levels\.0\.slo\.rows\.0"):
        parse_summary(json.dumps(data))


def test_counts_must_add_up() -> None:
    """Failures by kind must add up to the failed count."""
    data = load_summary().model_dump(mode="json")
    data["levels"][0] |= {"ok": 39, "failed": 1}
    with pytest.raises(SummaryError, match="failures by kind add up to 0"):
        parse_summary(json.dumps(data))


def test_the_headline_level_of_a_load_is_its_only_level() -> None:
    """summary.level is the only level of a load; at() finds a level or raises KeyError."""
    summary = load_summary()
    assert summary.level == summary.at(1) == level()
    with pytest.raises(KeyError, match="no concurrency level 4"):
        summary.at(4)


def test_run_ids_stay_folder_names() -> None:
    """A run id with a path separator is refused in the spec and in the summary."""
    with pytest.raises(ValueError, match="run id"):
        ProbeSpec(run_id="../etc", runs=1)
    data = load_summary().model_dump(mode="json") | {"run_id": "a/b"}
    with pytest.raises(SummaryError, match="run_id"):
        parse_summary(json.dumps(data))


@pytest.mark.parametrize(
    ("field", "raw"),
    [("input_overrides", '{"": 1e400}'), ("input_overrides", '{"a": [1, {"b": NaN}]}'),
     ("duration_s", "1e400"), ("timeout_s", "Infinity")],
)  # fmt: skip
def test_a_spec_with_a_number_json_cannot_hold_is_refused(field: str, raw: str) -> None:
    """inf or NaN anywhere in the spec, inside input_overrides too (JSON's 1e400 reads as inf,
    and writing it back would give null): refused naming spec.<field>. Found by the report
    property suite."""
    text = load_summary().model_dump_json()
    data = json.loads(text)
    data["spec"][field] = "__RAW__"
    with pytest.raises(SummaryError, match=rf"spec\.{field}: "):
        parse_summary(json.dumps(data).replace('"__RAW__"', raw))
