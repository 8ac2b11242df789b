"""podpulse endpoint show|diff|apply|update|history against a real twin (its v2 management
API and real SDK worker processes), with events read by a real Celery worker on Redis."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from typer.testing import CliRunner, Result

from podpulse.common.bus import create_celery_app
from podpulse.common.cli import ENTRY_POINT_GROUP, build_app
from podpulse.common.events import EndpointConfigChanged, parse_event
from podpulse.common.runpod import EndpointConfig, ScalerType
from podpulse.common.settings import CommonSettings
from podpulse.common.testing import free_port, redis_server, wait_until
from podpulse.tagger.endpoint._history import read_history
from podpulse.twin import CalibratedSettings, RunningTwin, TwinSettings, running_twin

_APP = build_app(entry_points(group=ENTRY_POINT_GROUP))
START = EndpointConfig(
    workers_min=0, workers_max=1, idle_timeout_s=5,
    scaler_type=ScalerType.QUEUE_DELAY, scaler_value=1,
)  # fmt: skip

TOML = """\
[endpoint]
id = "podpulse-twin"
image = "runpod/pytorch:2.8.0-py3.11-cuda12.8.1-cudnn-devel-ubuntu22.04"
model = "Puneetrinity/qwen2-7b-career"
model_size_gb = 22.69
gpu = "NVIDIA GeForce RTX 4090"

[endpoint.workers]
min = 0
max = 3
idle_timeout_s = 60

