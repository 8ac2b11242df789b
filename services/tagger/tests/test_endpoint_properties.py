"""Properties of the tagger's readers of untrusted input: update flags, key files, history."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podpulse.common.runpod import EndpointConfig, ScalerType
from podpulse.common.testing import cases
from podpulse.tagger.endpoint._change import EndpointInputError, flag_changes, read_update_flags
from podpulse.tagger.endpoint._history import HistoryRecord, append_record, read_history
from podpulse.tagger.endpoint._keys import MAX_KEY_CHARS, KeyFileError, read_key_file

LIVE = EndpointConfig(
    workers_min=0, workers_max=1, idle_timeout_s=5,
    scaler_type=ScalerType.QUEUE_DELAY, scaler_value=4,
)  # fmt: skip
_SETTINGS = settings(
    max_examples=cases(300),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_number_text = st.one_of(
    st.integers(-5, 5000).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " 2 ", "1e400", "0x10", "3.0", "-0", "inf", "nan", "2\n", "\uff11"]),
    st.text(max_size=60),
)
_flag = st.one_of(st.none(), _number_text)
_type_text = st.one_of(
    st.none(),
    st.sampled_from(["QUEUE_DELAY", "request_count", " REQUEST_COUNT ", "CPU", ""]),
    st.text(max_size=40),
)


@_SETTINGS
@given(_flag, _flag, _flag, _type_text, _flag)
def test_update_flags_give_a_valid_config_or_one_line_naming_a_flag(
    workers_min: str | None,
    workers_max: str | None,
    idle: str | None,
    scaler_type: str | None,
    scaler_value: str | None,
) -> None:
    """Any flag text ends as a valid config (round-tripping through v2) or one line naming a
    flag that never quotes a non-numeric input longer than 16 characters."""
    given_texts = [t for t in (workers_min, workers_max, idle, scaler_type, scaler_value) if t]
    try:
        changes = read_update_flags(
            workers_min=workers_min, workers_max=workers_max, idle_timeout_s=idle,
            scaler_type=scaler_type, scaler_value=scaler_value,
        )  # fmt: skip
        config = flag_changes(LIVE, changes)
    except EndpointInputError as exc:
        message = str(exc)
        assert message
        assert "\n" not in message
        assert message.startswith("--") or "nothing to change" in message
        for text in given_texts:
            # A number is shown as the number it parsed to; any other long text never is.
            if len(text) > 16 and not _is_number(text):
                assert text not in message
        return
    assert EndpointConfig.from_v2(config.to_v2()) == config


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@_SETTINGS
@given(st.binary(max_size=700) | st.text(max_size=80).map(str.encode))
def test_a_key_file_gives_one_key_or_an_error_without_its_content(raw: bytes) -> None:
    """Any file content is one printable, space-free key (its stripped text) or a one-line
    KeyFileError that does not contain what the file holds."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "key"
        path.write_bytes(raw)
        try:
            key = read_key_file(path)
        except KeyFileError as exc:
            message = str(exc)
            assert "\n" not in message
            stripped = raw.strip()
            if len(stripped) >= 6:
                assert stripped.decode("ascii", "replace") not in message
            return
    assert key == raw.decode("ascii").strip()
    assert 1 <= len(key) <= MAX_KEY_CHARS
    assert all(c.isprintable() and not c.isspace() for c in key)


def _record(n: int) -> HistoryRecord:
    return HistoryRecord(
        at=datetime(2026, 12, 1, tzinfo=UTC) + timedelta(seconds=n), endpoint_id="ep",
        management_base_url="http://127.0.0.1:1/v2", command="update", source="flags",
        before=LIVE, after=LIVE.model_copy(update={"workers_max": 1 + n % 5}),
        event_id=f"{n:032x}", event_published=n % 2 == 0,
    )  # fmt: skip


@settings(max_examples=cases(150), deadline=None, database=None)
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 400)), max_size=8))
def test_history_reads_back_exactly_what_was_appended_despite_torn_writes(
    steps: list[tuple[int, int]],
) -> None:
    """Appends interleaved with torn partial writes read back as exactly the whole records."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "h.jsonl"
        expected = []
        for n, torn in steps:
            record = _record(n)
            append_record(path, record)
            expected.append(record)
            if torn:
                text = _record(n + 1).model_dump_json().encode()
                with path.open("ab") as handle:
                    handle.write(text[: min(torn, len(text) - 1)])
        assert read_history(path) == expected
