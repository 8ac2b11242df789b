"""EndpointConfig validation and v2 mapping; ManagementClient against httpx.MockTransport."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from podpulse.common.runpod import (
    RECOMMENDED_CONFIG,
    Backoff,
    EndpointConfig,
    EndpointPatch,
    ManagementClient,
    RunPodAuthError,
    RunPodNotFound,
    RunPodProtocolError,
    RunPodServerError,
    ScalerType,
)

KEY = "rp_MGMT_SECRET_9876543210"
URL = "https://api.runpod.io/v2/serverless/ep-1"

SERVER_ENDPOINT = {
    "id": "ep-1",
    "name": "qwen2-7b-career",
    "gpuIds": "ADA_24",
    "workers": {"min": 0, "max": 1, "idleTimeout": 5, "running": 0},
    "scaling": {"type": "QUEUE_DELAY", "queueDelay": 4},
}
SERVER_CONFIG = EndpointConfig(
    workers_min=0,
    workers_max=1,
    idle_timeout_s=5,
    scaler_type=ScalerType.QUEUE_DELAY,
    scaler_value=4,
)


class Server:
    """Plays scripted replies in order and records every request it receives."""

    def __init__(self, *replies: httpx.Response) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.replies.pop(0)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def client(self, api_key: Any = KEY) -> ManagementClient:
        http = httpx.AsyncClient(transport=httpx.MockTransport(self.handle))
        backoff = Backoff(sleep=self.sleep, jitter=lambda: 0.5)
        return ManagementClient(api_key, client=http, backoff=backoff)


def ok(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=data, headers=headers)


def echo(config: EndpointConfig) -> httpx.Response:
    """What the server answers to a PATCH: the endpoint object with the new config."""
    return ok({"id": "ep-1", "name": "qwen2-7b-career", **config.to_v2()})


# --- EndpointConfig -----------------------------------------------------------------------


def test_recommended_config_matches_the_users_tuning() -> None:
    """RECOMMENDED_CONFIG is workers 2..5, QUEUE_DELAY 1 s, idleTimeout 180 s, in v2 form."""
    assert RECOMMENDED_CONFIG.to_v2() == {
        "workers": {"min": 2, "max": 5, "idleTimeout": 180},
        "scaling": {"type": "QUEUE_DELAY", "queueDelay": 1},
    }


def test_request_count_maps_to_request_count_field() -> None:
    """REQUEST_COUNT serialises as scaling.requestCount with an integer."""
    config = EndpointConfig(
        workers_min=0,
        workers_max=3,
        idle_timeout_s=60,
        scaler_type=ScalerType.REQUEST_COUNT,
        scaler_value=4.0,
    )
    assert config.to_v2()["scaling"] == {"type": "REQUEST_COUNT", "requestCount": 4}
    assert isinstance(config.scaler_value, int)


@pytest.mark.parametrize(
    ("changes", "field", "text"),
    [
        ({"workers_min": -1}, "workers_min", "greater than or equal to 0"),
        ({"workers_max": 0, "workers_min": 0}, "workers_max", "greater than or equal to 1"),
        ({"workers_min": 6}, "workers_min", "workers_min (6) must not exceed workers_max (5)"),
        ({"idle_timeout_s": 0}, "idle_timeout_s", "greater than or equal to 1"),
        ({"idle_timeout_s": 3601}, "idle_timeout_s", "less than or equal to 3600"),
        ({"scaler_value": 0.4}, "scaler_value", "at least 0.5 seconds"),
        ({"scaler_value": math.inf}, "scaler_value", "finite"),
        ({"scaler_type": "REQUEST_COUNT", "scaler_value": 0}, "scaler_value", "whole number >= 1"),
        ({"scaler_type": "REQUEST_COUNT", "scaler_value": 1.5}, "scaler_value", "whole number"),
        ({"scaler_type": "CPU"}, "scaler_type", "'QUEUE_DELAY' or 'REQUEST_COUNT'"),
        ({"workers_max": True}, "workers_max", "not a boolean"),
        ({"workersMin": 1}, "workersMin", "Extra inputs are not permitted"),
    ],
)
def test_invalid_config_names_the_field(changes: dict[str, Any], field: str, text: str) -> None:
    """Each invalid value raises a ValidationError that names the field and the rule."""
    with pytest.raises(ValidationError) as caught:
        EndpointConfig.model_validate({**RECOMMENDED_CONFIG.model_dump(), **changes})
    message = str(caught.value)
    assert field in message
    assert text in message


def test_from_v2_ignores_extra_fields() -> None:
    """from_v2 reads workers/scaling and ignores id, name and unknown nested keys."""
    assert EndpointConfig.from_v2(SERVER_ENDPOINT) == SERVER_CONFIG


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (("workers",), "workers"),
        (("scaling",), "scaling"),
        (("workers", "idleTimeout"), "workers.idleTimeout"),
        (("workers", "min"), "workers.min"),
        (("scaling", "type"), "scaling.type"),
        (("scaling", "queueDelay"), "scaling.queueDelay"),
    ],
)
def test_from_v2_missing_part_names_it(path: tuple[str, ...], field: str) -> None:
    """from_v2 raises RunPodProtocolError naming the missing v2 field."""
    data = json.loads(json.dumps(SERVER_ENDPOINT))
    parent = data
    for name in path[:-1]:
        parent = parent[name]
    del parent[path[-1]]
    with pytest.raises(RunPodProtocolError, match=re.escape(f"'{field}' is missing")) as caught:
        EndpointConfig.from_v2(data)
    assert caught.value.field == field


def test_from_v2_unknown_scaler_type_is_named() -> None:
    """An unknown scaling.type is reported with the value found."""
    data = {**SERVER_ENDPOINT, "scaling": {"type": "GPU_UTIL", "target": 80}}
    with pytest.raises(RunPodProtocolError, match=r"scaling\.type is 'GPU_UTIL'"):
        EndpointConfig.from_v2(data)


def test_from_v2_invalid_value_uses_the_wire_name() -> None:
    """An out-of-range value from the server is reported by its v2 name (scaling.queueDelay)."""
    data = {**SERVER_ENDPOINT, "scaling": {"type": "QUEUE_DELAY", "queueDelay": 0.1}}
    with pytest.raises(RunPodProtocolError, match=r"'scaling\.queueDelay' is invalid"):
        EndpointConfig.from_v2(data)


@st.composite
def configs(draw: st.DrawFn) -> EndpointConfig:
    workers_max = draw(st.integers(1, 1000))
    scaler_type = draw(st.sampled_from(ScalerType))
    if scaler_type is ScalerType.QUEUE_DELAY:
        value: float = draw(st.floats(0.5, 3600, allow_nan=False) | st.integers(1, 3600).map(float))
    else:
        value = draw(st.integers(1, 10_000))
    return EndpointConfig(
        workers_min=draw(st.integers(0, workers_max)),
        workers_max=workers_max,
        idle_timeout_s=draw(st.integers(1, 3600)),
        scaler_type=scaler_type,
        scaler_value=value,
    )


@settings(deadline=None)
@given(configs())
def test_v2_round_trip(config: EndpointConfig) -> None:
    """Any valid config survives to_v2 -> JSON text -> from_v2 unchanged."""
    wire = json.loads(json.dumps(config.to_v2()))
    assert EndpointConfig.from_v2({"id": "ep", **wire}) == config


@settings(deadline=None)
@given(
    workers_min=st.integers(-3, 12),
    workers_max=st.integers(-3, 12),
    idle=st.integers(-5, 4000),
    scaler_type=st.sampled_from(ScalerType),
    value=st.floats(-2, 20, allow_nan=False) | st.integers(-2, 20),
)
def test_validation_accepts_exactly_the_documented_rules(
    workers_min: int, workers_max: int, idle: int, scaler_type: ScalerType, value: float
) -> None:
    """A config constructs if and only if every documented rule holds."""
    if scaler_type is ScalerType.QUEUE_DELAY:
        value_ok = value >= 0.5
    else:
        value_ok = float(value).is_integer() and value >= 1
    expected = (
        0 <= workers_min <= workers_max and workers_max >= 1 and 1 <= idle <= 3600 and value_ok
    )
    fields = {
        "workers_min": workers_min,
        "workers_max": workers_max,
        "idle_timeout_s": idle,
        "scaler_type": scaler_type,
        "scaler_value": value,
    }
    try:
        EndpointConfig.model_validate(fields)
    except ValidationError:
        assert not expected
    else:
        assert expected


# --- ManagementClient ---------------------------------------------------------------------


async def test_get_reads_v2_serverless_endpoint() -> None:
    """get() GETs api.runpod.io/v2/serverless/{id} with the bearer key and parses the config."""
    server = Server(ok(SERVER_ENDPOINT))
    async with server.client() as mgmt:
        config = await mgmt.get("ep-1")
    (request,) = server.requests
    assert (request.method, str(request.url)) == ("GET", URL)
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert config == SERVER_CONFIG


async def test_update_patches_the_v2_body() -> None:
    """update() PATCHes exactly the v2 body and returns what the server reports."""
    server = Server(echo(RECOMMENDED_CONFIG))
    async with server.client() as mgmt:
        result = await mgmt.update("ep-1", RECOMMENDED_CONFIG)
    (request,) = server.requests
    assert (request.method, str(request.url)) == ("PATCH", URL)
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert json.loads(request.content) == {
        "workers": {"min": 2, "max": 5, "idleTimeout": 180},
        "scaling": {"type": "QUEUE_DELAY", "queueDelay": 1},
    }
    assert result == RECOMMENDED_CONFIG


async def test_update_returns_the_servers_view_not_the_request() -> None:
    """If the server reports a different config than sent, update() returns the server's."""
    server = Server(echo(SERVER_CONFIG))
    async with server.client() as mgmt:
        result = await mgmt.update("ep-1", RECOMMENDED_CONFIG)
    assert result == SERVER_CONFIG


