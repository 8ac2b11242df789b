"""The management PATCH reads its body strictly: JSON types, known fields, bounded values.

The twin's real app and platform (its control loop included) run in-process through
starlette's TestClient; a cold start longer than any test means no worker process ever starts,
however many workers a PATCH asks for.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient
from twin_helpers import small

from podpulse.common.runpod import EndpointConfig, ScalerType
from podpulse.common.runpod._config import (
    MAX_IDLE_TIMEOUT_S,
    MAX_QUEUE_DELAY_S,
    MAX_REQUEST_COUNT,
    MAX_WORKERS,
)
from podpulse.common.testing import cases
from podpulse.twin import Platform, create_app
from podpulse.twin._scaler import MAX_STARTS_PER_TICK, Snapshot, workers_to_add

ENDPOINT = "podpulse-twin"
KEY = "test-key"
CASES = cases(2000)  # generated PATCH bodies: all 2,000 under the deep profile (make test-deep)
URL = f"/v2/serverless/{ENDPOINT}"
HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
START = {
    "workers": {"min": 0, "max": 1, "idleTimeout": 5},
    "scaling": {"type": "QUEUE_DELAY", "queueDelay": 1.0},
}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The twin's app in-process; workers never leave their (hour-long) cold start."""
    log_dir: Path = tmp_path_factory.mktemp("twin-logs")
    twin_settings = small(
        workers_min=0, workers_max=1, api_key=KEY, cold_start_ms=3_600_000, log_dir=log_dir
    )
    with TestClient(create_app(twin_settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def api(client: TestClient) -> TestClient:
    """The client, with the endpoint set back to START before the test."""
    assert client.patch(URL, json=START, headers=HEADERS).status_code == 200
    return client


def _config(client: TestClient) -> dict[str, Any]:
    response = client.get(URL, headers=HEADERS)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return {"workers": body["workers"], "scaling": body["scaling"]}


_INT = "Input should be a valid integer"
_NUMBER = "Input should be a valid number"
_AT_MOST = "Input should be less than or equal to"
_TYPES = "must be 'QUEUE_DELAY' or 'REQUEST_COUNT'"


def _qd(value: Any, **extra: Any) -> dict[str, Any]:
    return {"scaling": {"type": "QUEUE_DELAY", "queueDelay": value, **extra}}


def _rc(value: Any) -> dict[str, Any]:
    return {"scaling": {"type": "REQUEST_COUNT", "requestCount": value}}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"workers": {"max": "3"}}, f"workers.max: {_INT}, not a string"),
        ({"workers": {"max": " 4 "}}, f"workers.max: {_INT}, not a string"),
        ({"workers": {"max": True}}, f"workers.max: {_INT}, not a boolean"),
        ({"workers": {"max": 3.0}}, f"workers.max: {_INT}, not a number"),
        ({"workers": {"idleTimeout": 60.5}}, f"workers.idleTimeout: {_INT}, not a number"),
        ({"workers": {"max": None}}, "workers.max: must not be null"),
        ({"workers": {"max": 10**30}}, f"workers.max: {_AT_MOST} {MAX_WORKERS}"),
        ({"workers": {"idleTimeout": 3601}}, f"workers.idleTimeout: {_AT_MOST} 3600"),
        ({"workers": {"min": -1}}, "workers.min: Input should be greater than or equal to 0"),
        ({"workers": {"min": 2}}, "workers.min (2) must not exceed workers.max (1)"),
        ({"workers": {"max": 2, "running": 0}}, "unknown field(s): workers.running"),
        ({"workers": {"minimum": 1}}, "unknown field(s): workers.minimum"),
        ({"workers": []}, "workers: must be a JSON object, not an array"),
        (_qd(1e308), f"scaling.queueDelay: {_AT_MOST} 3600"),
        (_qd("2"), f"scaling.queueDelay: {_NUMBER}, not a string"),
        (_qd(True), f"scaling.queueDelay: {_NUMBER}, not a boolean"),
        (_qd(2, requestCount=3), "unknown field(s): scaling.requestCount"),
        (_qd(2, target=80), "unknown field(s): scaling.target"),
        (_rc(2.0), f"scaling.requestCount: {_INT}, not a number"),
        (_rc(10**30), f"scaling.requestCount: {_AT_MOST} {MAX_REQUEST_COUNT}"),
        ({"scaling": {"type": "REQUEST_COUNT"}}, "scaling.requestCount: Field required"),
        ({"scaling": {"type": "queue_delay", "queueDelay": 2}}, f"scaling.type: {_TYPES}"),
        ({"scaling": {"queueDelay": 2}}, f"scaling.type: {_TYPES}"),
        ({"name": "x", "flashboot": "OFF"}, "unknown field(s): flashboot, name"),
        ([{"workers": {}}], "the body: must be a JSON object, not an array"),
    ],
)
def test_a_body_outside_the_v2_schema_is_refused_naming_the_field(
    api: TestClient, body: Any, named: str
) -> None:
    """Numbers as strings or booleans, floats for counts, nulls, unknown fields at any level,
    values past the documented bounds: a one-line 400 naming the field; config unchanged."""
    before = _config(api)
    response = api.patch(URL, content=json.dumps(body), headers=HEADERS)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert named in error
    assert "\n" not in error
    assert _config(api) == before


