"""configure_logging and the secret redactor.

Every key and webhook here is a canary assembled at run time, so no key-shaped literal sits in
the source for a scanner (or a reader) to mistake for a real one.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from podpulse.common.logging import REDACTED, configure_logging, redact_secrets, redact_text
from podpulse.common.settings import KNOWN_SECRETS, CommonSettings, LogFormat, Secret

RUNPOD_KEY = "rpa_" + "X" * 30
LEGACY_KEY = "AB12" * 8
SLACK_URL = "https://hooks.slack.com/" + "services/" + "/".join(["T0CANARY", "B0CANARY", "c" * 24])


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.fixture(autouse=True)
def _isolated_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for secret in KNOWN_SECRETS:
        monkeypatch.delenv(secret.name, raising=False)
        monkeypatch.delenv(secret.file_variable, raising=False)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def _configure(log_format: LogFormat = "json", tty: bool = False) -> _Stream:
    stream = _Stream(tty)
    configure_logging(CommonSettings(log_format=log_format, log_level="DEBUG"), stream=stream)
    return stream


def _fail(exc: Exception) -> None:
    raise exc


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_structlog_event_is_redacted_everywhere() -> None:
    """Keys and webhooks are replaced in the message and in nested dicts, lists and tuples."""
    stream = _configure()
    structlog.get_logger("podpulse.test").info(
        f"calling with {RUNPOD_KEY}",
        headers={"Authorization": f"Bearer {RUNPOD_KEY}"},
        hooks=[SLACK_URL, ("legacy", LEGACY_KEY)],
        count=3,
    )
    (line,) = _lines(stream)
    assert line == {
        "event": f"calling with {REDACTED}",
        "headers": {"Authorization": f"Bearer {REDACTED}"},
        "hooks": [REDACTED, ["legacy", REDACTED]],
        "count": 3,
        "level": "info",
        "logger": "podpulse.test",
        "timestamp": line["timestamp"],
    }
    assert line["timestamp"].endswith("Z")


def test_stdlib_records_go_through_the_same_redactor() -> None:
    """A third-party stdlib logger's message, %-args and extras come out as redacted JSON."""
    stream = _configure()
    logging.getLogger("httpx").warning("POST %s failed", SLACK_URL, extra={"key": RUNPOD_KEY})
    (line,) = _lines(stream)
    assert line["event"] == f"POST {REDACTED} failed"
    assert line["key"] == REDACTED
    assert (line["logger"], line["level"]) == ("httpx", "warning")


def test_exception_text_is_redacted() -> None:
    """A traceback whose exception message holds a key is written without the key."""
    stream = _configure()
    log = structlog.get_logger("podpulse.test")
    try:
        _fail(RuntimeError(f"401 for key {RUNPOD_KEY}"))
    except RuntimeError:
        log.exception("request failed")
    output = stream.getvalue()
    assert RUNPOD_KEY not in output
    (line,) = _lines(stream)
    assert line["exception"][0]["exc_value"] == f"401 for key {REDACTED}"


def test_stdlib_exception_text_is_redacted() -> None:
    """logging.exception from a foreign logger is redacted too."""
    stream = _configure()
    try:
        _fail(ValueError(SLACK_URL))
    except ValueError:
        logging.getLogger("celery").exception("boom")
    assert SLACK_URL not in stream.getvalue()
    assert REDACTED in stream.getvalue()


def test_known_secret_values_are_redacted_and_follow_rotation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A configured secret of any shape is redacted, and so is its rotated value, at once."""
    stream = _configure()
    log = structlog.get_logger("podpulse.test")
    old, new = f"hook-{uuid4().hex}", f"hook-{uuid4().hex}"
    monkeypatch.setenv("ALERT_WEBHOOK_URL", f"https://alerts.example/{old}")
    log.info("sending", url=f"https://alerts.example/{old}")
    monkeypatch.setenv("ALERT_WEBHOOK_URL", f"https://alerts.example/{new}")
    log.info("sending", url=f"https://alerts.example/{new}")
    assert [line["url"] for line in _lines(stream)] == [REDACTED, REDACTED]


def test_a_rotated_secret_file_is_redacted_once_the_ttl_has_passed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The redactor reads a secret file at most once per TTL, and redacts the rotated value."""
    path = tmp_path / "webhook"
    old, new = f"https://alerts.example/{uuid4().hex}", f"https://alerts.example/{uuid4().hex}"
    path.write_text(old)
    now = [0.0]
    secret = Secret("ALERT_WEBHOOK_URL", clock=lambda: now[0])
    stream = _Stream(tty=False)
    configure_logging(
        CommonSettings(log_format="json", log_level="DEBUG"), stream=stream, secrets=(secret,)
    )
    log = structlog.get_logger("podpulse.test")
    monkeypatch.setenv("ALERT_WEBHOOK_URL_FILE", str(path))
    log.info("sending", url=old)
    path.write_text(new)
    log.info("sending", url=new)  # within the TTL: the file is not read again
    now[0] += 1.0
    log.info("sending", url=new)
    assert [line["url"] for line in _lines(stream)] == [REDACTED, new, REDACTED]


