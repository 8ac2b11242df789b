"""benchmarks/worker_gpu.py in its CPU mode: the device script's code runs, and keeps its rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_tiny_run_keeps_every_row_and_the_paths_agree(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Both paths at each c land in $OUT's report; static decodes eager's greedy tokens."""
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OUT": str(out), "PODPULSE_CACHE_DIR": str(tiny_model_dir.parent)}
    args = ["--tiny", "--tokens", "6", "--check-tokens", "6", "--repeats", "1",
            "--concurrency", "1", "2"]  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "worker_gpu.py"), *args],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    # Each row is printed as it is measured, before the report at the end.
    assert done.stdout.count("measured: float32") == 4
    data = json.loads((out / "worker_gpu.json").read_text(encoding="utf-8"))
    assert {(r["path"], r["c"]) for r in data["rows"]} == {
        ("eager", 1), ("eager", 2), ("static", 1), ("static", 2)
    }  # fmt: skip
    assert all(r["agg_tps"] > 0 and r["ttft_ms"] > 0 for r in data["rows"])
    (prep,) = data["preps"]
    assert prep["checks"] == ["static vs eager greedy tokens in common: [6, 6] of 6"]
    report = (out / "worker_gpu.txt").read_text(encoding="utf-8")
    assert "side by side: static / eager" in report