def test_every_field_the_v2_schema_allows_is_applied_exactly(api: TestClient) -> None:
    """Given workers fields replace the endpoint's one by one; a scaling object replaces its
    scaling whole; the answer and a later GET show exactly that."""
    response = api.patch(URL, json={"workers": {"max": MAX_WORKERS}}, headers=HEADERS)
    assert response.json()["workers"] == {"min": 0, "max": MAX_WORKERS, "idleTimeout": 5}
    body = {
        "workers": {"min": 3, "idleTimeout": MAX_IDLE_TIMEOUT_S},
        "scaling": {"type": "REQUEST_COUNT", "requestCount": MAX_REQUEST_COUNT},
    }
    answered = api.patch(URL, json=body, headers=HEADERS).json()
    expected = {
        "workers": {"min": 3, "max": MAX_WORKERS, "idleTimeout": MAX_IDLE_TIMEOUT_S},
        "scaling": {"type": "REQUEST_COUNT", "requestCount": MAX_REQUEST_COUNT},
    }
    assert {k: answered[k] for k in ("workers", "scaling")} == expected == _config(api)
    delay = {"scaling": {"type": "QUEUE_DELAY", "queueDelay": MAX_QUEUE_DELAY_S}}
    api.patch(URL, json=delay, headers=HEADERS)
    assert _config(api)["scaling"] == delay["scaling"]
    assert api.patch(URL, json={}, headers=HEADERS).status_code == 200  # nothing to change


def test_one_scaler_tick_starts_at_most_a_few_workers() -> None:
    """workersMin 1000 with none running starts MAX_STARTS_PER_TICK now, not 1000 at once."""
    config = EndpointConfig(
        workers_min=MAX_WORKERS,
        workers_max=MAX_WORKERS,
        idle_timeout_s=5,
        scaler_type=ScalerType.REQUEST_COUNT,
        scaler_value=1,
    )
    empty = Snapshot(active=0, initializing=0, queued=5000, in_progress=0, oldest_wait_s=9)
    assert workers_to_add(config, empty) == MAX_STARTS_PER_TICK
    nearly = Snapshot(active=MAX_WORKERS - 1, initializing=0, queued=0, in_progress=0,
                      oldest_wait_s=0)  # fmt: skip
    assert workers_to_add(config, nearly) == 1


# --- generated bodies ------------------------------------------------------------------------

_COUNT_FIELDS = {"min": (0, MAX_WORKERS), "max": (1, MAX_WORKERS),
                 "idleTimeout": (1, MAX_IDLE_TIMEOUT_S)}  # fmt: skip
# workersMin is drawn nearer its floor than workersMax, so that most pairs are in order.
_SPREAD = {"min": 3, "max": 20, "idleTimeout": 10}
_names = st.from_regex(r"[a-z][A-Za-z0-9_]{0,10}", fullmatch=True)
_junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**40), 10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-5, 2000).map(str),
    st.integers(0, 50).map(lambda n: f" {n} "),
    st.text(max_size=6),
    st.lists(st.integers(0, 9), max_size=2),
    st.dictionaries(_names, st.integers(0, 9), max_size=2),
)


