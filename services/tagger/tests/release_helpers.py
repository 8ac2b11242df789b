"""Helpers for the release tests: a real git repository, and soak summaries that validate as
the prober's do (hand-built: the tagger's tests do not import the prober)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from podpulse.common.probe_spec import ProbeSpec
from podpulse.common.summary import (
    Breakdown,
    Latencies,
    LatencyStats,
    LevelSummary,
    RunSummary,
    Slo,
    SloRow,
    SloVerdict,
    SoakCheck,
    SoakTrends,
    SoakVerdict,
    SoakWindow,
    TargetInfo,
    Tokens,
)

ENDPOINT_ID = "4cqta56swdioxi"
PODPULSE_TOML = f"""\
[endpoint]
id = "{ENDPOINT_ID}"
image = "runpod/pytorch:2.8.0-py3.11-cuda12.8.1-cudnn-devel-ubuntu22.04"
model = "Puneetrinity/qwen2-7b-career"
model_size_gb = 22.69
gpu = "NVIDIA GeForce RTX 4090"

[endpoint.workers]
min = 2
max = 5
idle_timeout_s = 180

[endpoint.scaling]
type = "QUEUE_DELAY"
value = 1
"""
PODPULSE = str(Path(sys.executable).with_name("podpulse"))


def _stats(p50: float, p95: float, count: int = 360) -> LatencyStats:
    return LatencyStats(p50=p50, p95=p95, p99=p95 * 1.1, mean=p50 * 1.05, count=count)


def soak_summary(
    run_id: str = "soak-1",
    *,
    ended_at: datetime | None = None,
    passed: bool = True,
    endpoint_id: str = ENDPOINT_ID,
    target: Literal["hosted", "twin"] = "hosted",
    exec_p50: float = 1900.0,
    total_p50: float = 2150.0,
    base_url: str = "https://api.runpod.ai/v2",
) -> RunSummary:
    """A 360-request soak at concurrency 2 that ended at *ended_at* (default: now)."""
    ended = ended_at or datetime.now(UTC)
    started = ended - timedelta(minutes=30)
    slo = Slo()
    total_p95 = 3150.0
    rows = (
        SloRow(metric="Exec P50", slo="≤ 3000 ms", threshold=3000, unit="ms", actual=exec_p50,
               margin=3000 - exec_p50, margin_pct=None, status="PASS"),
        SloRow(metric="Total P50", slo="≤ 5000 ms", threshold=5000, unit="ms", actual=total_p50,
               margin=5000 - total_p50, margin_pct=None, status="PASS"),
        SloRow(metric="Total P95", slo="≤ 8000 ms", threshold=8000, unit="ms", actual=total_p95,
               margin=8000 - total_p95, margin_pct=None, status="PASS"),
    )  # fmt: skip
    level = LevelSummary(
        concurrency=2,
        requests=360,
        ok=360,
        failed=0,
        success_rate_pct=100.0,
        failures={},
        rate_limited_responses=0,
        percentile_method="nearest-rank",
        latency_ms=Latencies(
            total=_stats(total_p50, total_p95),
            exec=_stats(exec_p50, 2850.0),
            delay=_stats(150.0, 400.0),
            overhead=_stats(60.0, 90.0),
            schedule_lag=_stats(0.1, 0.5),
        ),
        breakdown_pct=Breakdown(execution=88.0, queue=9.0, overhead=3.0),
        tokens=Tokens(input=36_000, output=72_000, tokens_per_second=52.6,
                      throughput_tokens_per_s=40.0),
        throughput_rps=0.2,
        started_at=started,
        ended_at=ended,
        duration_s=1800.0,
        slo=SloVerdict(passed=True, thresholds=slo, rows=rows),
    )  # fmt: skip
    checks = (
        SoakCheck(check="zero failures", passed=True, detail="0 of 360"),
        SoakCheck(check="stable P95", passed=passed, detail="+2 %/30 min" if passed else "+40 %"),
    )
    window = SoakWindow(
        index=0, start_s=0.0, covered_s=60.0, requests=12, failures=0, p50_ms=2100.0,
        p95_ms=3100.0, throughput_rps=0.2, tokens_per_s=52.0, full=True,
    )  # fmt: skip
    return RunSummary(
        schema_version=1,
        run_id=run_id,
        kind="soak",
        target=TargetInfo(kind=target, endpoint_id=endpoint_id, base_url=base_url),
        interrupted=False,
        passed=passed,
        spec=ProbeSpec(kind="soak", run_id=run_id, concurrency=(2,), duration_s=1800.0),
        levels=(level,),
        soak=SoakVerdict(
            passed=passed,
            checks=checks,
            p95_threshold_ms=4000.0,
            min_change_pct=10.0,
            window_s=60.0,
            trend=SoakTrends(p95_ms_per_min=None, throughput_rps_per_min=None),
            windows=(window,),
        ),
    )


@dataclass
class GitRepo:
    """A real repository with podpulse.toml committed on branch main."""

    root: Path

    def git(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            ["git", *args], cwd=self.root, capture_output=True, text=True, check=True,
            env=None if env is None else os.environ | env,
        )  # fmt: skip
        return done.stdout.strip()

    def commit(
        self, name: str = "change.txt", text: str = "x\n", *, at: datetime | None = None
    ) -> str:
        """Commit *text* as *name*, committed at *at* (default: now); the new HEAD."""
        (self.root / name).write_text(text)
        self.git("add", name)
        dated = {} if at is None else {"GIT_COMMITTER_DATE": at.isoformat()}
        self.git("commit", "-q", "-m", f"change {name}", env=dated)
        return self.git("rev-parse", "HEAD")

    def soak(self, run_id: str = "soak-1", **changes: object) -> RunSummary:
        """Write a soak's summary.json into results/<run_id>/, as the prober does."""
        summary = soak_summary(run_id, **changes)  # type: ignore[arg-type]  # soak_summary's keywords, passed on
        folder = self.root / "results" / run_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "summary.json").write_text(summary.model_dump_json(indent=2))
        return summary

    @property
    def records(self) -> Path:
        return self.root / "DEPLOYMENT.md"

    def tag_target(self, tag: str) -> str | None:
        done = subprocess.run(
            ["git", "rev-parse", "-q", "--verify", f"refs/tags/{tag}^{{commit}}"],
            cwd=self.root, capture_output=True, text=True, check=False,
        )  # fmt: skip
        return done.stdout.strip() or None


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str


RunCli = Callable[..., Ran]
