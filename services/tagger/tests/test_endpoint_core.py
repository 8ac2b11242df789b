"""podpulse.tagger.endpoint._change and _history: flag checks, diffs, the history file, and a change
sent to hosted RunPod's v2 shape (httpx.MockTransport: api.runpod.io cannot run here)."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from podpulse.common.events import EndpointConfigChanged
from podpulse.common.runpod import (
    RECOMMENDED_CONFIG,
    Backoff,
    EndpointConfig,
    ManagementClient,
    RunPodAuthError,
    ScalerType,
)
from podpulse.common.settings import CommonSettings
from podpulse.common.testing import free_port
from podpulse.tagger.endpoint._change import (
    ConcurrentChange,
    EndpointInputError,
    apply_change,
    bus_publisher,
    changes_between,
    flag_changes,
)
from podpulse.tagger.endpoint._history import (
    HistoryError,
    HistoryRecord,
    append_record,
    changing,
    read_history,
)

KEY = "rpa_HOSTED_CANARY_0123456789ABCDEF"
URL = "https://api.runpod.io/v2/serverless/4cqta56swdioxi"
STARTING = EndpointConfig(
    workers_min=0, workers_max=1, idle_timeout_s=5,
    scaler_type=ScalerType.QUEUE_DELAY, scaler_value=4,
)  # fmt: skip


class Hosted:
    """A scripted v2 management API: holds one endpoint's config, records every request."""

    def __init__(self, config: EndpointConfig):
        self.config = config
        self.requests: list[httpx.Request] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return httpx.Response(401, json={"error": "unauthorized"})
        if request.method == "PATCH":
            body = json.loads(request.content)
            self.config = EndpointConfig.from_v2(body)
        body = {"id": "4cqta56swdioxi", "name": "qwen2-7b-career", "gpuIds": "ADA_24",
                **self.config.to_v2()}  # fmt: skip
        return httpx.Response(200, json=body)

    def client(self, key: str = KEY) -> ManagementClient:
        async def no_sleep(_: float) -> None:
            return None

        return ManagementClient(
            key,
            client=httpx.AsyncClient(transport=httpx.MockTransport(self.handle)),
            backoff=Backoff(sleep=no_sleep),
        )


class Published:
    """A publisher that keeps the events it was given, or fails as a dead bus would."""

    def __init__(self, fail: str | None = None) -> None:
        self.events: list[EndpointConfigChanged] = []
        self.fail = fail

    def __call__(self, event: EndpointConfigChanged) -> str | None:
        self.events.append(event)
        return self.fail


def _apply(server: Hosted, history: Path, desired: EndpointConfig, publisher: Published,
           shown: EndpointConfig = STARTING) -> tuple[HistoryRecord, str | None]:  # fmt: skip
    async def scenario() -> tuple[HistoryRecord, str | None]:
        async with server.client() as client:
            return await apply_change(
                client, "4cqta56swdioxi", desired, shown=shown, history_file=history,
                publisher=publisher, command="apply", source="podpulse.toml",
                now=lambda: datetime(2026, 12, 1, 12, 0, tzinfo=UTC),
            )  # fmt: skip

    return asyncio.run(scenario())


def test_apply_sends_the_exact_v2_patch_body_to_hosted_runpod(tmp_path: Path) -> None:
    """The user's tuning becomes one PATCH to api.runpod.io/v2/serverless/{id} with exactly
    {"workers": {min, max, idleTimeout}, "scaling": {type, queueDelay}}, bearer-authenticated."""
    server = Hosted(STARTING)
    record, not_sent = _apply(server, tmp_path / "h.jsonl", RECOMMENDED_CONFIG, Published())
    assert [(r.method, str(r.url)) for r in server.requests] == [("GET", URL), ("PATCH", URL)]
    patch = server.requests[1]
    assert json.loads(patch.content) == {
        "workers": {"min": 2, "max": 5, "idleTimeout": 180},
        "scaling": {"type": "QUEUE_DELAY", "queueDelay": 1},
    }
    assert patch.headers["content-type"] == "application/json"
    assert (record.before, record.after, not_sent) == (STARTING, RECOMMENDED_CONFIG, None)


