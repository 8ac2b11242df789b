"""Changing a live endpoint's workers and scaling: the diff, the checks, the change itself.

The same code speaks to hosted RunPod and to the twin: both answer v2 ``GET``/``PATCH
/serverless/{id}`` (podpulse.common.runpod.ManagementClient), under whatever
RUNPOD_MANAGEMENT_BASE_URL names. A change is validated in full before anything is sent
(``EndpointConfig`` refuses what RunPod would), is applied under the history's lock only if
the live config is still the one the user was shown, and is then published as an
``endpoint_config_changed`` event and appended to the history -- in that order, so a bus
that is down costs the event, never the record of a change that happened.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kombu.exceptions
import redis
from pydantic import ValidationError

from podpulse.common.bus import create_celery_app
from podpulse.common.events import EndpointConfigChanged, publish
from podpulse.common.retry import Retry
from podpulse.common.runpod import EndpointConfig, ManagementClient, ScalerType
from podpulse.common.settings import CommonSettings

from ._history import HistoryRecord, append_record, changing

__all__ = [
    "FIELDS",
    "FLAGS",
    "ConcurrentChange",
    "EndpointInputError",
    "FieldChange",
    "Publisher",
    "apply_change",
    "bus_publisher",
    "changes_between",
    "config_rows",
    "flag_changes",
    "read_update_flags",
]

# Our field -> its name in podpulse.toml, which is also how diffs and tables show it.
FIELDS: Mapping[str, str] = {
    "workers_min": "workers.min",
    "workers_max": "workers.max",
    "idle_timeout_s": "workers.idle_timeout_s",
    "scaler_type": "scaling.type",
    "scaler_value": "scaling.value",
}
# Our field -> the `podpulse endpoint update` flag that sets it.
FLAGS: Mapping[str, str] = {
    "workers_min": "--workers-min",
    "workers_max": "--workers-max",
    "idle_timeout_s": "--idle-timeout",
    "scaler_type": "--scaler-type",
    "scaler_value": "--scaler-value",
}
BUS_ERRORS: tuple[type[BaseException], ...] = (
    kombu.exceptions.OperationalError,
    redis.RedisError,
    OSError,
)
# Waits between tries at the bus; a CLI gives up within seconds and says so.
_PUBLISH_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0)

# A long value may be a key pasted into the wrong flag: errors give its length, not its text.
_SHOWN_CHARS = 16
_INT = re.compile(r"^\s*[+-]?\d{1,12}\s*$")

# Returns None when the event was sent, else why not (one line).
Publisher = Callable[[EndpointConfigChanged], str | None]


class EndpointInputError(ValueError):
    """A requested change that is invalid; the message names the flags or keys at fault."""


class ConcurrentChange(RuntimeError):
    """The live config changed between showing the diff and applying it; nothing was sent."""


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field that differs: its podpulse.toml name and both values, as shown."""

    name: str
    before: str
    after: str


def _shown(value: Any) -> str:
    if isinstance(value, ScalerType):
        return value.value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 1.0 and 1 are the same delay; show them alike
    return str(value)


def config_rows(config: EndpointConfig) -> list[tuple[str, str]]:
    """(name, value) for every field, in podpulse.toml order."""
    return [(name, _shown(getattr(config, field))) for field, name in FIELDS.items()]


def changes_between(before: EndpointConfig, after: EndpointConfig) -> tuple[FieldChange, ...]:
    """The fields that differ, in podpulse.toml order; empty when the configs are equal."""
    changes = []
    for field, name in FIELDS.items():
        old, new = getattr(before, field), getattr(after, field)
        if old != new:
            changes.append(FieldChange(name, _shown(old), _shown(new)))
    return tuple(changes)


def read_update_flags(
    *,
    workers_min: str | None = None,
    workers_max: str | None = None,
    idle_timeout_s: str | None = None,
    scaler_type: str | None = None,
    scaler_value: str | None = None,
) -> dict[str, Any]:
    """The ``podpulse endpoint update`` flags as typed changes (our field names; None = not
    given); EndpointInputError naming the flag when one does not parse or none is given."""
    changes: dict[str, Any] = {
        "workers_min": _count(workers_min, FLAGS["workers_min"]),
        "workers_max": _count(workers_max, FLAGS["workers_max"]),
        "idle_timeout_s": _count(idle_timeout_s, FLAGS["idle_timeout_s"]),
        "scaler_type": _scaler_type(scaler_type),
        "scaler_value": _number(scaler_value, FLAGS["scaler_value"]),
    }
    if all(value is None for value in changes.values()):
        raise EndpointInputError(
            "nothing to change: give at least one of " + ", ".join(FLAGS.values())
        )
    return changes


def _count(text: str | None, flag: str) -> int | None:
    if text is None:
        return None
    if not _INT.match(text):
        raise EndpointInputError(f"{flag} takes a whole number, got {_excerpt(text)}")
    return int(text)