async def test_update_partial_merges_onto_the_current_config() -> None:
    """update_partial GETs, changes only the named fields and PATCHes the merged whole."""
    merged = SERVER_CONFIG.model_copy(update={"workers_min": 1, "idle_timeout_s": 180})
    server = Server(ok(SERVER_ENDPOINT), echo(merged))
    async with server.client() as mgmt:
        result = await mgmt.update_partial("ep-1", workers_min=1, idle_timeout_s=180)
    get, patch = server.requests
    assert (get.method, patch.method) == ("GET", "PATCH")
    assert json.loads(patch.content) == {
        "workers": {"min": 1, "max": 1, "idleTimeout": 180},
        "scaling": {"type": "QUEUE_DELAY", "queueDelay": 4},
    }
    assert result == merged


async def test_update_partial_validates_the_merge_before_sending() -> None:
    """A merge that breaks a rule (min above the current max) raises and sends no PATCH."""
    server = Server(ok(SERVER_ENDPOINT))
    async with server.client() as mgmt:
        with pytest.raises(ValidationError, match=r"workers_min \(3\) must not exceed"):
            await mgmt.update_partial("ep-1", workers_min=3)
    assert [r.method for r in server.requests] == ["GET"]


async def test_update_partial_rejects_unknown_fields_without_calling() -> None:
    """An unknown field name raises ValueError before any request."""
    server = Server()
    async with server.client() as mgmt:
        with pytest.raises(ValueError, match=r"unknown EndpointConfig field\(s\) \['workersMin'\]"):
            await mgmt.update_partial("ep-1", workersMin=2)
    assert server.requests == []