def test_request_count_scaling_is_sent_as_request_count(tmp_path: Path) -> None:
    """A REQUEST_COUNT config goes out as scaling.requestCount, an integer, and no queueDelay."""
    server = Hosted(STARTING)
    desired = flag_changes(STARTING, {"scaler_type": ScalerType.REQUEST_COUNT, "scaler_value": 3})
    _apply(server, tmp_path / "h.jsonl", desired, Published())
    assert json.loads(server.requests[1].content)["scaling"] == {
        "type": "REQUEST_COUNT",
        "requestCount": 3,
    }


def test_a_change_is_published_and_recorded_once(tmp_path: Path) -> None:
    """The event carries before/after; the history holds one record with the event's id."""
    history, publisher = tmp_path / "h.jsonl", Published()
    record, _ = _apply(Hosted(STARTING), history, RECOMMENDED_CONFIG, publisher)
    (event,) = publisher.events
    assert (event.endpoint_id, event.before, event.after) == (
        "4cqta56swdioxi", STARTING, RECOMMENDED_CONFIG,
    )  # fmt: skip
    assert read_history(history) == [record]
    assert record.event_id == event.event_id
    assert record.event_published
    assert record.management_base_url == "https://api.runpod.io/v2"


def test_a_dead_bus_costs_the_event_not_the_record(tmp_path: Path) -> None:
    """When publishing fails the change is still applied and recorded, marked unpublished."""
    history = tmp_path / "h.jsonl"
    server = Hosted(STARTING)
    record, not_sent = _apply(server, history, RECOMMENDED_CONFIG, Published(fail="down"))
    assert not_sent == "down"
    assert server.config == RECOMMENDED_CONFIG
    assert read_history(history) == [record]
    assert not record.event_published


def test_a_config_changed_by_someone_else_is_not_overwritten(tmp_path: Path) -> None:
    """When the live config is no longer the one shown, nothing is PATCHed or recorded."""
    # The user was shown STARTING; meanwhile someone set workers.max to 3.
    server = Hosted(STARTING.model_copy(update={"workers_max": 3}))
    publisher = Published()
    with pytest.raises(ConcurrentChange, match=r"\(workers\.max 1 -> 3\); nothing was sent"):
        _apply(server, tmp_path / "h.jsonl", RECOMMENDED_CONFIG, publisher, shown=STARTING)
    assert [r.method for r in server.requests] == ["GET"]
    assert publisher.events == []
    assert read_history(tmp_path / "h.jsonl") == []


def test_a_rejected_key_sends_no_patch_and_is_not_quoted(tmp_path: Path) -> None:
    """A 401 on the GET raises RunPodAuthError without the key, and PATCHes nothing."""
    server = Hosted(STARTING)

    async def scenario() -> None:
        async with server.client("rpa_WRONG_KEY_CANARY") as client:
            await apply_change(
                client, "4cqta56swdioxi", RECOMMENDED_CONFIG, shown=STARTING,
                history_file=tmp_path / "h.jsonl", publisher=Published(),
                command="apply", source="podpulse.toml",
            )  # fmt: skip

    with pytest.raises(RunPodAuthError) as caught:
        asyncio.run(scenario())
    assert "rpa_WRONG_KEY_CANARY" not in str(caught.value)
    assert [r.method for r in server.requests] == ["GET"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({}, "nothing to change"),
        ({"workers_min": 9}, "--workers-min (9) must not exceed --workers-max (1)"),
        ({"workers_max": 0}, "--workers-max: Input should be greater than or equal to 1"),
        ({"idle_timeout_s": 3601}, "--idle-timeout: Input should be less than or equal to 3600"),
        ({"scaler_value": 0.4}, "--scaler-value: QUEUE_DELAY needs a delay of at least 0.5"),
        ({"scaler_value": float("inf")}, "--scaler-value must be a finite number"),
        ({"scaler_type": ScalerType.REQUEST_COUNT}, "give --scaler-value for the new type too"),
        ({"scaler_type": ScalerType.REQUEST_COUNT, "scaler_value": 1.5}, "whole number >= 1"),
    ],
)
def test_invalid_flag_changes_name_the_flag(changes: dict[str, Any], message: str) -> None:
    """Each invalid update is refused before anything is sent, naming the flag and rule."""
    with pytest.raises(EndpointInputError) as caught:
        flag_changes(STARTING, changes)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_flag_changes_keep_what_is_not_given() -> None:
    """Only the flags given change; a new scaler type with its value replaces both."""
    changed = flag_changes(STARTING, {"workers_max": 5, "workers_min": None})
    assert changed == STARTING.model_copy(update={"workers_max": 5})
    switched = flag_changes(STARTING, {"scaler_type": ScalerType.REQUEST_COUNT, "scaler_value": 2})
    assert (switched.scaler_type, switched.scaler_value) == (ScalerType.REQUEST_COUNT, 2)


