"""The model worker (``python -m podpulse.worker``) on the tiny model, run by the twin."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from podpulse.common.testing import cases
from podpulse.twin import RunningTwin, TwinSettings, running_twin
from podpulse.worker.tiny import TINY_MODEL_NAME, ensure_tiny_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTwin]:
    cache = tmp_path_factory.getbasetemp() / "podpulse-cache"
    ensure_tiny_model(cache)  # built once here, not by the worker on its first start
    settings = TwinSettings(
        workers_min=1,
        workers_max=1,
        idle_timeout_s=600,
        worker_command=[sys.executable, "-m", "podpulse.worker"],
    )
    env = {"WORKER_CACHE_DIR": str(cache), "WORKER_MAX_CONCURRENCY": "4",
           "WORKER_MAX_NEW_TOKENS": "64"}  # fmt: skip
    with running_twin(settings, worker_env=env) as twin:
        yield twin


@pytest.fixture(scope="module")
def api(model_twin: RunningTwin) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=model_twin.endpoint_url,
        headers={"Authorization": f"Bearer {model_twin.api_key}"},
        timeout=60,
    ) as client:
        yield client


def runsync(api: httpx.Client, payload: object) -> dict[str, Any]:
    response = api.post("/runsync", json={"input": payload})
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def test_job_completes_through_the_real_handler_on_the_tiny_model(api: httpx.Client) -> None:
    """A question job COMPLETES with the handler's full output and RunPod timing fields."""
    body = runsync(api, {"question": "How do I move into data engineering?",
                         "profile": {"skills": ["SQL"], "location": "Toronto"},
                         "max_new_tokens": 8, "seed": 1})  # fmt: skip
    assert body["status"] == "COMPLETED", body
    # A generator handler with return_aggregate_stream: the output is the list of its yields.
    (out,) = body["output"]
    assert out["model"] == TINY_MODEL_NAME
    assert set(out) >= {"text", "usage", "timings", "validation", "model"}
    assert 1 <= out["usage"]["output_tokens"] <= 8
    assert body["executionTime"] >= 0
    assert body["workerId"]


def test_concurrent_jobs_on_one_worker_are_batched(api: httpx.Client) -> None:
    """Four concurrent jobs on the one worker all complete, and they shared forward passes."""
    payloads = [{"question": f"Question {i}?", "max_new_tokens": 16, "temperature": 0}
                for i in range(4)]  # fmt: skip
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        bodies = list(pool.map(lambda p: runsync(api, p), payloads))
    assert [b["status"] for b in bodies] == ["COMPLETED"] * 4
    assert len({b["workerId"] for b in bodies}) == 1
    assert max(b["output"][0]["batch_size"] for b in bodies) >= 2


def test_bad_input_fails_the_job_with_the_field_named(api: httpx.Client) -> None:
    """A malformed input FAILS the job with the validation message; no worker crash."""
    body = runsync(api, {"question": "hi", "temperature": 7})
    assert body["status"] == "FAILED"
    assert "input.temperature" in body["error"]


def test_streamed_job_through_run_and_stream(api: httpx.Client) -> None:
    """/run a stream job and poll /stream: text chunks come while the job is IN_PROGRESS, the
    last is the final chunk, and /status then answers the same list, aggregated."""
    payload = {"question": "How do I move into data engineering?", "max_new_tokens": 64,
               "temperature": 0.9, "seed": 7, "stream": True}  # fmt: skip
    response = api.post("/run", json={"input": payload})
    response.raise_for_status()
    job_id = response.json()["id"]
    polls: list[tuple[str, list[Any]]] = []
    while not polls or polls[-1][0] in {"IN_QUEUE", "IN_PROGRESS"}:
        body = api.get(f"/stream/{job_id}").json()
        polls.append((body["status"], [item["output"] for item in body["stream"]]))
    assert polls[-1][0] == "COMPLETED", polls[-1]
    chunks = [chunk for _, got in polls for chunk in got]
    final = chunks[-1]
    assert final["done"] is True
    assert sum(c["tokens"] for c in chunks) == final["usage"]["output_tokens"]
    # The first text reached the client before the worker finished the job.
    assert any(status == "IN_PROGRESS" and any(c.get("text") for c in got)
               for status, got in polls)  # fmt: skip
    status = api.get(f"/status/{job_id}").json()
    assert status["output"] == chunks


_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),  # JSON has neither
    st.text(max_size=30),
)
_json = st.recursive(_json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
), max_leaves=12)  # fmt: skip
_message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "x"]),
                                  "content": st.text(max_size=60)})  # fmt: skip
# Mostly near-valid inputs, so that many reach the model and the rest fail at a single field.
_near_valid = st.fixed_dictionaries(
    {},
    optional={
        "question": st.one_of(st.text(max_size=80), _json_leaf),
        "messages": st.lists(_message, max_size=3),
        "profile": st.one_of(
            st.dictionaries(
                st.sampled_from(["background", "skills", "goals", "location", "age"]),
                st.one_of(st.text(max_size=40), st.lists(st.text(max_size=10), max_size=3)),
            ),
            _json_leaf,
        ),
        "max_new_tokens": st.one_of(st.integers(-2, 70), _json_leaf),
        "temperature": st.one_of(st.floats(-1, 3, allow_nan=False), _json_leaf),
        "top_p": st.floats(-0.5, 1.5, allow_nan=False),
        "seed": st.integers(-5, 2**64),
        "stop": st.one_of(st.text(max_size=5), st.lists(st.text(max_size=5), max_size=6)),
    },
)


