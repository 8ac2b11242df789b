"""TTFT, ITL and TPOT as a chat user feels them: /run + /stream against a real twin with
real SDK workers, and RunPod's OpenAI route against a loopback server-sent-event server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Literal

import httpx
import pytest
import uvicorn
from cli_helpers import hosted_env
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from podpulse.common.probe_spec import ProbeSpec
from podpulse.common.request_records import Outcome, RequestRecord, read_records
from podpulse.common.runpod import sse_data, whole_output
from podpulse.common.summary import Slo, SweepResult, SweepRow, Tightest, parse_summary
from podpulse.common.testing import free_port, wait_until
from podpulse.prober import Engine, Load, ProberSettings, RequestOptions, Target, run_probe
from podpulse.prober._results_dir import ResultsWriter
from podpulse.prober._run_stats import GoodputTargets, RunStats
from podpulse.prober._spans import span_attributes
from podpulse.prober._sweep import recommend
from podpulse.prober._transport import AiohttpTransport
from podpulse.twin import CalibratedSettings, TwinSettings, running_twin

TESTS = str(Path(__file__).parent)
FIRST_MS, PER_TOKEN_MS, TOKENS = 120.0, 30.0, 5
PACE = {"first_ms": FIRST_MS, "per_token_ms": PER_TOKEN_MS, "tokens": TOKENS}
KEY = "CANARY-prober-openai-key"


@pytest.fixture(scope="module")
def stream_twin() -> Iterator[Target]:
    """One warm twin worker serving prober_stream_handler (a generator: outputs aggregate)."""
    settings = TwinSettings(
        workers_min=1,
        workers_max=1,
        worker_concurrency=4,
        stop_grace_s=0.3,
        handler="prober_stream_handler:handler",
    )
    with running_twin(settings, CalibratedSettings(), worker_env={"PYTHONPATH": TESTS}) as twin:
        yield Target(
            endpoint_id=twin.endpoint_id, base_url=twin.base_url, api_key=twin.api_key, kind="twin"
        )


async def _run(target: Target, api: str, runs: int = 3, **job: object) -> list[RequestRecord]:
    records: list[RequestRecord] = []
    async with target.client(timeout_s=20) as client:
        engine = Engine(
            client,
            run_id=f"stream-{api}",
            make_input=lambda seq: {"question": "hi", **PACE} | job,
            options=RequestOptions(api=api, timeout_s=20),  # type: ignore[arg-type]
            on_record=records.append,
        )
        await engine.run(Load(concurrency=1, runs=runs))
    return records


def _check_pace(record: RequestRecord) -> None:
    """The measured first token and decode pace are no faster than the handler's delays."""
    assert record.outcome is Outcome.OK, record.error
    assert record.output_tokens == TOKENS
    assert record.ttft_ms is not None
    assert record.tpot_ms is not None
    assert record.ttft_ms >= FIRST_MS
    # One gap per text-carrying chunk after the first: TOKENS chunks, TOKENS - 1 gaps.
    assert len(record.itl_ms) == TOKENS - 1
    # The last token cannot reach the client before the handler made it.
    last_ms = record.ttft_ms + record.tpot_ms * (TOKENS - 1)
    assert last_ms >= FIRST_MS + PER_TOKEN_MS * (TOKENS - 1) - 0.01
    assert sum(record.itl_ms) == pytest.approx(record.tpot_ms * (TOKENS - 1), abs=0.01)
    assert record.total_ms >= last_ms - 0.01


async def test_stream_api_measures_ttft_itl_tpot_and_runpods_timings(stream_twin: Target):
    """--api stream: /run + /stream; TTFT and TPOT no faster than the handler's known delays,
    one ITL gap per text chunk, and delayTime/executionTime read from /status."""
    records = await _run(stream_twin, "stream")
    assert len(records) == 3
    for record in records:
        _check_pace(record)
        assert record.api == "stream"
        assert record.exec_ms is not None
        assert record.exec_ms >= FIRST_MS
        assert record.delay_ms is not None
        assert record.model == "prober-test"