[endpoint.scaling]
type = "REQUEST_COUNT"
value = 2
"""


class Inbox:
    """The endpoint_config_changed events the notify worker received."""

    def __init__(self) -> None:
        self.events: list[EndpointConfigChanged] = []
        self.lock = threading.Lock()

    def add(self, payload: dict[str, Any]) -> None:
        event = parse_event(payload)
        assert isinstance(event, EndpointConfigChanged)
        with self.lock:
            self.events.append(event)

    def by_id(self, event_id: str) -> EndpointConfigChanged | None:
        with self.lock:
            return next((e for e in self.events if e.event_id == event_id), None)


@pytest.fixture(scope="module")
def bus() -> Iterator[tuple[str, Inbox]]:
    """A private Redis and a solo Celery worker on the notify queue."""
    with redis_server() as url:
        app = create_celery_app("notify", CommonSettings(redis_url=url))
        inbox = Inbox()

        @app.task(name="podpulse.notify.on_endpoint_config", shared=False)  # type: ignore[untyped-decorator]  # celery ships no type hints
        def on_endpoint_config(payload: dict[str, Any]) -> None:
            inbox.add(payload)

        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            yield url, inbox


@pytest.fixture(scope="module")
def twin() -> Iterator[RunningTwin]:
    """A twin with no warm worker (workersMin 0) until a test asks for one."""
    settings = TwinSettings(
        workers_min=0, workers_max=1, idle_timeout_s=5, scaler_value=1, stop_grace_s=0.3
    )
    calibrated = CalibratedSettings(exec_ms=20, distribution="fixed")
    with running_twin(settings, calibrated, wait_ready=False) as running:
        yield running


@pytest.fixture
def cli(
    twin: RunningTwin, bus: tuple[str, Inbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Result]:
    """Run `podpulse ...` in-process against the twin, from an empty folder."""
    for name in list(os.environ):
        if name.startswith(("RUNPOD_", "TAGGER_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    twin.platform.update_scaling(START)  # each test starts from the same endpoint
    env = {
        "RUNPOD_MANAGEMENT_BASE_URL": twin.base_url,
        "RUNPOD_ENDPOINT_BASE_URL": twin.base_url,
        "RUNPOD_API_KEY": twin.api_key,
        "REDIS_URL": bus[0],
        "TAGGER_ENDPOINT_HISTORY_FILE": str(tmp_path / "history.jsonl"),
    }
    runner = CliRunner()

    def invoke(*args: str, **extra: str) -> Result:
        return runner.invoke(_APP, list(args), env={**env, **extra}, catch_exceptions=False)

    return invoke


def _one_line_error(done: Result) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.output
    return lines[0]


def test_update_changes_the_twins_scaling_live(
    cli: Callable[..., Result], twin: RunningTwin, bus: tuple[str, Inbox], tmp_path: Path
) -> None:
    """update --workers-min 1 --yes: the twin starts a real worker, the event reaches the
    notify queue with before/after, and the history holds the change."""
    done = cli("endpoint", "update", "--workers-min", "1", "--endpoint", twin.endpoint_id, "--yes")
    assert done.exit_code == 0, done.output
    assert "workers.min             0 -> 1" in done.stdout
    assert twin.platform.scaling == START.model_copy(update={"workers_min": 1})
    wait_until(lambda: twin.platform.queue.waiting_takers() >= 1, 90, "a worker the twin started")
    (record,) = read_history(tmp_path / "history.jsonl")
    assert (record.command, record.source, record.event_published) == ("update", "flags", True)
    event = wait_until(lambda: bus[1].by_id(record.event_id), 30, "the event on notify")
    assert (event.before, event.after) == (START, record.after)
    back = cli("endpoint", "update", "--workers-min", "0", "--endpoint", twin.endpoint_id, "--yes")
    assert back.exit_code == 0, back.output
    listed = cli("endpoint", "history")
    assert listed.stdout.count("podpulse-twin update from flags") == 2


def test_apply_makes_the_twin_what_podpulse_toml_says(
    cli: Callable[..., Result], twin: RunningTwin, tmp_path: Path
) -> None:
    """diff shows the change (exit 1); apply without --yes or with --dry-run sends nothing;
    apply --yes makes the twin the file's config; a second apply finds nothing to do."""
    Path("podpulse.toml").write_text(TOML)
    differs = cli("endpoint", "diff")
    assert differs.exit_code == 1, differs.output
    assert "scaling.type            QUEUE_DELAY -> REQUEST_COUNT" in differs.stdout
    unconfirmed = cli("endpoint", "apply")
    assert unconfirmed.exit_code == 2
    assert "pass --yes" in _one_line_error(unconfirmed)
    dry = cli("endpoint", "apply", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "dry run: nothing sent" in dry.stdout
    assert twin.platform.scaling == START
    applied = cli("endpoint", "apply", "--yes")
    assert applied.exit_code == 0, applied.output
    assert twin.platform.scaling == EndpointConfig(
        workers_min=0, workers_max=3, idle_timeout_s=60,
        scaler_type=ScalerType.REQUEST_COUNT, scaler_value=2,
    )  # fmt: skip
    same = cli("endpoint", "diff")
    assert (same.exit_code, "no changes" in same.stdout) == (0, True)
    again = cli("endpoint", "apply", "--yes")
    assert again.exit_code == 0
    assert len(read_history(tmp_path / "history.jsonl")) == 1


def test_show_prints_the_live_config(cli: Callable[..., Result], twin: RunningTwin) -> None:
    """show --json is the live endpoint's config as one JSON object."""
    done = cli("endpoint", "show", "--json", RUNPOD_ENDPOINT_ID=twin.endpoint_id)
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) == {
        "endpoint_id": twin.endpoint_id, **START.model_dump(mode="json"),
    }  # fmt: skip