def _number(text: str | None, flag: str) -> int | float | None:
    if text is None:
        return None
    if _INT.match(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        raise EndpointInputError(f"{flag} takes a number, got {_excerpt(text)}") from None


def _scaler_type(text: str | None) -> ScalerType | None:
    if text is None:
        return None
    try:
        return ScalerType(text.strip().upper())
    except ValueError:
        raise EndpointInputError(
            f"--scaler-type takes QUEUE_DELAY or REQUEST_COUNT, got {_excerpt(text)}"
        ) from None


def _excerpt(text: str) -> str:
    if len(text) > _SHOWN_CHARS:
        return f"a value of {len(text)} characters"
    # Escaped, so a line break or control character in the input cannot split the message.
    return ascii(text)


def flag_changes(current: EndpointConfig, changes: Mapping[str, Any]) -> EndpointConfig:
    """*current* with the flags' *changes* (our field names; None = not given) applied.

    EndpointInputError naming the flags when the result is not a valid config: checked here,
    so nothing invalid is ever sent.
    """
    given = {name: value for name, value in changes.items() if value is not None}
    unknown = sorted(set(given) - set(FIELDS))
    if unknown:
        raise EndpointInputError(f"unknown field(s): {', '.join(unknown)}")
    if not given:
        raise EndpointInputError(
            "nothing to change: give at least one of " + ", ".join(FLAGS.values())
        )
    value = given.get("scaler_value")
    if isinstance(value, float) and not math.isfinite(value):
        raise EndpointInputError(f"--scaler-value must be a finite number, got {value}")
    new_type = given.get("scaler_type")
    if new_type is not None and new_type != current.scaler_type and "scaler_value" not in given:
        # A queue delay in seconds means nothing as a request count, and vice versa.
        raise EndpointInputError(
            f"--scaler-type {_shown(new_type)} changes the scaler from "
            f"{current.scaler_type.value}: give --scaler-value for the new type too"
        )
    try:
        return EndpointConfig.model_validate({**current.model_dump(), **given})
    except ValidationError as exc:
        raise EndpointInputError(_flag_problems(exc)) from None


def _flag_problems(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        message = error["msg"].removeprefix("Value error, ")
        for field, flag in FLAGS.items():
            message = message.replace(field, flag)
        field = str(error["loc"][0]) if error["loc"] else ""
        problems.append(f"{FLAGS[field]}: {message}" if field in FLAGS else message)
    return "; ".join(problems)


async def apply_change(
    client: ManagementClient,
    endpoint_id: str,
    desired: EndpointConfig,
    *,
    shown: EndpointConfig,
    history_file: Path,
    publisher: Publisher,
    command: str,
    source: str,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> tuple[HistoryRecord, str | None]:
    """PATCH *desired* if the live config is still *shown*; publish, record, return both.

    Returns the history record and why its event was not published (None when it was).
    ConcurrentChange, sending nothing, when the live config is no longer *shown*; RunPod
    errors propagate as the client raises them; HistoryError when the record cannot be
    written (the change was applied, and the message says so).
    """
    with changing(history_file):
        live = await client.get(endpoint_id)
        if live != shown:
            rows = ", ".join(
                f"{c.name} {c.before} -> {c.after}" for c in changes_between(shown, live)
            )
            raise ConcurrentChange(
                f"endpoint {endpoint_id} changed while this command ran ({rows}); nothing was "
                "sent: run it again to see the new diff"
            )
        after = await client.update(endpoint_id, desired)
        event = EndpointConfigChanged(endpoint_id=endpoint_id, before=live, after=after)
        not_sent = publisher(event)
        record = HistoryRecord(
            at=now(),
            endpoint_id=endpoint_id,
            management_base_url=client.base_url,
            command="apply" if command == "apply" else "update",
            source=source,
            before=live,
            after=after,
            event_id=event.event_id,
            event_published=not_sent is None,
        )
        append_record(history_file, record)
    return record, not_sent


def bus_publisher(common: CommonSettings, attempts: int) -> Publisher:
    """Publish on the bus REDIS_URL names, *attempts* tries a few seconds apart at most."""
    app = create_celery_app("tagger", common)
    app.conf.update(
        # Celery's publish retry (0.8 s per send to a dead Redis, measured) or, with it off,
        # kombu's reconnect loop (6 s) would wait before ours does; with both off a send
        # fails in under 0.1 s and our policy alone says how long the command waits.
        task_publish_retry=False,
        broker_connection_timeout=3,
        broker_transport_options={**app.conf.broker_transport_options, "max_retries": 0},
    )
    retry = Retry.after(_PUBLISH_DELAYS_S[: attempts - 1], on=BUS_ERRORS)

    def send(event: EndpointConfigChanged) -> str | None:
        try:
            retry.call(lambda: publish(app, event))
        except BUS_ERRORS as exc:
            # The broker URL may carry a password; the error's class and errno suffice.
            return f"{type(exc).__name__} after {attempts} attempt(s)"
        return None

    return send