async def test_runsync_reads_a_generator_workers_aggregated_list(stream_twin: Target):
    """--api runsync against a generator handler: output is [answer], usage still read;
    no TTFT (nothing streamed)."""
    records = await _run(stream_twin, "runsync", runs=2)
    for record in records:
        assert record.outcome is Outcome.OK, record.error
        assert record.output_tokens == TOKENS
        assert record.ttft_ms is None
        assert record.itl_ms == ()
        assert record.api == "runsync"


# --- the OpenAI route, served by a loopback SSE server speaking STREAM.md section 2 ---------


def _chunk(content: str | None, *, usage: dict[str, int] | None = None) -> str:
    choices = [] if usage is not None else [{"index": 0, "delta": {"content": content}}]
    body: dict[str, object] = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "model": "openai-test",
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n"


async def _completions(request: Request) -> Response:
    if request.headers.get("authorization") != f"Bearer {KEY}":
        return JSONResponse({"error": {"message": "bad key", "type": "invalid_request_error"}}, 401)
    body = await request.json()
    question = body["messages"][0]["content"]
    if question == "job failed":
        # How the route answers a job whose handler raised (STREAM.md section 2).
        error = {"message": "handler error", "type": "server_error", "param": None, "code": None}
        return JSONResponse({"error": error}, 500)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    tokens = int(body.get("max_tokens", TOKENS))

    async def events() -> AsyncIterator[str]:
        if question == "error event":
            yield _chunk("partial ")
            yield 'data: {"error": {"message": "engine died", "type": "server_error"}}\n\n'
            yield "data: [DONE]\n\n"
            return
        # A role-only first delta carries no text: it must not count as the first token.
        yield 'data: {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}\n\n'
        await asyncio.sleep(FIRST_MS / 1000)
        for index in range(tokens):
            if index:
                await asyncio.sleep(PER_TOKEN_MS / 1000)
            yield _chunk(f"w{index} ")
        usage = {"prompt_tokens": 3, "completion_tokens": tokens, "total_tokens": tokens + 3}
        yield ": a comment line, as pings are\n\n" + _chunk(None, usage=usage)
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


# Released by the test once it holds the first piece of /hold's body.
_HOLD = threading.Event()


async def _hold(request: Request) -> Response:
    async def pieces() -> AsyncIterator[str]:
        yield "first\n"
        await asyncio.to_thread(_HOLD.wait, 30)
        yield "rest\n"

    return StreamingResponse(pieces(), media_type="text/plain")


@pytest.fixture(scope="module")
def openai_target() -> Iterator[Target]:
    """A loopback server with RunPod's OpenAI route for endpoint 'oai', in a thread."""
    app = Starlette(
        routes=[
            Route("/v2/oai/openai/v1/chat/completions", _completions, methods=["POST"]),
            Route("/hold", _hold, methods=["GET"]),
        ]
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout_s=20, what=f"uvicorn on {port}")
        yield Target(
            endpoint_id="oai", base_url=f"http://127.0.0.1:{port}/v2", api_key=KEY, kind="twin"
        )
    finally:
        server.should_exit = True
        thread.join(timeout=30)


async def test_openai_api_measures_ttft_itl_tpot_from_server_sent_events(openai_target: Target):
    """--api openai: TTFT from the first delta with content (not the role chunk), one gap per
    content chunk, output tokens from the usage chunk; no RunPod timings on this route."""
    records = await _run(openai_target, "openai", max_new_tokens=TOKENS)
    assert len(records) == 3
    for record in records:
        _check_pace(record)
        assert record.api == "openai"
        assert record.input_tokens == 3
        assert record.delay_ms is None
        assert record.exec_ms is None
        assert record.model == "openai-test"


