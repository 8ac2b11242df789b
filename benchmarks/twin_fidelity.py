"""Does the twin, configured like the seed's endpoint, reproduce the seed's load-test table?

Run: ``.venv/bin/python benchmarks/twin_fidelity.py [runs per level]`` (about 2 minutes at
12). The seed's endpoint: workersMin 2, workersMax 5, QUEUE_DELAY 1 s, idleTimeout 180 s, the
runpod SDK's stock job loop, about 0.7 s of routing from a job queued and a worker free to the
job reaching it (``TWIN_DISPATCH_MS``), 75 ms each way between client and platform (the seed's
total exceeds queue + exec by 0.1-0.2 s: ``TWIN_API_LATENCY_MS``), a cold start long enough
that no third worker arrives during the run, and jobs whose executionTime P50 is the seed's
2.8 s: the handler sleeps 2,740 ms and the SDK adds its 0-100 ms pick-up. This runs
``podpulse loadtest --target twin`` closed-loop at concurrency 1..4 on such a twin and prints
each level's total, exec and queue (delayTime) P50 beside the seed's, with the difference; a
cell more than 10 % off is marked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# The seed's measured P50s in seconds, per concurrency: total, exec, queue.
SEED = {1: (3.5, 2.8, 0.7), 2: (3.5, 2.8, 0.7), 3: (3.5, 2.8, 0.7), 4: (6.9, 2.8, 3.9)}
TOLERANCE = 0.10
NAMES = ("total", "exec", "queue")
TWIN = {
    "TWIN_WORKERS_MIN": "2",
    "TWIN_WORKERS_MAX": "5",
    "TWIN_SCALER_TYPE": "QUEUE_DELAY",
    "TWIN_SCALER_VALUE": "1",
    "TWIN_IDLE_TIMEOUT_S": "180",
    "TWIN_JOB_LOOP": "sdk",
    "TWIN_DISPATCH_MS": "700",
    "TWIN_API_LATENCY_MS": "75",
    "TWIN_COLD_START_MS": "600000",
    "TWIN_CALIBRATED_EXEC_MS": "2740",
    "TWIN_CALIBRATED_DISTRIBUTION": "fixed",
    "PROBER_WARMUP": "2",
}


def main() -> int:
    runs = sys.argv[1] if len(sys.argv) > 1 else "12"
    podpulse = str(Path(sys.executable).with_name("podpulse"))
    with tempfile.TemporaryDirectory(prefix="podpulse-fidelity-") as results:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "TWIN_"))}
        env |= TWIN | {"PROBER_RESULTS_DIR": results}
        argv = [podpulse, "loadtest", "--target", "twin", "--concurrency", "1,2,3,4",
                "--runs", runs, "--run-id", "fidelity", "--json"]  # fmt: skip
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode not in (0, 1):
            print(done.stderr.strip(), file=sys.stderr)
            return done.returncode
        summary = json.loads(done.stdout)
    print(f"closed loop, {runs} requests a level; P50 in s, the seed's in brackets")
    off = 0
    for level in summary["levels"]:
        latency, concurrency = level["latency_ms"], level["concurrency"]
        got = [latency[name]["p50"] / 1000 for name in ("total", "exec", "delay")]
        cells = []
        for name, value, seed in zip(
            ("total", "exec", "queue"), got, SEED[concurrency], strict=True
        ):
            diff = (value - seed) / seed
            miss = abs(diff) > TOLERANCE
            off += miss
            mark = " *" if miss else ""
            cells.append(f"{name} {value:.2f} [{seed}] {100 * diff:+.0f}%{mark}")
        print(f"c={concurrency}  " + "  ".join(cells))
    print(f"{off} of {3 * len(SEED)} cells more than {TOLERANCE:.0%} off (marked *)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