def _count(low: int, high: int, spread: int = 10) -> st.SearchStrategy[Any]:
    near = st.integers(low, min(high, low + spread))
    edges = st.sampled_from([low - 1, high, high + 1])
    # Mostly in range (so many PATCHes are applied), at the bounds, or anything at all.
    return st.one_of(near, near, near, st.integers(low, high), edges, _junk)


def _delay() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.floats(0.5, MAX_QUEUE_DELAY_S),
        st.integers(1, 3600),
        st.sampled_from([0.49, 0.5, MAX_QUEUE_DELAY_S, MAX_QUEUE_DELAY_S + 0.001, 1e308]),
        _junk,
    )


def _rarely(draw: st.DrawFn, one_in: int) -> bool:
    # Hypothesis leans to small integers, so the rare branch is the largest draw, not zero.
    return draw(st.integers(1, one_in)) == one_in


@st.composite
def _workers(draw: st.DrawFn) -> Any:
    part = {name: draw(_count(*bounds, _SPREAD[name])) for name, bounds in _COUNT_FIELDS.items()
            if draw(st.booleans())}  # fmt: skip
    if _rarely(draw, 10):
        part[draw(_names)] = draw(_junk)
    return draw(_junk) if _rarely(draw, 20) else part


@st.composite
def _scaling(draw: st.DrawFn) -> Any:
    kinds = ["QUEUE_DELAY", "REQUEST_COUNT", "CPU", "queue_delay", None]
    kind = draw(st.sampled_from(kinds)) if _rarely(draw, 5) else draw(st.sampled_from(kinds[:2]))
    part: dict[str, Any] = {} if kind is None else {"type": kind}
    if kind == "REQUEST_COUNT" or _rarely(draw, 10):
        part["requestCount"] = draw(_count(1, MAX_REQUEST_COUNT))
    if kind == "QUEUE_DELAY" or _rarely(draw, 10):
        part["queueDelay"] = draw(_delay())
    if _rarely(draw, 10):
        part[draw(_names)] = draw(_junk)
    if _rarely(draw, 10):
        part.pop(draw(st.sampled_from(["type", "queueDelay", "requestCount"])), None)
    return draw(_junk) if _rarely(draw, 20) else part


@st.composite
def _objects(draw: st.DrawFn) -> bytes:
    body: dict[str, Any] = {}
    if not _rarely(draw, 4):
        body["workers"] = draw(_workers())
    if draw(st.booleans()):
        body["scaling"] = draw(_scaling())
    if _rarely(draw, 15):
        body[draw(_names.filter(lambda n: n not in ("workers", "scaling")))] = draw(_junk)
    return json.dumps(body).encode()


_RAW = [
    b"",
    b"   ",
    b"{",
    b"null",
    b'"workers"',
    b"[]",
    b'{"workers": {"max": NaN}}',
    b'{"workers": {"max": Infinity}}',
    b'{"scaling": {"type": "QUEUE_DELAY", "queueDelay": 1e400}}',
    b'{"workers": {"max": ' + b"9" * 5000 + b"}}",
    b'{"workers": ' + b"[" * 200 + b"]" * 200 + b"}",
    b'{"workers": {"\\ud800": 1}}',
    b'{"workers": {"min": 0}, "workers": {"min": "0"}}',
    b'{"workers": {"max": 2}}\x00',
    b"\xff\xfe{}",
]
_bodies = st.one_of(*[_objects()] * 6, st.sampled_from(_RAW), st.binary(max_size=40))


def _expected(current: dict[str, Any], raw: bytes) -> tuple[dict[str, Any] | None, list[str]]:
    """What a PATCH of ``raw`` must leave: the new config, or None and names one of which the
    400 must mention. Written from the v2 schema, independently of the twin's reader."""
    body = _decoded(raw)
    if not isinstance(body, dict):
        return None, [] if body is _UNREADABLE else ["must be a JSON object"]
    if unknown := sorted(set(body) - {"workers", "scaling"}):
        return None, unknown
    workers, problems = _expected_workers(current["workers"], body.get("workers", {}))
    if not problems and "scaling" in body:
        scaling, problems = _expected_scaling(body["scaling"])
    else:
        scaling = current["scaling"]
    if not problems and workers["min"] > workers["max"]:
        problems = ["workers.min"]
    return (None, problems) if problems else ({"workers": workers, "scaling": scaling}, [])


