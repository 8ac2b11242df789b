"""The events podpulse services tell each other about, and the one table of who hears which.

A publisher sends an event by task name (``send_task``) to every subscriber listed in
:data:`ROUTES`; a subscriber task receives the event as one JSON object and calls
:func:`parse_event`. Adding a subscriber is one line here and a task in the subscribing service.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Annotated, Any, Literal, Self
from uuid import uuid4

from celery import Celery
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from podpulse.common.bus import queue_for_task
from podpulse.common.runpod import EndpointConfig
from podpulse.common.summary import ProbeKind, RunSummary, TargetKind

__all__ = [
    "ROUTES",
    "AlertStateChanged",
    "EndpointConfigChanged",
    "Event",
    "EventError",
    "ProbeRunCompleted",
    "ReleaseRecorded",
    "UtcDatetime",
    "parse_event",
    "publish",
]


def _new_event_id() -> str:
    return uuid4().hex


def _now() -> datetime:
    return datetime.now(UTC)


def _as_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


# Aware is required (a naive time is ambiguous across hosts); UTC so that events compare and
# serialise the same wherever they were made.
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_as_utc)]


class _EventBase(BaseModel):
    # frozen: an event is a fact; extra="forbid": a misspelt field is an error, not silently lost.
    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str = Field(
        default_factory=_new_event_id,
        pattern=r"^[0-9a-f]{32}$",
        description="uuid4 hex; subscribers use it to drop a re-delivered duplicate.",
    )
    occurred_at: UtcDatetime = Field(
        default_factory=_now, description="When it happened, in UTC (an offset is converted)."
    )


class ProbeRunCompleted(_EventBase):
    """A load, sweep, soak or smoke run finished, with its summary and SLO verdict.

    The flat fields repeat the summary's for subscribers that route on them without reading
    the summary; they must agree with it, or the event does not validate.
    """

    type: Literal["probe_run_completed"] = "probe_run_completed"
    run_id: str = Field(min_length=1, description="Names the run's results/<run_id>/ folder.")
    kind: ProbeKind
    target_kind: TargetKind = Field(description="hosted endpoint or local twin.")
    endpoint_id: str = Field(min_length=1)
    summary: RunSummary = Field(description="The run's summary.json.")
    slo_passed: bool = Field(description="The run's verdict (summary.passed).")
    results_path: str = Field(min_length=1)

    @model_validator(mode="after")
    def _agrees_with_summary(self) -> Self:
        summary = self.summary
        expected = {
            "run_id": summary.run_id,
            "kind": summary.kind,
            "target_kind": summary.target.kind,
            "endpoint_id": summary.target.endpoint_id,
            "slo_passed": summary.passed,
        }
        wrong = [name for name, value in expected.items() if getattr(self, name) != value]
        if wrong:
            raise ValueError(f"{', '.join(wrong)} disagree with the summary")
        return self

    @classmethod
    def of(cls, summary: RunSummary, *, results_path: str) -> ProbeRunCompleted:
        """The event of a finished run, its flat fields taken from *summary*."""
        return cls(
            run_id=summary.run_id,
            kind=summary.kind,
            target_kind=summary.target.kind,
            endpoint_id=summary.target.endpoint_id,
            summary=summary,
            slo_passed=summary.passed,
            results_path=results_path,
        )


class AlertStateChanged(_EventBase):
    """An alert rule started firing or resolved."""

    type: Literal["alert_state_changed"] = "alert_state_changed"
    rule: str = Field(min_length=1)
    severity: Literal["CRITICAL", "WARNING"]
    state: Literal["firing", "resolved"]
    value: float = Field(description="The measured value when the state changed.")
    threshold: float
    labels: dict[str, str] = Field(default_factory=dict)


class ReleaseRecorded(_EventBase):
    """A production release passed the gate and was tagged and recorded."""

    type: Literal["release_recorded"] = "release_recorded"
    tag: str = Field(min_length=1, description="The annotated tag, e.g. v1.0-production.")
    commit: str = Field(min_length=7)
    endpoint_id: str = Field(min_length=1)
    image: str = Field(min_length=1)
    model: str = Field(min_length=1)
    gpu: str = Field(min_length=1)
    recorded_at: UtcDatetime = Field(description="The release's date in DEPLOYMENT.md.")


class EndpointConfigChanged(_EventBase):
    """A serverless endpoint's workers or scaling settings were changed."""

    type: Literal["endpoint_config_changed"] = "endpoint_config_changed"
    endpoint_id: str = Field(min_length=1)
    before: EndpointConfig = Field(description="Workers and scaling before the change.")
    after: EndpointConfig = Field(description="Workers and scaling after it.")


Event = Annotated[
    ProbeRunCompleted | AlertStateChanged | ReleaseRecorded | EndpointConfigChanged,
    Field(discriminator="type"),
]
_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)

# Event type -> the tasks that receive it. Names only: the bus routes each to its queue.
ROUTES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "probe_run_completed": ("podpulse.alerter.on_probe_run", "podpulse.tagger.on_probe_run"),
        "alert_state_changed": ("podpulse.notify.on_alert_state",),
        "release_recorded": ("podpulse.notify.on_release",),
        "endpoint_config_changed": ("podpulse.notify.on_endpoint_config",),
    }
)


class EventError(ValueError):
    """A payload is not a valid podpulse event; the message says which field and why."""


def publish(app: Celery, event: Event) -> list[str]:
    """Send *event* to every subscriber in ROUTES; return the task ids, in ROUTES order."""
    payload = event.model_dump(mode="json")
    return [
        app.send_task(name, args=[payload], queue=queue_for_task(name)).id
        for name in ROUTES[event.type]
    ]


def parse_event(payload: Mapping[str, Any] | str | bytes) -> Event:
    """Validate a received payload (a dict, or its JSON text) into its event model.

    Raises EventError naming the event type and each offending field.
    """
    try:
        if isinstance(payload, str | bytes):
            return _EVENT_ADAPTER.validate_json(payload)
        return _EVENT_ADAPTER.validate_python(payload)
    except ValidationError as exc:
        raise EventError(_describe(payload, exc)) from exc


def _describe(payload: Mapping[str, Any] | str | bytes, exc: ValidationError) -> str:
    kind = payload.get("type", "<missing>") if isinstance(payload, Mapping) else "<json>"
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        # The discriminator's tag comes first in loc; it is the type, not a field.
        loc = error["loc"][1:] if error["loc"] and error["loc"][0] in ROUTES else error["loc"]
        where = ".".join(str(part) for part in loc) or "<event>"
        problems.append(f"{where}: {error['msg']}")
    return f"invalid event (type {kind!r}): " + "; ".join(problems)
