"""DEPLOYMENT.md: every record written reads back the same, whatever its strings hold; text the
user wrote around the records is kept; a damaged record is an error naming its line."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from release_helpers import soak_summary

from podpulse.common.runpod import EndpointConfig, ScalerType
from podpulse.common.testing import cases
from podpulse.tagger.releases._records import (
    DeployedEndpoint,
    Evidence,
    RecordsError,
    ReleaseRecord,
    append_record,
    parse_records,
    read_records,
    render_record,
)

_text = st.text(min_size=1, max_size=40)
_one_line = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\u2028\u2029"),
    min_size=1,
    max_size=60,
)
_configs = st.builds(
    EndpointConfig,
    workers_min=st.integers(0, 3),
    workers_max=st.integers(3, 10),
    idle_timeout_s=st.integers(1, 3600),
    scaler_type=st.just(ScalerType.QUEUE_DELAY),
    scaler_value=st.floats(0.5, 60, allow_nan=False),
)
# Hypothesis takes naive bounds and attaches the zone itself.
_moments = st.datetimes(
    min_value=datetime(2020, 1, 1),  # noqa: DTZ001
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)


@st.composite
def _records(draw: st.DrawFn) -> ReleaseRecord:
    run_id = draw(st.sampled_from(["s1", "soak-2026.12_a"]))
    evidence = draw(st.none() | st.just(Evidence.of(soak_summary(run_id))))
    forced = evidence is None or draw(st.booleans())
    return ReleaseRecord(
        tag=draw(_text),
        commit=draw(st.text("0123456789abcdef", min_size=40, max_size=40)),
        recorded_at=draw(_moments),
        endpoint=DeployedEndpoint(
            id=draw(_text),
            image=draw(_text),
            model=draw(_text),
            model_size_gb=draw(st.floats(0.01, 1000, allow_nan=False)),
            gpu=draw(_text),
            config=draw(_configs),
        ),
        evidence=evidence,
        force_reason=draw(_one_line) if forced else None,
        trigger=draw(st.sampled_from(["cli", "auto"])),
    )


@settings(
    max_examples=cases(300),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(record=_records(), before=st.text(max_size=80))
def test_any_record_reads_back_exactly_and_stays_one_section(
    record: ReleaseRecord, before: str
) -> None:
    """Render then parse gives the record back, after any user text; no string in it (line
    breaks, backticks, '-->') adds a line to its section or closes its comment early."""
    # User text is kept as written; only a line starting like a record comment would be read.
    user = "\n".join(line for line in before.splitlines() if not line.startswith("<!--"))
    section = render_record(record)
    assert parse_records(f"{user}\n{section}") == [record]
    expected_lines = 13 if record.force_reason is not None else 12
    assert len(section.splitlines()) == expected_lines
    comment = section.splitlines()[-1]
    assert comment.startswith("<!-- podpulse-release {")
    assert comment.count("-->") == 1


def _record(tag: str = "v1.0-production", **changes: object) -> ReleaseRecord:
    base = ReleaseRecord(
        tag=tag,
        commit="a" * 40,
        recorded_at=datetime(2026, 12, 1, 12, tzinfo=UTC),
        endpoint=DeployedEndpoint(
            id="4cqta56swdioxi",
            image="img:1",
            model="m",
            model_size_gb=22.69,
            gpu="RTX 4090",
            config=EndpointConfig(
                workers_min=2,
                workers_max=5,
                idle_timeout_s=180,
                scaler_type=ScalerType.QUEUE_DELAY,
                scaler_value=1,
            ),
        ),
        evidence=Evidence.of(soak_summary()),
        trigger="cli",
    )
    return base.model_copy(update=changes)


def test_append_keeps_user_text_and_order(tmp_path: Path) -> None:
    """Appending keeps what the user wrote (their old echo >> lines) and the records' order."""
    path = tmp_path / "DEPLOYMENT.md"
    path.write_text("image=old commit=abc date=2026-01-01")  # no final newline, as echo -n
    path.chmod(0o640)
    append_record(path, _record("v1.0-production"))
    append_record(path, _record("v1.1-production"))
    text = path.read_text()
    assert text.startswith("image=old commit=abc date=2026-01-01\n")
    assert [r.tag for r in read_records(path)] == ["v1.0-production", "v1.1-production"]
    assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["DEPLOYMENT.md"]  # no temp file left


def test_new_file_gets_a_header(tmp_path: Path) -> None:
    """A first release creates DEPLOYMENT.md with a header saying what writes it."""
    path = tmp_path / "DEPLOYMENT.md"
    append_record(path, _record())
    assert path.read_text().startswith("# Deployments\n")
    assert read_records(tmp_path / "missing.md") == []


def test_a_failed_write_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails at the rename (disk full, say) leaves the old file and no temp file."""
    path = tmp_path / "DEPLOYMENT.md"
    append_record(path, _record())
    before = path.read_bytes()

    def full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError, match="No space left"):
        append_record(path, _record("v1.1-production"))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["DEPLOYMENT.md"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('<!-- podpulse-release {"tag": "x"}', "line 3: a release comment that is not closed"),
        ("<!-- podpulse-release {not json} -->", "line 3: damaged release record"),
        ('<!-- podpulse-release {"schema_version": 2} -->', "line 3: damaged release record"),
    ],
)
def test_damaged_record_names_its_line(line: str, expected: str) -> None:
    """A comment that is not a valid record is refused with its line, never skipped."""
    with pytest.raises(RecordsError, match=expected):
        parse_records(f"# Deployments\n\n{line}\n", source="DEPLOYMENT.md")


def test_a_comment_indented_up_to_three_spaces_is_read_and_a_code_block_refused() -> None:
    """Markdown hides a comment indented by 1-3 spaces, so it is a record; indented further it
    is a code block people see, refused with its line rather than silently skipped."""
    record = _record()
    comment = render_record(record).splitlines()[-1]
    for indent in (" ", "   "):
        assert parse_records(f"# Deployments\n\n{indent}{comment}\n") == [record]
    for indent in ("    ", "\t"):
        with pytest.raises(RecordsError, match="line 3: a release comment indented by more"):
            parse_records(f"# Deployments\n\n{indent}{comment}\n")


def test_one_tag_on_two_commits_is_refused() -> None:
    """Two records giving one tag different commits are refused, naming both lines; the same
    record twice (one commit) still reads."""
    first = render_record(_record())
    other = render_record(_record(commit="b" * 40))
    with pytest.raises(RecordsError, match=r"line 27: tag v1.0-production is recorded for "
                       r"commit bbbbbbbbbbbb here and for aaaaaaaaaaaa on line 14"):  # fmt: skip
        parse_records(f"# Deployments\n\n{first}\n{other}")
    assert len(parse_records(f"{first}\n{first}")) == 2


def test_a_record_rests_on_a_passing_soak_or_a_reason() -> None:
    """Without a passing soak a record needs a force reason, and the reason is one line."""
    failing = Evidence.of(soak_summary(passed=False))
    with pytest.raises(ValidationError, match="needs a force reason"):
        _record(evidence=None).model_validate(_record(evidence=None).model_dump())
    with pytest.raises(ValidationError, match="needs a force reason"):
        ReleaseRecord.model_validate(_record().model_dump() | {"evidence": failing.model_dump()})
    with pytest.raises(ValidationError, match="one line"):
        ReleaseRecord.model_validate(_record().model_dump() | {"force_reason": "a\nb"})
