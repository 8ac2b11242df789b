"""An endpoint that is not there: slots back off, the stop rule ends the run with its reason,
and every measured row is kept. Real sockets on loopback: a port with nothing listening, and a
real HTTP server answering 503 to everything."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from podpulse.common.net import free_port
from podpulse.common.probe_spec import ProbeSpec
from podpulse.common.request_records import read_records
from podpulse.common.runpod import Backoff
from podpulse.common.summary import parse_summary
from podpulse.prober import ProberSettings, Target, run_probe
from podpulse.prober._stop import RunAborted, StopRule, Streak

PODPULSE = str(Path(sys.executable).with_name("podpulse"))


def _dead_target() -> Target:
    """A hosted-style target on a loopback port nothing listens on: every connect is refused."""
    return Target(endpoint_id="ep-dead", base_url=f"http://127.0.0.1:{free_port()}/v2", api_key="k")


def _spec(run_id: str, **changes: object) -> ProbeSpec:
    base = {"run_id": run_id, "runs": 5000, "concurrency": [4], "warmup": 0}
    return ProbeSpec.model_validate(base | changes)


class _Unavailable(BaseHTTPRequestHandler):
    """Answers every request with HTTP 503, counting them."""

    hits = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        with self.lock:
            type(self).hits += 1
        body = b'{"error": "no workers available"}'
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def unavailable() -> Iterator[tuple[Target, type[_Unavailable]]]:
    """A real HTTP server on loopback that answers 503 to everything."""
    handler = type("Handler", (_Unavailable,), {"hits": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        yield (
            Target(endpoint_id="ep-503", base_url=f"http://127.0.0.1:{port}/v2", api_key="k"),
            handler,
        )
    finally:
        server.shutdown()
        server.server_close()


async def test_refused_connections_are_backed_off_and_the_run_ends_by_time(tmp_path: Path):
    """Nothing listening, concurrency 4, only the 5 s time bound on: the run ends by the stop
    rule with its reason, having sent far fewer than 100 requests (the old code sent ~2,000 a
    second), each of them written to requests.csv and counted in the summary."""
    settings = ProberSettings(abort_after_failures=0, abort_after_s=5)
    summary = await run_probe(_spec("dead-5s"), _dead_target(), tmp_path, settings=settings)
    records = read_records(tmp_path / "dead-5s")
    assert summary.end_reason is not None
    assert summary.end_reason.startswith("endpoint unreachable:")
    assert "failed to connect or got HTTP 5xx over" in summary.end_reason
    assert (summary.interrupted, summary.passed) == (True, False)
    assert 4 <= len(records) < 100
    assert summary.level.requests == len(records)
    assert all(r.outcome.value == "HTTP_ERROR" and "connection failed" in (r.error or "")
               for r in records)  # fmt: skip
    # Ended by the time bound, as the rule's own clock measured the streak (not ours).
    assert "(stop rule: 0 failures or 5 s)" in summary.end_reason
    failing = re.search(r"over (\d+\.\d) s", summary.end_reason)
    assert failing is not None
    assert float(failing.group(1)) >= 5
    on_disk = parse_summary((tmp_path / "dead-5s" / "summary.json").read_text())
    assert on_disk.end_reason == summary.end_reason


async def test_503s_end_the_run_after_n_in_a_row_with_back_off_between(tmp_path, unavailable):
    """A server answering 503: the run ends after exactly 20 failed rows (the default stop
    rule), the server saw about as many requests, and the back-off spread them over at least
    the sum of each slot's fixed half-steps (5 per slot: 0.25 + 0.5 + 1 + 2 s)."""
    target, handler = unavailable
    summary = await run_probe(_spec("busy"), target, tmp_path, settings=ProberSettings())
    records = read_records(tmp_path / "busy")
    assert summary.end_reason is not None
    assert "20 requests in a row" in summary.end_reason
    assert "HTTP 503" in summary.end_reason
    assert len(records) == summary.level.requests == 20
    assert 20 <= handler.hits <= 24  # the other slots' requests in flight when it stopped
    span_s = max(r.done for r in records) - min(r.sent for r in records)
    assert span_s >= 3.75


async def test_a_slot_backing_off_never_holds_a_run_past_its_duration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A 6 s run against nothing listening, the stop rule off, every slot backing off for an
    hour after each failure: it ends at its duration, not when a slot's back-off runs out, and
    is not aborted."""
    monkeypatch.setattr(Backoff, "delay", lambda self, attempt, retry_after=None: 3600.0)
    settings = ProberSettings(abort_after_failures=0, abort_after_s=0)
    spec = _spec("dead-6s", runs=None, duration_s=6)
    # The timeout only keeps a run that waits out its back-off from hanging the suite.
    summary = await asyncio.wait_for(
        run_probe(spec, _dead_target(), tmp_path, settings=settings), 120
    )
    # No end reason and not interrupted: a duration run that was neither aborted nor stopped
    # ended at its duration.
    assert (summary.end_reason, summary.interrupted) == (None, False)
    assert 4 <= summary.level.requests < 100


def test_a_streak_ends_on_a_success_and_trips_by_count_or_by_time():
    """The stop rule counts unreachable requests in a row: a success resets it; it trips at
    max_failures, or when the failures went on max_failing_s from the first one's send."""
    by_count = Streak(StopRule(max_failures=3, max_failing_s=0))
    by_count.failed(sent=0, done=1, error="x")
    by_count.failed(sent=1, done=2, error="x")
    by_count.passed()
    by_count.failed(sent=3, done=4, error="x")
    by_count.failed(sent=4, done=5, error="x")
    with pytest.raises(RunAborted, match=r"3 requests in a row .* over 3\.0 s"):
        by_count.failed(sent=5, done=6, error="refused")
    by_time = Streak(StopRule(max_failures=0, max_failing_s=10))
    for second in range(9):
        by_time.failed(sent=100 + second, done=100.5 + second, error="x")
    with pytest.raises(RunAborted, match="last error: boom"):
        by_time.failed(sent=109, done=110, error="boom")
    with pytest.raises(ValueError, match=">= 0"):
        StopRule(max_failures=-1)


def test_the_cli_exits_3_with_the_reason_and_keeps_the_rows(tmp_path: Path):
    """A real `podpulse loadtest --json` against a port nothing listens on: exit 3, one
    'aborted:' line naming the reason on stderr, stdout the summary with that end_reason."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "PROBER_", "OTEL_"))}
    env |= {
        "RUNPOD_ENDPOINT_ID": "ep-dead",
        "RUNPOD_ENDPOINT_BASE_URL": f"http://127.0.0.1:{free_port()}/v2",
        "RUNPOD_API_KEY": "k",
        "PROBER_RESULTS_DIR": str(tmp_path),
        "PROBER_WARMUP": "0",
        "PROBER_ABORT_AFTER_FAILURES": "8",
    }
    done = subprocess.run(
        [PODPULSE, "loadtest", "--runs", "5000", "--concurrency", "4", "--run-id", "cli-dead",
         "--json"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("aborted:")]
    assert "8 requests in a row failed to connect" in line
    printed = json.loads(done.stdout)
    assert printed["end_reason"] in line
    assert len(read_records(tmp_path / "cli-dead")) == printed["levels"][0]["requests"] == 8
    assert "Traceback" not in done.stderr