_UNREADABLE = object()


def _decoded(raw: bytes) -> Any:
    """The JSON value, or _UNREADABLE for what no JSON reply could carry back."""

    def refuse(constant: str) -> Any:
        raise ValueError(constant)

    try:
        body = json.loads(raw, parse_constant=refuse)
        json.dumps(body, ensure_ascii=False).encode()  # lone surrogates do not encode
    except (ValueError, RecursionError, UnicodeEncodeError):
        return _UNREADABLE
    return body


def _expected_workers(current: dict[str, Any], given: Any) -> tuple[dict[str, Any], list[str]]:
    if not isinstance(given, dict):
        return current, ["workers"]
    if unknown := sorted(set(given) - set(_COUNT_FIELDS)):
        return current, [f"workers.{name}" for name in unknown]
    bad = [
        f"workers.{name}"
        for name, value in given.items()
        if type(value) is not int or not _COUNT_FIELDS[name][0] <= value <= _COUNT_FIELDS[name][1]
    ]
    return {**current, **given}, bad


def _expected_scaling(given: Any) -> tuple[dict[str, Any], list[str]]:
    if not isinstance(given, dict):
        return {}, ["scaling"]
    kind = given.get("type")
    if kind == "QUEUE_DELAY":
        key, value = "queueDelay", given.get("queueDelay")
        valid = (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and 0.5 <= value <= MAX_QUEUE_DELAY_S
        )
    elif kind == "REQUEST_COUNT":
        key, value = "requestCount", given.get("requestCount")
        valid = type(value) is int and 1 <= value <= MAX_REQUEST_COUNT
    else:
        return {}, ["scaling.type"]
    if unknown := sorted(set(given) - {"type", key}):
        return {}, [f"scaling.{name}" for name in unknown]
    return {"type": kind, key: value}, [] if valid else [f"scaling.{key}"]


def test_generated_patches_are_applied_exactly_or_refused_leaving_the_config(
    api: TestClient,
) -> None:
    """Generated PATCH bodies (2,000 under the deep profile: strings and booleans for numbers,
    unknown fields, huge values, nulls, non-objects, non-JSON): never 5xx; a refusal is a
    one-line JSON 400 naming the field with the config unchanged; an acceptance is applied
    exactly; the twin's app and control loop are alive after."""
    platform: Platform = api.app.state.platform  # type: ignore[attr-defined]  # TestClient.app is typed as a plain ASGI callable
    state: dict[str, Any] = {"config": _config(api), "cases": 0, "applied": 0}
    started = time.monotonic()

    @settings(max_examples=CASES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
    @given(raw=_bodies)
    def patch(raw: bytes) -> None:
        state["cases"] += 1
        expected, names = _expected(state["config"], raw)
        response = api.patch(URL, content=raw, headers=HEADERS)
        assert response.status_code < 500, response.text
        after = _config(api)
        if expected is None:
            assert response.status_code == 400, (raw, response.text)
            error = response.json()["error"]
            assert isinstance(error, str)
            assert error
            assert "\n" not in error
            assert not names or any(name in error for name in names), (raw, error, names)
            assert after == state["config"]
        else:
            assert response.status_code == 200, (raw, response.text)
            assert after == expected
            assert {k: response.json()[k] for k in ("workers", "scaling")} == expected
            state["applied"] += 1
        state["config"] = after

    patch()
    elapsed = time.monotonic() - started
    figures = f"{state['cases']} generated cases, {state['applied']} applied, {elapsed:.1f} s"
    print(f"management PATCH: {figures}")  # noqa: T201 (the figures the issue asks for; -s shows them)
    assert state["cases"] >= CASES
    assert 0.1 * state["cases"] < state["applied"] < 0.9 * state["cases"]
    # Alive: the app answers, and the control loop still acts on a new config.
    assert api.patch(URL, json=START, headers=HEADERS).status_code == 200
    assert platform._loop_task is not None
    assert not platform._loop_task.done()
    assert api.get(f"/v2/{ENDPOINT}/health", headers=HEADERS).status_code == 200