async def test_the_transport_hands_on_a_body_as_it_arrives(openai_target: Target):
    """The prober's aiohttp transport gives httpx each piece of a body as it arrives: the
    first piece is read while the server still holds the rest (it read whole bodies, so
    every streamed chunk reached the prober at the end and TTFT was the whole answer)."""
    _HOLD.clear()
    url = openai_target.base_url.removesuffix("/v2") + "/hold"
    async with (
        httpx.AsyncClient(transport=AiohttpTransport()) as client,
        client.stream("GET", url) as response,
    ):
        pieces = response.aiter_text()
        first = await anext(pieces)
        held = not _HOLD.is_set()
        _HOLD.set()
        rest = "".join([piece async for piece in pieces])
    assert held
    assert (first, rest) == ("first\n", "rest\n")


def test_a_run_on_the_openai_route_alone_has_no_exec_lines():
    """The OpenAI route reports no executionTime: a level sent only through it has no Exec
    lines to fail; one with any request on another API keeps them."""
    openai = [replace(_streamed(seq, 200.0, 20.0), api="openai") for seq in range(3)]
    only = RunStats()
    for record in openai:
        only.add(record)
    assert [row.metric for row in only.slo_rows(Slo())][:2] == ["Total P50", "Total P95"]
    mixed = RunStats()
    for record in [*openai, _streamed(9, 200.0, 20.0)]:
        mixed.add(record)
    assert [row.metric for row in mixed.slo_rows(Slo())][:2] == ["Exec P50", "Exec P95"]


async def test_openai_api_with_a_bad_key_is_an_http_error(openai_target: Target):
    """A refused key fails the request as HTTP_ERROR, naming the rejection."""
    wrong = Target(
        endpoint_id="oai", base_url=openai_target.base_url, api_key="CANARY-wrong", kind="twin"
    )
    records = await _run(wrong, "openai", runs=1)
    assert [r.outcome for r in records] == [Outcome.HTTP_ERROR]
    assert "rejected" in (records[0].error or "")


@pytest.mark.parametrize(
    ("question", "outcome", "reason"),
    [
        ("job failed", Outcome.HTTP_ERROR, "HTTP 500"),
        ("error event", Outcome.FAILED, "engine died"),
    ],
)
async def test_openai_api_failures_name_their_reason(
    openai_target: Target, question: str, outcome: Outcome, reason: str
):
    """A failed job (HTTP 500) and an error event mid-stream fail the request, saying why."""
    records = await _run(openai_target, "openai", runs=1, question=question)
    assert [r.outcome for r in records] == [outcome]
    assert reason in (records[0].error or "")


async def test_a_chunk_of_several_tokens_is_one_itl_gap(stream_twin: Target):
    """6 tokens in chunks of 3: two text chunks, so one ITL gap (vLLM's counting), while
    TPOT still divides by the 5 token intervals."""
    [record] = await _run(stream_twin, "stream", runs=1, tokens=6, per_chunk=3)
    assert record.outcome is Outcome.OK, record.error
    assert record.output_tokens == 6
    assert len(record.itl_ms) == 1
    assert record.tpot_ms == pytest.approx(record.itl_ms[0] / 5, abs=0.01)


def test_goodput_recommends_the_level_with_most_goodput_and_the_result_checks_it():
    """--recommend-by goodput: the highest goodput wins (the lowest level on a tie), even a
    level that failed the SLO; a summary claiming another level is refused."""
    tight = Tightest(metric="Total P95", margin=1.0, margin_pct=1.0, unit="ms")

    def row(
        level: int, goodput: float | None, status: Literal["PASS", "FAIL"] = "PASS"
    ) -> SweepRow:
        return SweepRow(
            concurrency=level, total_p50_ms=1.0, total_p95_ms=1.0, exec_p50_ms=1.0,
            queue_p50_ms=1.0, success_rate_pct=100.0, status=status, tightest=tight,
            goodput_rps=goodput,
        )  # fmt: skip

    rows = (row(1, 1.0), row(2, 3.0, "FAIL"), row(3, 3.0, "FAIL"), row(4, None, "FAIL"))
    chosen = recommend(rows, "goodput")
    assert chosen is not None
    assert chosen.concurrency == 2
    assert recommend(rows, "slo") is not None
    assert recommend((row(1, None),), "goodput") is None
    with pytest.raises(ValueError, match="contradicts the table"):
        SweepResult(table=rows, recommendation=recommend(rows, "slo"), recommend_by="goodput")


