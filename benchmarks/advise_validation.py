"""The capacity advisor's predictions against the twin: predicted vs measured queue and total.

Run: ``.venv/bin/python benchmarks/advise_validation.py`` (about 3-4 minutes). Everything is
real and on loopback: the twin with its calibrated handler (lognormal, median 400 ms),
``podpulse loadtest`` for the runs and ``podpulse advise`` for the predictions.

1. Calibration: closed loop at concurrency 2, 120 requests, on 2 always-on workers.
2. ``podpulse advise --rate 4 --cold-start 2 --max-workers 3 --from calib``: the predictions
   for every candidate configuration, modelled from the calibration run's execution times.
3. The recommended configuration and a flex one (1/3 workers, QUEUE_DELAY 0.5 s, idle 60 s)
   each run 300 Poisson requests at 4 req/s on a twin configured that way; their measured
   queue (delayTime) and total P50/P95 are printed next to the predictions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from podpulse.common.summary import read_summary

PODPULSE = str(Path(sys.executable).with_name("podpulse"))
RATE = 4.0
COLD_START_S = 2.0  # what a twin worker takes to start on this box, roughly
CALIBRATED = {
    "TWIN_PORT": "0",
    "TWIN_CALIBRATED_EXEC_MS": "400",
    "TWIN_CALIBRATED_JITTER": "0.25",
    "TWIN_CALIBRATED_SEED": "2",
}
FLEX = {"workers_min": 1, "workers_max": 3, "scaler_type": "QUEUE_DELAY", "scaler_value": 0.5,
        "idle_timeout_s": 60}  # fmt: skip


def _run(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [PODPULSE, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode not in (0, 1):  # 1: an SLO failed, still a measurement
        sys.exit(f"podpulse {args[0]} exited {done.returncode}: {done.stderr.strip()[-400:]}")
    return done.stdout


def _twin_env(config: dict[str, Any]) -> dict[str, str]:
    return {
        **CALIBRATED,
        "TWIN_WORKERS_MIN": str(config["workers_min"]),
        "TWIN_WORKERS_MAX": str(config["workers_max"]),
        "TWIN_SCALER_TYPE": str(config["scaler_type"]),
        "TWIN_SCALER_VALUE": str(config["scaler_value"]),
        "TWIN_IDLE_TIMEOUT_S": str(config["idle_timeout_s"]),
    }


def _measure(config: dict[str, Any], run_id: str, results: Path) -> dict[str, float | None]:
    _run(
        ["loadtest", "--target", "twin", "--arrival", "poisson", "--rate", str(RATE),
         "--runs", "300", "--warmup", "0", "--run-id", run_id, "--results-dir", str(results)],
        _twin_env(config),
    )  # fmt: skip
    latency = read_summary(results / run_id / "summary.json").levels[0].latency_ms
    return {
        "queue_p50_ms": latency.delay.p50,
        "queue_p95_ms": latency.delay.p95,
        "total_p50_ms": latency.total.p50,
        "total_p95_ms": latency.total.p95,
    }


def _label(config: dict[str, Any]) -> str:
    return (
        f"{config['workers_min']}/{config['workers_max']} {config['scaler_type']} "
        f"{config['scaler_value']:g} idle {config['idle_timeout_s']}s"
    )


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="podpulse-advise-") as folder:
        results = Path(folder)
        always_on = {**FLEX, "workers_min": 2, "workers_max": 2, "scaler_value": 1,
                     "idle_timeout_s": 180}  # fmt: skip
        _run(
            ["loadtest", "--target", "twin", "--concurrency", "2", "--runs", "120",
             "--run-id", "calib", "--results-dir", str(results)],
            _twin_env(always_on),
        )  # fmt: skip
        advise = ["advise", "--rate", str(RATE), "--cold-start", str(COLD_START_S),
                  "--max-workers", "3", "--from", "calib", "--results-dir", str(results),
                  "--gpu", "4090 PRO", "--all", "--json"]  # fmt: skip
        advice = json.loads(_run(advise, {}))
        chosen = advice["chosen"]["config"] if advice["chosen"] else always_on
        predicted = {_label(c["config"]): c for c in advice["candidates"]}
        print(f"advisor vs twin: {RATE:g} req/s Poisson, 300 requests, calibrated 400 ms median")
        print(f"{'config':<36}{'':<11}{'queue P50':>10}{'queue P95':>10}"
              f"{'total P50':>10}{'total P95':>10}")  # fmt: skip
        for name, config in (("recommended", chosen), ("flex", FLEX)):
            label = _label(config)
            measured = _measure(config, name, results)
            guess = predicted.get(label)
            for kind, row in (("predicted", guess), ("measured", measured)):
                if row is None:
                    print(f"{label:<36}{kind:<11}{'(not a candidate)':>40}")
                    continue
                print(
                    f"{label:<36}{kind:<11}{row['queue_p50_ms']:>10.0f}{row['queue_p95_ms']:>10.0f}"
                    f"{row['total_p50_ms']:>10.0f}{row['total_p95_ms']:>10.0f}"
                )


if __name__ == "__main__":
    main()
