"""podpulse.toml: one strict reader; every refusal names the key and its line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from release_helpers import PODPULSE_TOML

from podpulse.common.runpod import EndpointConfig, ScalerType
from podpulse.tagger._deployment_file import (
    DeploymentFileError,
    parse_deployment_file,
    read_deployment_file,
)

# The example podpulse.toml, shared with the other tagger tests.
GOOD = PODPULSE_TOML


def test_the_example_in_docs_releases_reads() -> None:
    """docs/releases.md's podpulse.toml block passes the strict reader, prices included."""
    doc = Path(__file__).resolve().parents[3] / "docs" / "releases.md"
    text = doc.read_text(encoding="utf-8").split("```toml\n", 1)[1].split("```", 1)[0]
    example = textwrap.dedent(text)
    parsed = parse_deployment_file(example, source="docs/releases.md")
    assert parsed.endpoint.config().workers_min == 2
    assert parsed.prices["4090 PRO"].active_per_s == 0.00021


def test_the_documented_example_reads_as_its_endpoint_config() -> None:
    """The README's example file gives exactly the endpoint config it spells out."""
    endpoint = parse_deployment_file(GOOD).endpoint
    assert endpoint.model_size_gb == 22.69
    assert endpoint.config() == EndpointConfig(
        workers_min=2,
        workers_max=5,
        idle_timeout_s=180,
        scaler_type=ScalerType.QUEUE_DELAY,
        scaler_value=1,
    )


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("min = 2", 'min = "2"', "endpoint.workers.min (line 9): Input should be a valid integer"),
        ("max = 5", "max = 5\nmaxx = 3", "endpoint.workers.maxx (line 11): Extra inputs"),
        ("min = 2", "min = 9", "endpoint.workers (line 8): min (9) must not exceed max (5)"),
        ("value = 1", "value = 0.1", "endpoint.scaling (line 13): QUEUE_DELAY needs a delay"),
        ('"QUEUE_DELAY"', '"QUEUE"', "endpoint.scaling.type (line 14): Input should be"),
        ("[endpoint.scaling]", "[endpoint.scalin]", "endpoint.scalin (line 13): Extra inputs"),
        ("gpu =", "# gpu =", "endpoint.gpu (line 1): Field required"),
        ("model_size_gb = 22.69", "model_size_gb = -1", "endpoint.model_size_gb (line 5)"),
        ("value = 1", "value = true", "endpoint.scaling.value"),
        ("min = 2", "min = [", "not valid TOML"),
    ],
)
def test_a_bad_file_names_the_key_and_its_line(old: str, new: str, expected: str) -> None:
    """Wrong types, unknown keys, broken rules and broken TOML each name where."""
    with pytest.raises(DeploymentFileError) as caught:
        parse_deployment_file(GOOD.replace(old, new, 1), source="podpulse.toml")
    assert str(caught.value).startswith("podpulse.toml: ")
    assert expected in str(caught.value)


def test_a_key_shaped_endpoint_id_is_refused_without_echoing_it() -> None:
    """An API key pasted as the endpoint id is refused, and not repeated in the error."""
    key = "rpa_" + "K" * 40
    with pytest.raises(DeploymentFileError) as caught:
        parse_deployment_file(GOOD.replace("4cqta56swdioxi", key))
    assert "endpoint.id (line 2): not an endpoint id" in str(caught.value)
    assert key not in str(caught.value)


def test_a_missing_or_unreadable_file_is_one_error(tmp_path: Path) -> None:
    """No file, or bytes that are not UTF-8, give a DeploymentFileError naming the path."""
    with pytest.raises(DeploymentFileError, match="no such file"):
        read_deployment_file(tmp_path / "podpulse.toml")
    (tmp_path / "bad.toml").write_bytes(b"\xff\xfe[endpoint]")
    with pytest.raises(DeploymentFileError, match=r"bad\.toml: cannot be read"):
        read_deployment_file(tmp_path / "bad.toml")