async def test_sse_events_are_cut_at_blank_lines_however_the_body_is_split():
    """sse_data: events split across reads, CRLF, comments and multi-line data."""

    async def pieces() -> AsyncIterator[str]:
        for piece in [
            'data: {"a"',
            ": 1}\r\n\r\n: ping\n\nda",
            "ta: x\ndata: y\n\n",
            "data: [DONE]",
        ]:
            yield piece

    assert [data async for data in sse_data(pieces())] == ['{"a": 1}', "x\ny", "[DONE]"]


# --- what the records become: CSV, statistics, spans ---------------------------------------


def _streamed(seq: int, ttft: float, tpot: float, total_s: float = 1.0) -> RequestRecord:
    return RequestRecord(
        run_id="r",
        seq=seq,
        concurrency=1,
        intended=100.0 + seq,
        sent=100.0 + seq,
        done=100.0 + seq + total_s,
        outcome=Outcome.OK,
        output_tokens=10,
        api="stream",
        ttft_ms=ttft,
        tpot_ms=tpot,
        itl_ms=(tpot, tpot * 2),
    )


def test_streamed_columns_round_trip_through_requests_csv(tmp_path: Path):
    """ttft_ms, tpot_ms, itl_ms and api are written and read back; older rows lack them."""
    folder = tmp_path / "run"
    folder.mkdir()
    record = _streamed(0, 250.5, 12.25)
    with contextlib.closing(ResultsWriter(folder)) as writer:
        writer.write(record)
    [back] = read_records(folder)
    assert back == record
    old = tmp_path / "old"
    old.mkdir()
    (old / "requests.csv").write_text(
        "run_id,seq,concurrency,intended,sent,done,outcome,total_ms\nr,0,1,1.0,1.0,2.0,OK,1000\n"
    )
    [legacy] = read_records(old)
    assert legacy.api is None
    assert legacy.ttft_ms is None
    assert legacy.itl_ms == ()


def test_summary_has_ttft_itl_tpot_percentiles_slo_rows_and_goodput():
    """A streamed level: TTFT/ITL/TPOT percentiles and SLO rows; goodput counts the requests
    that met every target (here the one over the TTFT target does not)."""
    slo = Slo(ttft_p95_ms=500, tpot_p95_ms=50)
    records = [_streamed(0, 100, 10), _streamed(1, 200, 20), _streamed(2, 900, 10)]
    stats = RunStats.from_records(
        records, targets=GoodputTargets(total_ms=slo.total_p95_ms, ttft_ms=500, tpot_ms=50)
    )
    level = stats.to_summary(slo, 1)
    assert level.latency_ms.ttft is not None
    assert level.latency_ms.ttft.p50 == 200
    assert level.latency_ms.itl is not None
    assert level.latency_ms.itl.count == 6
    rows = {row.metric: row for row in level.slo.rows}
    assert rows["TTFT P95"].status == "FAIL"
    assert rows["TPOT P95"].status == "PASS"
    assert "ITL P95" in rows
    assert level.goodput is not None
    assert level.goodput.good == 2
    assert level.goodput.rps is not None
    assert level.goodput.rps > 0
    assert level.goodput.ttft_ms == 500


