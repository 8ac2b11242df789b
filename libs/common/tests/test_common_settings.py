"""CommonSettings, TelemetrySettings and Secret."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import pytest
from pydantic import ValidationError

from podpulse.common.settings import (
    KNOWN_SECRETS,
    RUNPOD_API_KEY,
    SLACK_WEBHOOK_URL,
    CommonSettings,
    Secret,
    SecretError,
    TelemetrySettings,
    known_secret_values,
)

_COMMON_VARS = (
    "REDIS_URL",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "RUNPOD_ENDPOINT_ID",
    "RUNPOD_ENDPOINT_BASE_URL",
    "RUNPOD_MANAGEMENT_BASE_URL",
    "VISIBILITY_TIMEOUT_S",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _COMMON_VARS:
        monkeypatch.delenv(name, raising=False)
    for secret in KNOWN_SECRETS:
        monkeypatch.delenv(secret.name, raising=False)
        monkeypatch.delenv(secret.file_variable, raising=False)


def _canary() -> str:
    return f"canary-{uuid4().hex}"


def test_defaults_are_the_documented_ones() -> None:
    """With no environment, every field has the default DESIGN.md and the brief name."""
    settings = CommonSettings()
    assert settings.model_dump() == {
        "redis_url": "redis://127.0.0.1:6379/0",
        "log_level": "INFO",
        "log_format": "auto",
        "runpod_endpoint_id": None,
        "runpod_endpoint_base_url": "https://api.runpod.ai/v2",
        "runpod_management_base_url": "https://api.runpod.io/v2",
        "visibility_timeout_s": 7200,
    }


def test_environment_overrides_and_normalises(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each variable is read by its documented name; case and trailing slashes are normalised."""
    monkeypatch.setenv("REDIS_URL", "redis://redis:6379/3")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("LOG_FORMAT", "JSON")
    monkeypatch.setenv("RUNPOD_ENDPOINT_ID", "abc123xyz")
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", "http://127.0.0.1:8000/v2/")
    monkeypatch.setenv("RUNPOD_MANAGEMENT_BASE_URL", "http://127.0.0.1:8000/mgmt/")
    monkeypatch.setenv("VISIBILITY_TIMEOUT_S", "30")
    settings = CommonSettings()
    assert (settings.redis_url, settings.log_level, settings.log_format) == (
        "redis://redis:6379/3",
        "DEBUG",
        "json",
    )
    assert settings.runpod_endpoint_id == "abc123xyz"
    assert settings.runpod_endpoint_base_url == "http://127.0.0.1:8000/v2"
    assert settings.runpod_management_base_url == "http://127.0.0.1:8000/mgmt"
    assert settings.visibility_timeout_s == 30


@pytest.mark.parametrize(
    ("variable", "value"),
    [("LOG_FORMAT", "xml"), ("LOG_LEVEL", "chatty"), ("REDIS_URL", "http://x")],
)
def test_bad_values_are_rejected_by_variable_name(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """A bad value fails at start-up with an error naming the variable."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable):
        CommonSettings()


@pytest.mark.parametrize("model", [CommonSettings, TelemetrySettings])
def test_every_field_is_described(model: type[CommonSettings | TelemetrySettings]) -> None:
    """Every settings field carries a description (they feed --help and docs)."""
    undescribed = [name for name, field in model.model_fields.items() if not field.description]
    assert undescribed == []


def test_telemetry_settings_parse_the_spec_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_TRACES_EXPORTER is a comma list; OTEL_SDK_DISABLED a boolean."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", " OTLP , console")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    settings = TelemetrySettings()
    assert settings.otel_traces_exporter == ("otlp", "console")
    assert settings.otel_sdk_disabled is True


def test_telemetry_settings_reject_unknown_exporters(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exporter podpulse cannot build (zipkin) is an error, not silently no tracing."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp,zipkin")
    with pytest.raises(ValidationError, match="zipkin"):
        TelemetrySettings()


def test_secret_prefers_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The variable wins over the file when both are set."""
    value, other = _canary(), _canary()
    (tmp_path / "key").write_text(other)
    monkeypatch.setenv("RUNPOD_API_KEY", value)
    monkeypatch.setenv("RUNPOD_API_KEY_FILE", str(tmp_path / "key"))
    assert RUNPOD_API_KEY.get() == value


def test_secret_file_is_reread_on_every_call(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Rotating the file's content changes the next get(), without a new Secret or restart."""
    path = tmp_path / "webhook"
    first, second = _canary(), _canary()
    path.write_text(f"  {first}\n")
    monkeypatch.setenv("SLACK_WEBHOOK_URL_FILE", str(path))
    assert SLACK_WEBHOOK_URL.get() == first
    path.write_text(second + "\n")
    assert SLACK_WEBHOOK_URL.get() == second


def test_empty_variable_falls_back_to_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An empty variable counts as unset (compose files often leave KEY= blank)."""
    value = _canary()
    (tmp_path / "k").write_text(value)
    monkeypatch.setenv("RUNPOD_API_KEY", "")
    monkeypatch.setenv("RUNPOD_API_KEY_FILE", str(tmp_path / "k"))
    assert RUNPOD_API_KEY.get() == value


def test_unset_secret_is_none_and_require_names_both_variables() -> None:
    """get() is None when unset; require() says which two variables would provide it."""
    assert RUNPOD_API_KEY.get() is None
    with pytest.raises(SecretError) as caught:
        RUNPOD_API_KEY.require()
    assert "RUNPOD_API_KEY " in str(caught.value)
    assert "RUNPOD_API_KEY_FILE" in str(caught.value)


def test_unreadable_secret_file_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A *_FILE pointing nowhere is reported, naming the variable, not taken for 'unset'."""
    monkeypatch.setenv("RUNPOD_API_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(SecretError, match="RUNPOD_API_KEY_FILE="):
        RUNPOD_API_KEY.get()


def test_secret_never_shows_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """repr, str and f-strings of a Secret show its name only."""
    value = _canary()
    monkeypatch.setenv("RUNPOD_API_KEY", value)
    secret = Secret("RUNPOD_API_KEY")
    shown = f"{secret!r} {secret!s} {secret} {[secret]}"
    assert value not in shown
    assert "RUNPOD_API_KEY" in shown


def test_known_secret_values_skips_unset_and_unreadable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """known_secret_values() lists the set ones and never raises (the redactor calls it)."""
    slack, alert = _canary(), _canary()
    monkeypatch.setenv("SLACK_WEBHOOK_URL", slack)
    (tmp_path / "alert").write_text(alert)
    monkeypatch.setenv("ALERT_WEBHOOK_URL_FILE", str(tmp_path / "alert"))
    monkeypatch.setenv("RUNPOD_API_KEY_FILE", str(tmp_path / "missing"))
    assert known_secret_values() == (slack, alert)
