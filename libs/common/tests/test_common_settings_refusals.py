"""CommonSettings refuses endpoint settings that would leak a credential, and settings errors
never quote the value they refuse."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError, field_validator

from podpulse.common.settings import CommonSettings, describe_settings_error


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RUNPOD_ENDPOINT_ID", "RUNPOD_ENDPOINT_BASE_URL", "RUNPOD_MANAGEMENT_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("variable", ["RUNPOD_ENDPOINT_BASE_URL", "RUNPOD_MANAGEMENT_BASE_URL"])
@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://user:hunter2@api.runpod.ai/v2", "must not carry a user or password"),
        ("https://hunter2@api.runpod.ai/v2", "must not carry a user or password"),
        ("ftp://api.runpod.ai/v2", "must be an http:// or https:// URL"),
        ("api.runpod.ai/v2", "must be an http:// or https:// URL"),
    ],
)
def test_a_base_url_is_http_without_userinfo(
    monkeypatch: pytest.MonkeyPatch, variable: str, url: str, why: str
) -> None:
    """A base URL with user:pass@ or another scheme is refused, naming the variable only."""
    monkeypatch.setenv(variable, url)
    with pytest.raises(ValidationError) as caught:
        CommonSettings()
    message = describe_settings_error(caught.value)
    assert message.startswith(f"{variable}: {why}")
    assert "hunter2" not in message


@pytest.mark.parametrize("value", ["jpnw0v75y3qoql", "abc123xyz", "podpulse-twin"])
def test_endpoint_ids_of_runpod_and_the_twin_are_accepted(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """RunPod's short lowercase ids and the twin's default pass."""
    monkeypatch.setenv("RUNPOD_ENDPOINT_ID", value)
    assert CommonSettings().runpod_endpoint_id == value


@pytest.mark.parametrize(
    "value",
    [
        # Key-shaped fakes, built up so that no secret scanner takes them for keys.
        "rpa_" + "FAKE" * 10,
        "rpa_" + "fake" * 10,
        "3f9a2c1e8b7d6f5a4c3b2a1f0e9d8c7b6a5f4e3d2c1b",
        "has space",
    ],
)
def test_a_key_shaped_endpoint_id_is_refused_unechoed(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """An API key (or any long or odd value) in RUNPOD_ENDPOINT_ID is refused, not quoted."""
    monkeypatch.setenv("RUNPOD_ENDPOINT_ID", value)
    with pytest.raises(ValidationError) as caught:
        CommonSettings()
    message = describe_settings_error(caught.value)
    assert message.startswith("RUNPOD_ENDPOINT_ID: not an endpoint id")
    assert value not in message


class _Quoting(BaseModel):
    """A settings-like model whose validator quotes its value, as PROBER_SWEEP_CRON did."""

    token: str

    @field_validator("token")
    @classmethod
    def _refuse(cls, value: str) -> str:
        raise ValueError(f"bad value {value!r}, or plainly {value}")


def test_describe_settings_error_never_quotes_the_value() -> None:
    """A validator that quotes its value anyway has it replaced by <value>."""
    with pytest.raises(ValidationError) as caught:
        _Quoting(token="s3cr3t-token")
    message = describe_settings_error(caught.value)
    assert message == "token: bad value <value>, or plainly <value>"