def test_whole_answer_summary_has_no_streaming_rows_but_goodput():
    """A runsync level: no TTFT lines, goodput by the total target alone."""
    record = RequestRecord(
        run_id="r", seq=0, concurrency=1, intended=1.0, sent=1.0, done=2.0, outcome=Outcome.OK
    )
    level = RunStats.from_records([record]).to_summary(Slo(), 1)
    assert level.latency_ms.ttft is None
    assert {row.metric for row in level.slo.rows}.isdisjoint({"TTFT P95", "ITL P95", "TPOT P95"})
    assert level.goodput is not None
    assert level.goodput.good == 1
    assert level.goodput.ttft_ms is None


def test_streamed_span_carries_gen_ai_server_timings_in_seconds():
    """gen_ai.server.time_to_first_token and time_per_output_token, in seconds."""
    attrs = span_attributes(
        _streamed(0, 250.0, 20.0), endpoint_id="e", kind="load", target_kind="twin"
    )
    assert attrs["gen_ai.server.time_to_first_token"] == pytest.approx(0.25)
    assert attrs["gen_ai.server.time_per_output_token"] == pytest.approx(0.02)
    whole = span_attributes(
        RequestRecord(
            run_id="r", seq=0, concurrency=1, intended=1.0, sent=1.0, done=2.0, outcome=Outcome.OK
        ),
        endpoint_id="e",
        kind="load",
        target_kind="twin",
    )
    assert "gen_ai.server.time_to_first_token" not in whole


# --- the command line -----------------------------------------------------------------------


