"""Imports the runpod SDK without py-cpuinfo's second Python process.

runpod's ``rp_debugger`` (imported with ``runpod`` itself) asks py-cpuinfo for the processor's
name when it is imported, and py-cpuinfo answers by starting ``python cpuinfo.py --json``:
about 0.3 s of CPU on every worker start, for a name shown only in ``--rp_debugger`` output.
While runpod is imported here the name is read from /proc/cpuinfo instead; py-cpuinfo itself
is put back as it was for anyone else who asks it.
"""

from __future__ import annotations

import platform
from pathlib import Path

import cpuinfo  # type: ignore[import-untyped]  # py-cpuinfo ships no type hints

__all__: list[str] = []


def _processor() -> dict[str, str]:
    """The part of py-cpuinfo's answer that rp_debugger reads."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return {"brand_raw": value.strip()}
    return {"brand_raw": platform.processor() or "Unable to get processor info."}


_stock = cpuinfo.get_cpu_info
cpuinfo.get_cpu_info = _processor
try:
    import runpod  # noqa: F401  # imported for its side effect: rp_debugger is loaded now
finally:
    cpuinfo.get_cpu_info = _stock