async def test_update_partial_scaler_type_change_needs_a_value() -> None:
    """Switching scaler_type without a scaler_value raises instead of reinterpreting the old."""
    server = Server(ok(SERVER_ENDPOINT))
    async with server.client() as mgmt:
        with pytest.raises(ValueError, match="needs a scaler_value"):
            await mgmt.update_partial("ep-1", scaler_type=ScalerType.REQUEST_COUNT)
    assert [r.method for r in server.requests] == ["GET"]


async def test_update_partial_without_a_change_sends_no_patch() -> None:
    """A merge equal to the current config returns it without writing."""
    server = Server(ok(SERVER_ENDPOINT))
    async with server.client() as mgmt:
        result = await mgmt.update_partial("ep-1", workers_max=1)
    assert result == SERVER_CONFIG
    assert [r.method for r in server.requests] == ["GET"]


async def test_patch_is_retried_on_5xx_honouring_retry_after() -> None:
    """PATCH is idempotent, so a 503 with Retry-After is waited out and resent identically."""
    server = Server(ok({}, 503, {"Retry-After": "4"}), echo(RECOMMENDED_CONFIG))
    async with server.client() as mgmt:
        await mgmt.update("ep-1", RECOMMENDED_CONFIG)
    assert server.sleeps == [4.0]
    first, second = server.requests
    assert first.method == second.method == "PATCH"
    assert first.content == second.content


