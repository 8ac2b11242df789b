"""Event models, the routing table and parse_event."""

from __future__ import annotations

import json
import re
import typing
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import BaseModel, ValidationError
from summary_examples import load_summary

from podpulse.common.bus import QUEUES, queue_for_task
from podpulse.common.events import (
    ROUTES,
    AlertStateChanged,
    EndpointConfigChanged,
    Event,
    EventError,
    ProbeRunCompleted,
    ReleaseRecorded,
    parse_event,
)
from podpulse.common.runpod import EndpointConfig, ScalerType

_CONFIG_BEFORE = EndpointConfig(
    workers_min=0, workers_max=1, idle_timeout_s=5, scaler_type=ScalerType.QUEUE_DELAY,
    scaler_value=4,
)  # fmt: skip
_CONFIG_AFTER = EndpointConfig(
    workers_min=2, workers_max=5, idle_timeout_s=180, scaler_type=ScalerType.QUEUE_DELAY,
    scaler_value=1,
)  # fmt: skip
_EXAMPLES: list[BaseModel] = [
    ProbeRunCompleted.of(load_summary("r1"), results_path="results/r1"),
    AlertStateChanged(
        rule="exec_p95",
        severity="CRITICAL",
        state="firing",
        value=5100.0,
        threshold=5000.0,
        labels={"endpoint": "ep"},
    ),
    ReleaseRecorded(
        tag="v1.0-production",
        commit="abcdef1",
        endpoint_id="ep",
        image="img",
        model="m",
        gpu="NVIDIA GeForce RTX 4090",
        recorded_at=datetime(2026, 1, 1, tzinfo=UTC),
    ),
    EndpointConfigChanged(endpoint_id="ep", before=_CONFIG_BEFORE, after=_CONFIG_AFTER),
]


def _event_types() -> set[str]:
    (union, _) = typing.get_args(Event)
    return {model.model_fields["type"].default for model in typing.get_args(union)}


@pytest.mark.parametrize("event", _EXAMPLES, ids=lambda e: type(e).__name__)
def test_every_event_round_trips_through_json(event: BaseModel) -> None:
    """model_dump(mode='json') -> JSON text -> parse_event gives back an equal event."""
    payload = event.model_dump(mode="json")
    assert parse_event(payload) == event
    assert parse_event(json.dumps(payload)) == event


def test_routes_cover_every_event_and_only_real_queues() -> None:
    """Each event type has subscribers, and each subscriber name maps to one of QUEUES."""
    assert set(ROUTES) == _event_types()
    for names in ROUTES.values():
        assert names
        assert all(queue_for_task(name) in QUEUES for name in names)


def test_routes_are_the_designed_ones() -> None:
    """Probe runs go to alerter and tagger; alerts, releases and config changes to notify."""
    assert dict(ROUTES) == {
        "probe_run_completed": ("podpulse.alerter.on_probe_run", "podpulse.tagger.on_probe_run"),
        "alert_state_changed": ("podpulse.notify.on_alert_state",),
        "release_recorded": ("podpulse.notify.on_release",),
        "endpoint_config_changed": ("podpulse.notify.on_endpoint_config",),
    }


def test_envelope_fields_are_fresh_uuid_hex_and_aware_utc() -> None:
    """event_id is a new 32-hex uuid per event; occurred_at is timezone-aware UTC."""
    first, second = (
        EndpointConfigChanged(endpoint_id="e", before=_CONFIG_BEFORE, after=_CONFIG_AFTER)
        for _ in "12"
    )
    assert first.event_id != second.event_id
    assert all(re.fullmatch("[0-9a-f]{32}", e.event_id) for e in (first, second))
    assert first.occurred_at.tzinfo is UTC


def test_offsets_are_converted_and_naive_times_refused() -> None:
    """An aware time in another zone becomes UTC; a naive one is rejected."""
    plus_two = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    payload = _EXAMPLES[2].model_dump(mode="json") | {"recorded_at": plus_two.isoformat()}
    assert parse_event(payload).recorded_at == datetime(2026, 1, 1, 10, tzinfo=UTC)  # type: ignore[union-attr]  # not every event of the union has it; this one does
    with pytest.raises(EventError, match="recorded_at"):
        parse_event(payload | {"recorded_at": "2026-01-01T12:00:00"})


def test_a_probe_run_event_names_its_target_and_agrees_with_its_summary() -> None:
    """The event carries the typed summary and its target kind; flat fields that disagree
    with the summary (a green slo_passed on a failing run, another target) are refused."""
    event = _EXAMPLES[0]
    assert isinstance(event, ProbeRunCompleted)
    assert (event.target_kind, event.endpoint_id) == ("hosted", "ep-canary")
    payload = event.model_dump(mode="json")
    assert parse_event(payload) == event
    failing = ProbeRunCompleted.of(load_summary("r2", total_p95=9000.0), results_path="r")
    assert failing.slo_passed is False
    for change in ({"slo_passed": True}, {"target_kind": "twin"}, {"endpoint_id": "other"}):
        with pytest.raises(EventError, match=f"{next(iter(change))} disagree with the summary"):
            parse_event(failing.model_dump(mode="json") | change)


def test_parse_error_names_the_type_and_the_field() -> None:
    """A missing or wrong field is reported as 'type ...: field: why'."""
    payload = _EXAMPLES[0].model_dump(mode="json")
    del payload["run_id"]
    payload["kind"] = "stress"
    with pytest.raises(EventError) as caught:
        parse_event(payload)
    message = str(caught.value)
    assert message.startswith("invalid event (type 'probe_run_completed'): ")
    assert "run_id: Field required" in message
    assert "kind: Input should be 'smoke', 'load', 'sweep' or 'soak'" in message


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"type": "probe_run_started"}, "type 'probe_run_started'"),
        ({"run_id": "r"}, "type '<missing>'"),
        ("not json", "<json>"),
    ],
)
def test_unknown_or_missing_type_is_reported(payload: object, expected: str) -> None:
    """An unknown type, a missing type or broken JSON each give an EventError saying so."""
    with pytest.raises(EventError, match=expected):
        parse_event(payload)  # type: ignore[arg-type]  # wrong shapes on purpose


def test_unknown_fields_are_refused() -> None:
    """A misspelt field is an error rather than silently dropped."""
    payload = _EXAMPLES[1].model_dump(mode="json") | {"treshold": 1.0}
    with pytest.raises(EventError, match="treshold: Extra inputs are not permitted"):
        parse_event(payload)


def test_events_are_immutable() -> None:
    """An event is a fact: assigning to a field raises."""
    with pytest.raises(ValidationError):
        _EXAMPLES[1].value = 1.0  # type: ignore[attr-defined]  # listed as BaseModel; this example has it
