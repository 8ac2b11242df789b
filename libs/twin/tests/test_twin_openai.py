"""RunPod's OpenAI-compatible route on the twin, read by the official ``openai`` client, and
the calibrated-stream handler answering it (and native streamed jobs) at known paces."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletionMessageParam
from twin_helpers import calibrated, small

from podpulse.common.testing import cases, wait_until
from podpulse.twin import RunningTwin, running_twin
from podpulse.twin._jobs import Job, JobStatus, Policy
from podpulse.twin._openai_api import _Relay, _worker_error
from podpulse.twin.calibrated import _plan

FIRST_TOKEN_MS = 150.0
TOKEN_MS = 20.0
TOKENS = 6
HELLO: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Which career suits a patient tinkerer?"}
]
# The calibrated-stream answer's words: token i is "t{i} ".
WHOLE = "".join(f"t{i} " for i in range(TOKENS))


@pytest.fixture(scope="module")
def twin() -> Iterator[RunningTwin]:
    """One warm calibrated-stream worker running one job at a time, at a known pace."""
    paced = calibrated(first_token_ms=FIRST_TOKEN_MS, token_ms=TOKEN_MS, output_tokens=TOKENS)
    with running_twin(small(handler="calibrated-stream"), paced) as running:
        yield running


def _base(twin: RunningTwin) -> str:
    return f"{twin.endpoint_url}/openai/v1"


@pytest.fixture
def client(twin: RunningTwin) -> Iterator[openai.OpenAI]:
    """The sync OpenAI client on the twin's route; no retries, so every error shows."""
    with openai.OpenAI(base_url=_base(twin), api_key=twin.api_key, max_retries=0) as made:
        yield made


def test_models_lists_the_workers_model(client: openai.OpenAI) -> None:
    """GET /models goes to the worker as a job and comes back as OpenAI's model list."""
    models = client.models.list()
    assert [m.id for m in models.data] == ["calibrated"]
    assert models.data[0].object == "model"