async def test_persistent_5xx_raises_server_error() -> None:
    """After max_retries, a 5xx on get() raises RunPodServerError with status and excerpt."""
    server = Server(*[httpx.Response(500, text="database down") for _ in range(4)])
    async with server.client() as mgmt:
        with pytest.raises(RunPodServerError, match="HTTP 500 after 3 retries: database down"):
            await mgmt.get("ep-1")
    assert len(server.requests) == 4


async def test_unknown_endpoint_is_named() -> None:
    """404 raises RunPodNotFound naming the endpoint id."""
    server = Server(ok({"error": "endpoint not found"}, 404))
    async with server.client() as mgmt:
        with pytest.raises(RunPodNotFound, match="unknown endpoint 'ep-1'"):
            await mgmt.get("ep-1")


async def test_rejected_key_never_appears_in_error_or_repr() -> None:
    """401 raises RunPodAuthError without the key; the client's repr omits it too."""
    server = Server(ok({"error": f"invalid key {KEY}"}, 401))
    async with server.client() as mgmt:
        with pytest.raises(RunPodAuthError, match="key was rejected") as caught:
            await mgmt.update("ep-1", RECOMMENDED_CONFIG)
        assert KEY not in repr(mgmt)
    assert KEY not in str(caught.value)


async def test_rotated_key_is_used_on_the_next_request() -> None:
    """A callable key is re-read per request (GET then PATCH carry the key of their moment)."""
    keys = iter(["key-a", "key-b"])
    server = Server(ok(SERVER_ENDPOINT), echo(RECOMMENDED_CONFIG))
    async with server.client(lambda: next(keys)) as mgmt:
        await mgmt.update_partial("ep-1", **RECOMMENDED_CONFIG.model_dump())
    assert [r.headers["Authorization"] for r in server.requests] == [
        "Bearer key-a",
        "Bearer key-b",
    ]


async def test_server_reply_missing_config_is_a_protocol_error() -> None:
    """A GET reply without 'scaling' raises RunPodProtocolError naming it and the call."""
    server = Server(ok({"id": "ep-1", "workers": {"min": 0, "max": 1, "idleTimeout": 5}}))
    async with server.client() as mgmt:
        with pytest.raises(RunPodProtocolError, match="RunPod get: endpoint config 'scaling'"):
            await mgmt.get("ep-1")


@settings(deadline=None)
@given(current=configs(), wanted=configs())
def test_every_body_the_client_sends_passes_the_strict_patch_reader(
    current: EndpointConfig, wanted: EndpointConfig
) -> None:
    """update()'s body, as JSON text, is a valid strict EndpointPatch that turns any config
    into exactly the one sent: what the client sends, the twin takes."""
    wire = json.loads(json.dumps(wanted.to_v2()))
    assert current.patched(EndpointPatch.read(wire)) == wanted


def test_the_strict_patch_reader_refuses_what_the_lax_reply_reader_takes() -> None:
    """A server reply may carry extra fields and numbers as floats; a PATCH body may not."""
    assert EndpointConfig.from_v2(SERVER_ENDPOINT) == SERVER_CONFIG
    with pytest.raises(ValueError, match=r"unknown field\(s\): gpuIds, id, name, workers\.running"):
        EndpointPatch.read(SERVER_ENDPOINT)
    with pytest.raises(ValueError, match=r"workers\.max: Input should be a valid integer"):
        EndpointPatch.read({"workers": {"max": "5"}})