def test_a_dead_bus_keeps_the_change_and_says_so(
    cli: Callable[..., Result], twin: RunningTwin, tmp_path: Path
) -> None:
    """With Redis unreachable the change is applied and recorded unpublished, exit 0, and
    stderr says the event is missing."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    done = cli("endpoint", "update", "--workers-max", "2", "--endpoint", twin.endpoint_id,
               "--yes", REDIS_URL=dead)  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "endpoint_config_changed not published" in done.stderr
    assert twin.platform.scaling.workers_max == 2
    (record,) = read_history(tmp_path / "history.jsonl")
    assert not record.event_published


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (TOML.replace("max = 3", "max = 3\nmaxx = 4"), "endpoint.workers.maxx (line 11)"),
        (TOML.replace("value = 2", "value = 0"), "endpoint.scaling (line 13)"),
        (TOML.replace('id = "podpulse-twin"', 'id = "rpa_ABC"'), "endpoint.id (line 2)"),
        ("[endpoint\n", "not valid TOML"),
    ],
)
def test_a_bad_podpulse_toml_is_refused_in_one_line(
    cli: Callable[..., Result], twin: RunningTwin, toml: str, expected: str
) -> None:
    """apply and diff refuse a bad file with exit 2, one line naming the key and line."""
    Path("podpulse.toml").write_text(toml)
    for command in ("apply", "diff"):
        done = cli("endpoint", command, "--yes") if command == "apply" else cli("endpoint", command)
        assert done.exit_code == 2, done.output
        assert expected in _one_line_error(done)
    assert twin.platform.scaling == START


@pytest.mark.parametrize(
    "case",
    [
        (["update", "--workers-max", "x"], {}, 2, "--workers-max takes a whole number, got 'x'"),
        (["update", "--workers-min", "4"], {}, 2, "--workers-min (4) must not exceed"),
        (["update", "--scaler-value", "nan"], {}, 2, "--scaler-value must be a finite number"),
        (["update", "--scaler-type", "cpu"], {}, 2, "--scaler-type takes QUEUE_DELAY or"),
        (["update"], {}, 2, "nothing to change"),
        (["update", "--workers-max", "2", "--yes", "--dry-run"], {}, 2, "contradict"),
        (["show", "--endpoint", "RPA_NOT_AN_ID"], {}, 2, "--endpoint: not an endpoint id"),
        (["show", "--endpoint", "nope"], {}, 3, "unknown endpoint 'nope'"),
        (["show"], {"RUNPOD_API_KEY": "wrong"}, 3, "rejected"),
        (["show"], {"RUNPOD_API_KEY": ""}, 2, "secret RUNPOD_API_KEY is not set"),
        (["show"], {"RUNPOD_ENDPOINT_ID": ""}, 2, "which endpoint?"),
        (["show"], {"RUNPOD_MANAGEMENT_BASE_URL": "ftp://x"}, 2, "RUNPOD_MANAGEMENT_BASE_URL"),
        (["show"], {"RUNPOD_MANAGEMENT_BASE_URL": "http://127.0.0.1:9/v2"}, 3, "RunPod get"),
        (["apply", "--yes", "missing.toml"], {}, 2, "missing.toml: no such file"),
    ],
)
def test_bad_flags_and_settings_exit_with_one_line(
    cli: Callable[..., Result], twin: RunningTwin, case: tuple[list[str], dict[str, str], int, str]
) -> None:
    """Each bad flag, setting or endpoint gives its exit code and one line saying why."""
    args, extra, code, expected = case
    env = {"RUNPOD_ENDPOINT_ID": twin.endpoint_id, **extra}
    if env["RUNPOD_ENDPOINT_ID"] == "":
        del env["RUNPOD_ENDPOINT_ID"]
    done = cli("endpoint", *args, **env)
    assert done.exit_code == code, done.output
    assert expected in _one_line_error(done)
    assert twin.platform.scaling == START


def test_a_file_for_another_endpoint_is_refused(
    cli: Callable[..., Result], twin: RunningTwin
) -> None:
    """apply refuses a podpulse.toml whose id is not RUNPOD_ENDPOINT_ID's, naming both."""
    Path("podpulse.toml").write_text(TOML)
    done = cli("endpoint", "apply", "--yes", RUNPOD_ENDPOINT_ID="4cqta56swdioxi")
    assert done.exit_code == 2
    assert "describes endpoint podpulse-twin but RUNPOD_ENDPOINT_ID is 4cqta56swdioxi" in (
        _one_line_error(done)
    )
    assert twin.platform.scaling == START