def test_a_streamed_chat_completion_arrives_chunk_by_chunk_with_usage(
    client: openai.OpenAI,
) -> None:
    """stream=True: a chunk per token in order, the finish chunk, then (include_usage) the
    usage chunk with no choices; the content concatenates to the whole answer."""
    stream = client.chat.completions.create(
        model="calibrated", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert texts == [f"t{i} " for i in range(TOKENS)]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == TOKENS
    assert len({c.id for c in chunks}) == 1


def test_a_whole_chat_completion_honours_max_tokens(client: openai.OpenAI) -> None:
    """stream=False: one chat.completion; max_tokens below the answer ends it with "length"."""
    whole = client.chat.completions.create(model="calibrated", messages=HELLO)
    assert whole.object == "chat.completion"
    assert whole.choices[0].message.content == WHOLE
    assert whole.choices[0].finish_reason == "stop"
    assert whole.usage is not None
    assert whole.usage.completion_tokens == TOKENS
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + TOKENS
    cut = client.chat.completions.create(model="calibrated", messages=HELLO, max_tokens=2)
    assert cut.choices[0].message.content == "t0 t1 "
    assert cut.choices[0].finish_reason == "length"


async def test_the_async_client_streams_and_answers_whole(twin: RunningTwin) -> None:
    """AsyncOpenAI: a stream and a whole answer at once, and the model list."""
    async with openai.AsyncOpenAI(
        base_url=_base(twin), api_key=twin.api_key, max_retries=0
    ) as client:

        async def streamed() -> str:
            stream = await client.chat.completions.create(
                model="calibrated", messages=HELLO, stream=True
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

        text, whole, models = await asyncio.gather(
            streamed(),
            client.chat.completions.create(model="calibrated", messages=HELLO),
            client.models.list(),
        )
    assert text == WHOLE
    assert whole.choices[0].message.content == WHOLE
    assert [m.id for m in models.data] == ["calibrated"]


def test_a_wrong_key_is_an_authentication_error_in_openais_schema(twin: RunningTwin) -> None:
    """A wrong key: openai.AuthenticationError, and a 401 body in OpenAI's error schema."""
    with openai.OpenAI(base_url=_base(twin), api_key="CANARY-wrong", max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        with pytest.raises(openai.AuthenticationError):
            wrong.chat.completions.create(model="calibrated", messages=HELLO, stream=True)
    answer = httpx.get(f"{_base(twin)}/models", timeout=30)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "invalid_api_key"
    assert set(answer.json()["error"]) == {"message", "type", "param", "code"}


def test_a_bad_request_is_a_bad_request_error(client: openai.OpenAI, twin: RunningTwin) -> None:
    """A request the worker refuses is a 400 naming the field, streamed or not; a body that
    is not JSON, or not an object, is refused by the twin itself, in the same schema."""
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="calibrated", messages=[], stream=stream)
        assert refused.value.param == "messages"
    headers = {"Authorization": f"Bearer {twin.api_key}"}
    url = f"{_base(twin)}/chat/completions"
    for body in (b"{not json", b"[1, 2]"):
        answer = httpx.post(url, content=body, headers=headers, timeout=30)
        assert answer.status_code == 400
        assert answer.json()["error"]["type"] == "invalid_request_error"


def test_the_known_delays_are_recovered_from_the_stream(client: openai.OpenAI) -> None:
    """The first content comes no sooner than first_token_ms after the request, the last no
    sooner than first_token_ms + (n - 1) * token_ms: both set per request here."""
    first_ms, token_ms, tokens = 300.0, 40.0, 5
    sent = time.monotonic()
    stream = client.chat.completions.create(
        model="calibrated",
        messages=HELLO,
        stream=True,
        extra_body={"first_token_ms": first_ms, "token_ms": token_ms, "output_tokens": tokens},
    )
    arrivals = [time.monotonic() for c in stream if c.choices and c.choices[0].delta.content]
    assert len(arrivals) == tokens
    assert (arrivals[0] - sent) * 1000 >= first_ms
    assert (arrivals[-1] - sent) * 1000 >= first_ms + (tokens - 1) * token_ms


def test_a_lone_chunk_is_relayed_and_leaving_mid_stream_cancels_the_job(
    client: openai.OpenAI, twin: RunningTwin
) -> None:
    """With the next token an hour away, the first still arrives (nothing is held back);
    closing the stream then cancels the job and frees the worker's only slot."""
    stream = client.chat.completions.create(
        model="calibrated",
        messages=HELLO,
        stream=True,
        extra_body={"first_token_ms": 0, "token_ms": 3_600_000, "output_tokens": 3},
    )
    first = next(iter(stream))
    assert first.choices[0].delta.content == "t0 "
    stream.close()
    job_id = first.id.removeprefix("chatcmpl-")
    with twin.client() as api:
        wait_until(
            lambda: api.get(f"/status/{job_id}").json()["status"] == "CANCELLED",
            30,
            "the abandoned job to be cancelled",
        )
    # One worker, one slot: this answer needs the abandoned job stopped on the worker.
    after = client.chat.completions.create(model="calibrated", messages=HELLO)
    assert after.choices[0].message.content == WHOLE


def test_a_failed_job_is_a_server_error_streamed_or_not(client: openai.OpenAI) -> None:
    """A job that fails: 500 in OpenAI's schema when whole; mid-stream, the chunks so far,
    then an error event the client raises (the twin adds it and [DONE] itself)."""
    with pytest.raises(openai.InternalServerError, match="calibrated failure"):
        client.chat.completions.create(
            model="calibrated", messages=HELLO, extra_body={"fail": True}
        )
    seen: list[str] = []
    stream = client.chat.completions.create(
        model="calibrated", messages=HELLO, stream=True, extra_body={"fail": True}
    )
    with pytest.raises(openai.APIError, match="calibrated failure"):
        seen.extend(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert "".join(seen) == WHOLE


def test_native_jobs_stream_token_chunks_or_answer_whole(twin: RunningTwin) -> None:
    """Without openai_route: "stream": true yields a chunk per token then the final chunk
    (usage, timings, done), /status keeps them all; without it the output is [answer]."""
    with twin.client() as api:
        job_id = api.post("/run", json={"input": {"stream": True}}).json()["id"]
        streamed: list[dict[str, Any]] = []

        def drained() -> bool:
            body = api.get(f"/stream/{job_id}").json()
            streamed.extend(c["output"] for c in body["stream"])
            return body["status"] == "COMPLETED"

        wait_until(drained, 30, "the native stream to finish")
        whole = api.post("/runsync", json={"input": {}}).json()
        final = api.get(f"/status/{job_id}").json()["output"]
    assert [c["text"] for c in streamed[:-1]] == [f"t{i} " for i in range(TOKENS)]
    assert all(c["tokens"] == 1 for c in streamed[:-1])
    last = streamed[-1]
    assert (last["done"], last["tokens"], last["finish_reason"]) == (True, 0, "stop")
    assert last["usage"]["output_tokens"] == TOKENS
    assert last["timings"]["first_token_ms"] >= FIRST_TOKEN_MS
    assert last["timings"]["generate_ms"] >= FIRST_TOKEN_MS + (TOKENS - 1) * TOKEN_MS
    assert final == streamed
    assert whole["status"] == "COMPLETED", whole
    [answer] = whole["output"]
    assert answer["text"] == WHOLE
    assert answer["usage"]["output_tokens"] == TOKENS


def _idle_twin(openai_wait_s: float) -> Any:
    """A twin whose one worker never asks for work: every job stays queued."""
    settings = small(workers_min=0, worker_command=["sleep", "600"], openai_wait_s=openai_wait_s)
    return running_twin(settings, wait_ready=False)


def test_no_answer_in_time_is_a_504_and_the_job_is_cancelled() -> None:
    """A job not answered within TWIN_OPENAI_WAIT_S: 504 in OpenAI's schema, job cancelled."""
    with _idle_twin(0.3) as twin:
        answer = httpx.get(
            f"{_base(twin)}/models", headers={"Authorization": f"Bearer {twin.api_key}"}
        )
        assert answer.status_code == 504
        assert answer.json()["error"]["code"] == "timeout"
        assert [job.status.value for job in list(twin.platform.queue.jobs.values())] == [
            "CANCELLED"
        ]


def test_a_client_leaving_before_its_first_chunk_cancels_the_job() -> None:
    """A client that gives up while its job is still queued: the job is cancelled."""
    with _idle_twin(300) as twin:
        with (
            openai.OpenAI(
                base_url=_base(twin), api_key=twin.api_key, max_retries=0, timeout=0.3
            ) as impatient,
            pytest.raises(openai.APITimeoutError),
        ):
            impatient.chat.completions.create(model="calibrated", messages=HELLO, stream=True)

        def cancelled() -> bool:
            jobs = list(twin.platform.queue.jobs.values())
            return [job.status.value for job in jobs] == ["CANCELLED"]

        wait_until(cancelled, 30, "the job to be cancelled")


def test_drawn_delays_vary_within_their_distribution() -> None:
    """Uniform draws: each job its own first-token delay and each token its own gap, within
    the median * (1 +- jitter); a job's own first_token_ms and token_ms are taken as given."""
    settings = calibrated(
        first_token_ms=100, first_token_distribution="uniform", token_ms=10,
        token_distribution="uniform", jitter=0.5, seed=7,
    )  # fmt: skip
    rng = random.Random(7)
    plans = [_plan(settings, rng, {}, "max_new_tokens") for _ in range(5)]
    firsts = [p.first_token_ms for p in plans]
    gaps = [plans[0].next_token_ms() for _ in range(5)]
    assert all(50 <= f <= 150 for f in firsts)
    assert len(set(firsts)) == 5
    assert all(5 <= g <= 15 for g in gaps)
    assert len(set(gaps)) == 5
    given = _plan(settings, rng, {"first_token_ms": 7, "token_ms": 3}, "max_new_tokens")
    assert (given.first_token_ms, given.next_token_ms()) == (7, 3)


def test_an_error_object_the_sdk_turned_into_text_is_read_back() -> None:
    """The SDK sends a yielded {"error": {...}} as str() of the object (a Python repr):
    the twin reads it back as the OpenAI error; other texts are not error objects."""
    given = {"message": "bad", "type": "invalid_request_error", "param": "messages", "code": None}
    assert _worker_error(str(given)) == given
    assert _worker_error('{"message": "m", "type": "t"}') == {
        "message": "m", "type": "t", "param": None, "code": None}  # fmt: skip
    assert _worker_error("handler: boom") is None
    assert _worker_error("__import__('os')") is None


async def test_a_relayed_chunk_leaves_a_network_latency_after_it_arrived() -> None:
    """With TWIN_API_LATENCY_MS each streamed string is written that long after it reached
    the twin (not after the one before it); a stream without [DONE] gets an error and [DONE]."""
    latency_s = 0.1
    job = Job(id="j", input={}, policy=Policy(), sync=True, status=JobStatus.IN_PROGRESS)
    clock = asyncio.get_running_loop().time
    job.stream.append({"output": "data: {}\n\n"})
    job.stream_at.append(clock())
    relay = aiter(_Relay(job, latency_s, clock))
    started = clock()
    assert await anext(relay) == "data: {}\n\n"
    assert clock() - started >= latency_s - 0.001  # the loop's clock resolution
    job.status = JobStatus.FAILED
    job.error = "worker died"
    ending = [text async for text in relay]
    assert ending == [
        'data: {"error": {"message": "worker died", "type": "server_error", "param": null, '
        '"code": null}}\n\ndata: [DONE]\n\n'
    ]


# The stand-in obeys these body keys (an hour's wait, a killed worker): generated bodies leave
# them out and answer at once.
_PACE = {"first_token_ms": 0, "token_ms": 0, "output_tokens": 2}
_text = st.text(max_size=6)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(-1e9, 1e9) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_message = st.fixed_dictionaries(
    {}, optional={"role": st.sampled_from(["user", "system"]) | _json, "content": _json}
)
_options = {
    "stream": st.booleans() | _json,
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}) | _json,
    "max_tokens": st.integers(-2, 3) | _json,
}
# A well-formed request with odd options, or any field of any shape.
_chat = st.fixed_dictionaries(
    {
        "model": st.just("calibrated"),
        "messages": st.lists(
            st.fixed_dictionaries({"role": st.just("user"), "content": _text}), min_size=1
        ),
    },
    optional=_options,
) | st.fixed_dictionaries(
    {},
    optional={
        "model": st.just("calibrated") | _json,
        "messages": st.lists(_message, max_size=2) | _json,
        **_options,
    },
)


def test_generated_chat_bodies_are_answered_or_refused_in_openais_schema(
    twin: RunningTwin,
) -> None:
    """Generated chat bodies (wrong types, missing fields, odd JSON): each is a 200 answer,
    streamed or whole, or a 400 in OpenAI's error schema naming what is wrong; never 5xx."""
    headers = {"Authorization": f"Bearer {twin.api_key}"}

    @settings(max_examples=cases(200), deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
    @given(body=_chat | _json)
    def request(body: Any) -> None:
        sent = {**body, **_PACE} if isinstance(body, dict) else body
        answer = http.post(f"{_base(twin)}/chat/completions", json=sent, headers=headers)
        assert answer.status_code in (200, 400), (sent, answer.text)
        if answer.status_code == 400:
            error = answer.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}, error
            assert error["type"] == "invalid_request_error"
        elif answer.headers["content-type"].startswith("text/event-stream"):
            assert answer.text.endswith("data: [DONE]\n\n"), answer.text
        else:
            assert answer.json()["object"] == "chat.completion", answer.text

    with httpx.Client(timeout=60) as http:
        request()
