"""The configuration reference: generated from the registered settings classes, and current."""

from __future__ import annotations

import difflib
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import Field
from pydantic_settings import BaseSettings, NoDecode
from typer.testing import CliRunner

from podpulse.common.cli import build_app
from podpulse.common.settings import CommonSettings, Secret, TelemetrySettings, env_settings
from podpulse.common.settings_doc import (
    ENTRY_POINT_GROUP,
    REGENERATE_COMMAND,
    SettingsDocError,
    installed_settings,
    load_settings,
    render,
)

_REFERENCE = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"


class DemoSettings(BaseSettings):
    """A demo part's settings.

    Only the first paragraph reaches the reference.
    """

    model_config = env_settings("DEMO_")

    mode: Literal["fast", "slow"] = Field(default="fast", description="How | fast.")
    workers: int = Field(default=2, ge=1, le=8, description="Worker\nprocesses.")
    cache_dir: Path = Field(default=Path.home() / ".cache" / "demo", description="Cache.")
    names: Annotated[tuple[str, ...], NoDecode] = Field(default=("a", "b"), description="N.")
    endpoint: str | None = Field(default=None, validation_alias="RUNPOD_DEMO_ID", description="E.")
    token_path: Path = Field(description="Required path.")


class ClashingSettings(BaseSettings):
    """Reads a variable DemoSettings already reads."""

    model_config = env_settings("OTHER_")

    endpoint: str = Field(default="x", validation_alias="RUNPOD_DEMO_ID", description="Again.")


class UndescribedSettings(BaseSettings):
    """A field without a description."""

    model_config = env_settings("BARE_")

    value: int = 1


def _ep(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


def test_configuration_reference_is_current() -> None:
    """docs/configuration.md is exactly what the installed settings classes generate."""
    expected = render(installed_settings())
    current = _REFERENCE.read_text(encoding="utf-8") if _REFERENCE.exists() else ""
    if current != expected:
        diff = difflib.unified_diff(
            current.splitlines(), expected.splitlines(), "committed", "generated", lineterm=""
        )
        pytest.fail(
            f"docs/configuration.md is stale: run {REGENERATE_COMMAND}\n"
            + "\n".join(list(diff)[:60])
        )


def test_common_registers_its_settings_classes() -> None:
    """podpulse-common's entry points name CommonSettings and TelemetrySettings."""
    installed = dict(installed_settings())
    assert installed["common"] is CommonSettings
    assert installed["telemetry"] is TelemetrySettings


def test_each_variable_gets_its_name_type_default_and_description() -> None:
    """Rows are sorted by variable; types, bounds, defaults and aliases read as a user writes."""
    text = render([("demo", DemoSettings)], secrets=())
    section = text.split("## `demo`: `test_common_settings_doc.DemoSettings`\n\n")[1]
    assert section.split("\n\n")[0] == "A demo part's settings."
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows == [
        "| `DEMO_CACHE_DIR` | path | `~/.cache/demo` | Cache. |",
        "| `DEMO_MODE` | one of `fast`, `slow` | `fast` | How \\| fast. |",
        "| `DEMO_NAMES` | comma-separated strings | `a, b` | N. |",
        "| `DEMO_TOKEN_PATH` | path | required | Required path. |",
        "| `DEMO_WORKERS` | integer, >= 1, <= 8 | `2` | Worker processes. |",
        "| `RUNPOD_DEMO_ID` | string | unset | E. |",
    ]
    assert str(Path.home()) not in text


def test_secrets_are_listed_with_their_file_variables() -> None:
    """Each secret is listed by name, with its <NAME>_FILE and its description."""
    text = render([], secrets=[Secret("Z_KEY", description="Zed."), Secret("A_KEY")])
    rows = [line for line in text.split("## Secrets")[1].splitlines() if line.startswith("| `")]
    assert rows == ["| `A_KEY` | `A_KEY_FILE` |  |", "| `Z_KEY` | `Z_KEY_FILE` | Zed. |"]


def test_a_variable_declared_twice_is_refused() -> None:
    """Two classes reading one variable is an error naming the variable and both classes."""
    with pytest.raises(SettingsDocError, match=r"RUNPOD_DEMO_ID is declared twice.*Clashing"):
        render([("demo", DemoSettings), ("other", ClashingSettings)])


def test_a_field_without_description_is_refused() -> None:
    """The reference will not show a blank description: the field is named instead."""
    with pytest.raises(SettingsDocError, match=r"UndescribedSettings\.value \(BARE_VALUE\)"):
        render([("bare", UndescribedSettings)])


def test_entry_points_load_sorted_once_or_fail_by_name() -> None:
    """Entries load sorted by name, a repeated class once; broken or wrong targets are named."""
    here = "test_common_settings_doc"
    loaded = load_settings(
        [_ep("z", f"{here}:DemoSettings"), _ep("a", f"{here}:ClashingSettings"),
         _ep("again", f"{here}:DemoSettings")]
    )  # fmt: skip
    assert loaded == [("a", ClashingSettings), ("again", DemoSettings)]
    with pytest.raises(SettingsDocError, match=r"'gone' .* does not load: ModuleNotFoundError"):
        load_settings([_ep("gone", "podpulse_no_such_module:Settings")])
    with pytest.raises(SettingsDocError, match=r"'odd' .* is not a BaseSettings class"):
        load_settings([_ep("odd", f"{here}:_ep")])


def test_config_doc_command_prints_the_reference() -> None:
    """`podpulse config-doc` prints exactly what render() generates for the installed classes."""
    result = CliRunner().invoke(build_app([]), ["config-doc"])
    assert result.exit_code == 0, result.output
    assert result.output == render(installed_settings())