_text = st.text(min_size=1, max_size=80).filter(str.strip)
_valid_options = {
    "max_new_tokens": st.integers(1, 16),
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0.05, 1),
    "seed": st.integers(0, 2**63 - 1),
    "stop": st.lists(st.text(min_size=1, max_size=5), max_size=4),
}
# Valid jobs with arbitrary text and parameters: these reach the model.
_valid = st.one_of(
    st.fixed_dictionaries(
        {"question": _text},
        optional={
            **_valid_options,
            "profile": st.fixed_dictionaries(
                {}, optional={k: st.text(max_size=40) for k in ("background", "goals", "location")}
            ),
        },
    ),
    st.fixed_dictionaries(
        {
            "messages": st.lists(_message.filter(lambda m: m["role"] != "x"), max_size=3).map(
                lambda ms: [*ms, {"role": "user", "content": "and now?"}]
            )
        },
        optional=_valid_options,
    ),
)


@settings(
    max_examples=cases(200),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
# A null input never reaches a worker: the platform answers 400 itself (as RunPod does).
@given(payload=st.one_of(_valid, _near_valid, _json.filter(lambda value: value is not None)))
def test_any_input_gets_an_answer_or_an_error_and_the_worker_survives(
    api: httpx.Client, payload: object
) -> None:
    """Generated inputs (200) each COMPLETE with output or FAIL with an error; none crash."""
    body = runsync(api, payload)
    event(f"status {body['status']}")  # pytest --hypothesis-show-statistics shows the mix
    assert body["status"] in {"COMPLETED", "FAILED"}, body
    if body["status"] == "FAILED":
        assert isinstance(body["error"], str)
        assert body["error"]
        assert "Traceback" not in body["error"]
    else:
        (out,) = body["output"]
        assert "text" in out
        assert out["usage"]["output_tokens"] <= 70


def test_worker_still_serves_after_the_fuzzing(api: httpx.Client, model_twin: RunningTwin) -> None:
    """After the generated inputs, a good job completes on the same, original worker."""
    first = runsync(api, {"question": "hi", "max_new_tokens": 2})
    second = runsync(api, {"question": "still there?", "max_new_tokens": 4})
    assert first["status"] == second["status"] == "COMPLETED"
    assert first["workerId"] == second["workerId"]


def test_openai_route_jobs_through_the_sdk(api: httpx.Client) -> None:
    """OpenAI-route jobs through the real SDK: a streamed chat aggregates into its SSE strings
    ending in [DONE]; the models list is one dict; a bad request FAILS the job (the SDK fails
    any output carrying "error") with OpenAI's error object in the job's error text."""
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6, "stream": True}
    body = runsync(api, {"openai_route": "/v1/chat/completions", "openai_input": chat})
    assert body["status"] == "COMPLETED", body
    assert all(isinstance(s, str) and s.startswith("data: ") for s in body["output"])
    assert body["output"][-1].endswith("data: [DONE]\n\n")
    body = runsync(api, {"openai_route": "/v1/models", "openai_input": None})
    (models,) = body["output"]
    assert models["data"][0]["id"] == TINY_MODEL_NAME
    body = runsync(api, {"openai_route": "/v1/chat/completions", "openai_input": {"n": 3}})
    assert body["status"] == "FAILED"
    # The SDK writes str() of the yielded error: a Python repr, not JSON.
    assert "'type': 'invalid_request_error'" in body["error"]


def test_the_openai_client_chats_with_the_real_worker(model_twin: RunningTwin) -> None:
    """The official openai client, sync and async, through the twin's OpenAI route to the real
    worker on the tiny model: a streamed completion's deltas join into the whole one's text for
    the same seed, usage comes last when asked, models lists the tiny model, and a bad field is
    a BadRequestError naming it."""
    base = f"{model_twin.endpoint_url}/openai/v1"
    chat: dict[str, Any] = {"model": TINY_MODEL_NAME, "max_tokens": 12, "seed": 5,
                            "messages": [{"role": "user", "content": "Which jobs?"}]}  # fmt: skip
    with openai.OpenAI(base_url=base, api_key=model_twin.api_key, max_retries=0) as client:
        assert [m.id for m in client.models.list()] == [TINY_MODEL_NAME]
        whole = client.chat.completions.create(**chat)
        stream = client.chat.completions.create(
            **chat, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(**{**chat, "max_tokens": 10_000})
    assert refused.value.body["param"] == "max_tokens"  # type: ignore[index]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage == whole.usage
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == (
        whole.choices[0].finish_reason
    )

    async def streamed_async() -> str:
        async with openai.AsyncOpenAI(
            base_url=base, api_key=model_twin.api_key, max_retries=0
        ) as client:
            parts: list[str] = []
            async for chunk in await client.chat.completions.create(**chat, stream=True):
                parts.extend(choice.delta.content or "" for choice in chunk.choices)
            return "".join(parts)

    assert asyncio.run(streamed_async()) == text