def test_diff_names_fields_as_podpulse_toml_does() -> None:
    """The diff lists changed fields only, by their podpulse.toml names, old then new."""
    changes = changes_between(STARTING, RECOMMENDED_CONFIG)
    assert [(c.name, c.before, c.after) for c in changes] == [
        ("workers.min", "0", "2"),
        ("workers.max", "1", "5"),
        ("workers.idle_timeout_s", "5", "180"),
        ("scaling.value", "4", "1"),
    ]
    assert changes_between(RECOMMENDED_CONFIG, RECOMMENDED_CONFIG) == ()


def _record(n: int) -> HistoryRecord:
    return HistoryRecord(
        at=datetime(2026, 12, 1, 12, n % 60, tzinfo=UTC), endpoint_id=f"ep-{n % 2}",
        management_base_url="https://api.runpod.io/v2", command="update", source="flags",
        before=STARTING, after=RECOMMENDED_CONFIG, event_id=f"{n:032x}", event_published=True,
    )  # fmt: skip


def test_a_torn_last_line_is_ignored_and_cut_by_the_next_append(tmp_path: Path) -> None:
    """A crash mid-append leaves a partial line: readers skip it, the next writer removes it."""
    history = tmp_path / "h.jsonl"
    append_record(history, _record(1))
    with history.open("ab") as handle:
        handle.write(_record(2).model_dump_json().encode()[:40])
    assert read_history(history) == [_record(1)]
    append_record(history, _record(3))
    assert read_history(history) == [_record(1), _record(3)]
    assert history.read_text().count("\n") == 2


def test_a_damaged_line_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    """A complete line that does not validate is refused with the file and line number."""
    history = tmp_path / "h.jsonl"
    append_record(history, _record(1))
    with history.open("a") as handle:
        handle.write('{"at": "yesterday"}\n')
    with pytest.raises(HistoryError, match=r"h\.jsonl line 2: at: "):
        read_history(history)


def test_history_filters_by_endpoint(tmp_path: Path) -> None:
    """read_history(endpoint_id=...) returns that endpoint's records only, oldest first."""
    history = tmp_path / "h.jsonl"
    for n in range(4):
        append_record(history, _record(n))
    assert [r.event_id for r in read_history(history, endpoint_id="ep-1")] == [
        f"{1:032x}", f"{3:032x}",
    ]  # fmt: skip


def _append_many(path: str, start: int) -> None:
    for n in range(start, start + 25):
        with changing(Path(path)):
            append_record(Path(path), _record(n))


def test_concurrent_writers_never_interleave(tmp_path: Path) -> None:
    """Four processes appending under the lock leave 100 whole, valid records."""
    history = tmp_path / "h.jsonl"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(str(history), 100 * i)) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    records = read_history(history)
    assert len(records) == 100
    assert len({r.event_id for r in records}) == 100


def test_a_dead_bus_is_reported_after_its_attempts() -> None:
    """Publishing with nothing listening on REDIS_URL gives up after its attempts (two here,
    and the reason counts them), with a reason that does not quote the broker URL."""
    port = free_port()
    url = f"redis://:hunter2secret@127.0.0.1:{port}/0"
    publisher = bus_publisher(CommonSettings(redis_url=url), attempts=2)
    event = EndpointConfigChanged(endpoint_id="ep", before=STARTING, after=RECOMMENDED_CONFIG)
    reason = publisher(event)
    assert reason is not None
    assert "2 attempt" in reason
    assert "hunter2secret" not in reason
