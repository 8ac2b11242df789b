"""CommonSettings, TelemetrySettings and Secret."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import pytest
from pydantic import ValidationError

from podpulse.common.settings import (
    KNOWN_SECRETS,
    RUNPOD_API_KEY,
    CommonSettings,
    Secret,
    SecretError,
    TelemetrySettings,
    known_secret_values,
    settings_variable,
)

_COMMON_VARS = (
    "REDIS_URL",
    "PODPULSE_LOG_LEVEL",
    "PODPULSE_LOG_FORMAT",
    "RUNPOD_ENDPOINT_ID",
    "RUNPOD_ENDPOINT_BASE_URL",
    "RUNPOD_MANAGEMENT_BASE_URL",
    "PODPULSE_VISIBILITY_TIMEOUT_S",
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
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


_DEFAULTS = {
    "redis_url": "redis://127.0.0.1:6379/0",
    "log_level": "INFO",
    "log_format": "auto",
    "runpod_endpoint_id": None,
    "runpod_endpoint_base_url": "https://api.runpod.ai/v2",
    "runpod_management_base_url": "https://api.runpod.io/v2",
    "visibility_timeout_s": 7200,
}


def test_defaults_are_the_documented_ones() -> None:
    """With no environment, every field has its documented default."""
    assert CommonSettings().model_dump() == _DEFAULTS


def test_environment_overrides_and_normalises(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each variable is read by its documented name; case and trailing slashes are normalised."""
    monkeypatch.setenv("REDIS_URL", "redis://redis:6379/3")
    monkeypatch.setenv("PODPULSE_LOG_LEVEL", "debug")
    monkeypatch.setenv("PODPULSE_LOG_FORMAT", "JSON")
    monkeypatch.setenv("RUNPOD_ENDPOINT_ID", "abc123xyz")
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", "http://127.0.0.1:8000/v2/")
    monkeypatch.setenv("RUNPOD_MANAGEMENT_BASE_URL", "http://127.0.0.1:8000/mgmt/")
    monkeypatch.setenv("PODPULSE_VISIBILITY_TIMEOUT_S", "30")
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


def test_each_field_reads_only_its_one_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Old unprefixed names and prefix+field for an aliased field configure nothing."""
    for name, value in {
        "LOG_LEVEL": "DEBUG",
        "LOG_FORMAT": "json",
        "VISIBILITY_TIMEOUT_S": "30",
        "PODPULSE_REDIS_URL": "redis://elsewhere:6379/0",
        "PODPULSE_RUNPOD_ENDPOINT_ID": "ep-stray",
        "PODPULSE_OTEL_TRACES_EXPORTER": "console",
        "OTEL_OTEL_TRACES_EXPORTER": "console",
    }.items():
        monkeypatch.setenv(name, value)
    assert CommonSettings().model_dump() == _DEFAULTS
    assert TelemetrySettings().model_dump() == {"sdk_disabled": False, "traces_exporter": ("otlp",)}


def test_settings_variable_names_each_field() -> None:
    """settings_variable gives the prefixed name, or the alias users already know."""
    assert settings_variable(CommonSettings, "log_level") == "PODPULSE_LOG_LEVEL"
    assert settings_variable(CommonSettings, "redis_url") == "REDIS_URL"
    assert settings_variable(TelemetrySettings, "traces_exporter") == "OTEL_TRACES_EXPORTER"


def test_fields_set_in_code_by_name() -> None:
    """An entry point can still build settings from values by field name."""
    settings = CommonSettings(redis_url="redis://r:1/0", log_format="json")
    assert (settings.redis_url, settings.log_format) == ("redis://r:1/0", "json")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PODPULSE_LOG_FORMAT", "xml"),
        ("PODPULSE_LOG_LEVEL", "chatty"),
        ("PODPULSE_VISIBILITY_TIMEOUT_S", "0"),
        ("REDIS_URL", "http://x"),
    ],
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
    assert settings.traces_exporter == ("otlp", "console")
    assert settings.sdk_disabled is True


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


def test_secret_says_where_its_value_comes_from(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """origin() is the variable, the file or nothing, as get() reads; file_path() the file."""
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    monkeypatch.delenv("RUNPOD_API_KEY_FILE", raising=False)
    assert (RUNPOD_API_KEY.origin(), RUNPOD_API_KEY.file_path()) == (None, None)
    monkeypatch.setenv("RUNPOD_API_KEY_FILE", str(tmp_path / "key"))
    assert (RUNPOD_API_KEY.origin(), RUNPOD_API_KEY.file_path()) == ("file", tmp_path / "key")
    monkeypatch.setenv("RUNPOD_API_KEY", _canary())
    assert RUNPOD_API_KEY.origin() == "environment"


class _Clock:
    """A monotonic clock that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rotated_file_is_picked_up_after_the_ttl_not_within(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Within the TTL get() keeps the file's last content; once it has passed, the new one."""
    path = tmp_path / "webhook"
    first, second = _canary(), _canary()
    path.write_text(f"  {first}\n")
    monkeypatch.setenv("SLACK_WEBHOOK_URL_FILE", str(path))
    clock = _Clock()
    secret = Secret("SLACK_WEBHOOK_URL", ttl_s=1.0, clock=clock)
    assert secret.get() == first
    path.write_text(second + "\n")
    clock.now += 0.999
    assert secret.get() == first
    clock.now += 0.001
    assert secret.get() == second


def test_a_new_file_path_or_variable_applies_at_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Pointing *_FILE elsewhere, or setting the variable, needs no TTL to pass."""
    first, second, third = _canary(), _canary(), _canary()
    (tmp_path / "a").write_text(first)
    (tmp_path / "b").write_text(second)
    secret = Secret("RUNPOD_API_KEY", clock=_Clock())
    monkeypatch.setenv("RUNPOD_API_KEY_FILE", str(tmp_path / "a"))
    assert secret.get() == first
    monkeypatch.setenv("RUNPOD_API_KEY_FILE", str(tmp_path / "b"))
    assert secret.get() == second
    monkeypatch.setenv("RUNPOD_API_KEY", third)
    assert secret.get() == third


def test_unreadable_file_raises_on_require_until_it_is_readable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An unreadable *_FILE raises on every require() in the TTL; a fixed mount counts after it."""
    path = tmp_path / "missing"
    monkeypatch.setenv("RUNPOD_API_KEY_FILE", str(path))
    clock = _Clock()
    secret = Secret("RUNPOD_API_KEY", clock=clock)
    for _ in range(2):
        with pytest.raises(SecretError, match=r"RUNPOD_API_KEY_FILE=.*cannot be read"):
            secret.require()
    value = _canary()
    path.write_text(value)
    with pytest.raises(SecretError, match="cannot be read"):
        secret.require()
    clock.now += 1.0
    assert secret.require() == value


def test_ttl_zero_reads_the_file_on_every_call(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """ttl_s=0 turns the cache off; a negative TTL is refused."""
    path = tmp_path / "k"
    first, second = _canary(), _canary()
    path.write_text(first)
    monkeypatch.setenv("RUNPOD_API_KEY_FILE", str(path))
    secret = Secret("RUNPOD_API_KEY", ttl_s=0, clock=_Clock())
    assert secret.get() == first
    path.write_text(second)
    assert secret.get() == second
    with pytest.raises(ValueError, match="ttl_s"):
        Secret("X", ttl_s=-1)


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
