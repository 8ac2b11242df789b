#!/usr/bin/env bash
# Run benchmarks/worker_gpu.py on a lent GPU machine (torch + transformers preinstalled, no
# network). bitsandbytes, and optionally the handler's pure-Python deps (pydantic,
# pydantic-settings, structlog, opentelemetry-api ...), travel as wheels in .device/wheels:
#   pip download bitsandbytes==0.50.2 --no-deps --only-binary=:all: \
#     --platform manylinux_2_24_x86_64 --python-version 3.11 -d .device/wheels
# Without the handler's deps the benchmark drives the batching core and labels rows "core".
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if compgen -G ".device/wheels/*.whl" >/dev/null; then
  "$PYTHON" -m pip install --no-index --no-deps --find-links .device/wheels .device/wheels/*.whl \
    || echo "device_worker_gpu: wheel install failed; continuing without them" >&2
fi
export PYTHONPATH="services/worker/src:libs/common/src${PYTHONPATH:+:$PYTHONPATH}"
export PODPULSE_CACHE_DIR="${PODPULSE_CACHE_DIR:-${TMPDIR:-/tmp}/podpulse-cache}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv 2>/dev/null || true
exec timeout 400 "$PYTHON" benchmarks/worker_gpu.py --budget-s 300 "$@"
