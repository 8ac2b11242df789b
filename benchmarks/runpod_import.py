"""What importing the runpod SDK costs a worker process, as the SDK does it and as podpulse does.

Run: ``.venv/bin/python benchmarks/runpod_import.py [rounds]``. Every twin worker (and the
model worker) imports runpod when it starts. runpod's ``rp_debugger`` asks py-cpuinfo for
the processor's name at import, and py-cpuinfo starts a second Python to answer;
``podpulse.common._runpod_import`` answers from /proc/cpuinfo instead. This starts fresh
interpreters that import each way, interleaved in one run (the machine is noisy), and prints
the median wall and CPU time (children included) of each and their ratio.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time

_WAYS = {
    "import runpod (the SDK's way)": "import runpod",
    "podpulse.common._runpod_import": "import podpulse.common._runpod_import",
}


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _once(code: str) -> tuple[float, float]:
    """Wall and CPU seconds of one fresh interpreter running *code*, its children included."""
    cpu, start = _cpu_s(), time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start, _cpu_s() - cpu


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in _WAYS}
    _once(_WAYS["import runpod (the SDK's way)"])  # warm the file cache and the .pyc files
    for _ in range(rounds):
        for name, code in _WAYS.items():
            samples[name].append(_once(code))
    medians = {
        name: (statistics.median(w for w, _ in got), statistics.median(c for _, c in got))
        for name, got in samples.items()
    }
    print(f"{rounds} rounds, interleaved; medians per fresh interpreter")
    print(f"{'':34} {'wall s':>8} {'CPU s':>8}")
    for name, (wall, cpu) in medians.items():
        print(f"{name:34} {wall:8.3f} {cpu:8.3f}")
    (sdk_wall, sdk_cpu), (ours_wall, ours_cpu) = medians.values()
    print(f"{'SDK / podpulse':34} {sdk_wall / ours_wall:7.2f}x {sdk_cpu / ours_cpu:7.2f}x")


if __name__ == "__main__":
    main()