def test_loadtest_api_stream_sweep_prints_chat_table_and_recommends_by_goodput(
    cli, stream_twin: Target, tmp_path: Path
):
    """loadtest --api stream --recommend-by goodput: TTFT/ITL/TPOT table and SLO rows, a
    goodput line and column, a goodput recommendation; report rebuilds it from the CSV."""
    done = cli(
        "loadtest", "--api", "stream", "--concurrency", "1,2", "--runs", "3",
        "--recommend-by", "goodput", "--slo-ttft-p95-ms", "60000", "--slo-tpot-p95-ms",
        "60000", "--slo-itl-p95-ms", "60000", "--run-id", "chat", **hosted_env(stream_twin),
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    for text in ("TTFT P95", "ITL P95", "TPOT P95", "what a chat user feels", "goodput: "):
        assert text in done.stdout
    assert "the highest goodput" in done.stdout
    summary = parse_summary((tmp_path / "chat" / "summary.json").read_text())
    assert summary.sweep is not None
    assert summary.sweep.recommend_by == "goodput"
    for level in summary.levels:
        assert level.latency_ms.ttft is not None
        assert level.latency_ms.ttft.p90 is not None
        assert level.latency_ms.ttft.p50 is not None
        assert level.latency_ms.ttft.p50 >= FIRST_MS
        assert level.goodput is not None
        assert level.goodput.good == 3
        assert level.goodput.ttft_ms == 60000
    (tmp_path / "chat" / "summary.json").unlink()
    rebuilt = cli("report", "chat", "--json")
    # A summary rebuilt from the CSV is marked interrupted (partial evidence): exit 1.
    assert rebuilt.exit_code == 1, rebuilt.output
    again = parse_summary(rebuilt.stdout)
    assert [lvl.latency_ms.ttft for lvl in again.levels] == [
        lvl.latency_ms.ttft for lvl in summary.levels
    ]


def test_a_tight_ttft_flag_fails_the_run_on_its_row(cli, stream_twin: Target, tmp_path: Path):
    """--slo-ttft-p95-ms below the handler's first-token delay: the TTFT row fails, exit 1,
    and no request counts as good."""
    done = cli("loadtest", "--api", "stream", "--runs", "2", "--slo-ttft-p95-ms", "1",
               "--run-id", "tight", "--json", **hosted_env(stream_twin))  # fmt: skip
    assert done.exit_code == 1, done.output
    level = parse_summary(done.stdout).level
    rows = {row.metric: row.status for row in level.slo.rows}
    assert rows["TTFT P95"] == "FAIL"
    assert level.goodput is not None
    assert level.goodput.good == 0


def test_api_flag_refuses_an_unknown_choice(cli):
    """--api takes runsync, stream or openai; anything else exits 2 naming the flag."""
    done = cli("loadtest", "--api", "grpc", "--target", "twin")
    assert done.exit_code == 2
    assert "--api must be runsync, stream or openai" in done.stderr


async def test_prober_api_setting_streams_a_probe_and_its_spans_carry_ttft(
    stream_twin: Target, tmp_path: Path
):
    """PROBER_API=stream with a spec that names no API (as Celery's scheduled probes): rows
    say stream, summary.json has TTFT/ITL/TPOT, each span carries TTFT and TPOT in seconds."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spec = ProbeSpec(kind="load", run_id="by-setting", runs=2, warmup=0)
    summary = await run_probe(
        spec,
        stream_twin,
        tmp_path,
        settings=ProberSettings(api="stream"),
        tracer=provider.get_tracer("test"),
    )
    records = read_records(tmp_path / "by-setting")
    assert [r.api for r in records] == ["stream", "stream"]
    assert summary.level.latency_ms.tpot is not None
    assert summary.level.latency_ms.tpot.count == 2
    by_job = {r.job_id: r for r in records}
    for span in exporter.get_finished_spans():
        attrs = span.attributes or {}
        record = by_job[str(attrs["runpod.job.id"])]
        assert record.ttft_ms is not None
        assert attrs["gen_ai.server.time_to_first_token"] == pytest.approx(record.ttft_ms / 1000)
        assert record.ttft_ms >= FIRST_MS
        assert "gen_ai.server.time_per_output_token" in attrs


def test_whole_output_takes_a_dict_or_an_aggregated_list():
    """/runsync output: a dict (old workers), [answer], or [chunk, ..., final]."""
    answer = {"text": "hi", "usage": {"output_tokens": 1}}
    assert whole_output(answer) is answer
    assert whole_output([answer]) is answer
    assert whole_output([{"text": "h", "tokens": 1}, answer]) is answer
    assert whole_output(["data: x\n\n"]) is None
    assert whole_output(None) is None


def test_loadtest_on_the_openai_route_of_the_embedded_twin(cli, tmp_path: Path):
    """--api openai on the default target: the embedded twin serves its streaming stand-in
    (a whole answer has no first token to time), the model is the one the route lists, the
    tokens arrive paced (not all at the end), and no Exec line fails for want of data."""
    pace = {"TWIN_CALIBRATED_FIRST_TOKEN_MS": "100", "TWIN_CALIBRATED_TOKEN_MS": "40",
            "TWIN_CALIBRATED_OUTPUT_TOKENS": "6", "TWIN_WORKERS_MIN": "1",
            "TWIN_WORKERS_MAX": "1"}  # fmt: skip
    done = cli("loadtest", "--target", "twin", "--api", "openai", "--runs", "3",
               "--run-id", "oai", **pace)  # fmt: skip
    assert done.exit_code == 0, done.output
    # The file, not stdout: the in-process twin's log lines share this test's stdout.
    level = parse_summary((tmp_path / "oai" / "summary.json").read_text()).levels[0]
    assert level.ok == 3
    assert level.latency_ms.ttft is not None
    assert level.latency_ms.tpot is not None
    assert level.latency_ms.ttft.p50 is not None
    assert level.latency_ms.ttft.p50 >= 100
    # Read whole, every gap would be a few microseconds; paced, they are the handler's 40 ms.
    assert (level.latency_ms.tpot.p50 or 0) >= 10
    assert "Exec P50" not in [row.metric for row in level.slo.rows]
    records = read_records(tmp_path / "oai")
    assert {r.model for r in records} == {"calibrated"}