def test_console_format_is_redacted_text() -> None:
    """PODPULSE_LOG_FORMAT=console writes human text, redacted alike, exceptions included."""
    stream = _configure(log_format="console")
    log = structlog.get_logger("podpulse.test")
    try:
        _fail(RuntimeError(RUNPOD_KEY))
    except RuntimeError:
        log.exception("failed", key=RUNPOD_KEY)
    output = stream.getvalue()
    assert RUNPOD_KEY not in output
    assert "failed" in output
    assert "RuntimeError" in output
    with pytest.raises(json.JSONDecodeError):
        json.loads(output.splitlines()[0])


@pytest.mark.parametrize(("tty", "is_json"), [(False, True), (True, False)])
def test_auto_format_follows_the_tty(tty: bool, is_json: bool) -> None:
    """PODPULSE_LOG_FORMAT=auto writes JSON to a pipe or file and console text to a terminal."""
    stream = _configure(log_format="auto", tty=tty)
    structlog.get_logger().info("hello")
    first = stream.getvalue().splitlines()[0]
    assert first.startswith("{") is is_json


def test_configuring_twice_keeps_one_handler() -> None:
    """A second configure_logging replaces its handler; the line is written once."""
    _configure()
    stream = _configure()
    structlog.get_logger().info("once")
    assert len(_lines(stream)) == 1


def test_level_filters_structlog_and_stdlib() -> None:
    """PODPULSE_LOG_LEVEL applies to both structlog and stdlib loggers."""
    stream = _Stream(tty=False)
    configure_logging(CommonSettings(log_format="json", log_level="WARNING"), stream=stream)
    structlog.get_logger().info("quiet")
    logging.getLogger("redis").info("quiet")
    structlog.get_logger().warning("loud")
    assert [line["event"] for line in _lines(stream)] == ["loud"]


@pytest.mark.parametrize(
    "innocent",
    [
        "qwen2-7b-endpoint-id",  # endpoint-style id
        "x7k2m9p4q1w8e5",  # worker id: lower-case alnum
        "3c23c48aeb77437ea1781766640bbe46",  # event ids (uuid4().hex)
        "a" * 40,  # git SHA shape
        "sync-0b04b894-ef23-43cb-8f70-8d88b7485d49-u1",  # RunPod job id
        "1" * 40,  # a long number
        "ENDPOINT_CONFIG_CHANGED_AND_RECORDED_TWICE",  # an upper-case constant
        "rpa_short",  # the prefix without a key's body
        "https://hooks.example.com/services/xyz",  # not Slack
    ],
)
def test_ids_and_ordinary_tokens_are_not_redacted(innocent: str) -> None:
    """The shape patterns leave podpulse's own ids, SHAs and constants alone."""
    assert redact_text(f"value {innocent} end", known=()) == f"value {innocent} end"


def test_short_known_values_are_not_redacted_by_value() -> None:
    """A configured 'secret' under 8 characters is not replaced everywhere it appears."""
    assert redact_text("the cat sat", known=("cat",)) == "the cat sat"


def test_redact_secrets_processor_leaves_non_text_alone() -> None:
    """Numbers, booleans and None pass through the processor unchanged."""
    event = {"event": "n", "n": 3, "ok": True, "none": None, "ratio": 0.5}
    assert redact_secrets(None, "info", dict(event)) == event


@settings(max_examples=60, deadline=None)
@given(
    before=st.text(max_size=30),
    after=st.text(max_size=30),
    body=st.text(
        alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        min_size=20,
        max_size=60,
    ),
)
def test_any_runpod_key_in_any_text_is_redacted(before: str, after: str, body: str) -> None:
    """Whatever surrounds it, an rpa_ key never survives redaction."""
    key = "rpa_" + body
    assert key not in redact_text(f"{before} {key} {after}", known=())
