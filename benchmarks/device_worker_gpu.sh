#!/usr/bin/env bash
# Run benchmarks/worker_gpu.py on a lent GPU machine (torch + transformers preinstalled, no
# network): bf16 and each quantised path, eager against graph decode, c = 1, 2, 4, 8.
# bitsandbytes and torchao travel as wheels in .device/wheels (torchao's pure-Python wheel
# serves int4 through torch's own tinygemm kernel, whatever the device's torch):
#   pip download bitsandbytes==0.50.2 --no-deps --only-binary=:all: \
#     --platform manylinux_2_24_x86_64 --python-version 3.11 -d .device/wheels
#   pip download torchao==0.18.0 --no-deps --only-binary=:all: --platform any \
#     --python-version 3.11 --implementation py --abi none -d .device/wheels
# A precision whose package is missing is skipped and said so. Expect about 6-8 minutes: the
# benchmark starts nothing new after --budget-s 450 s and the timeout below ends it at 570 s,
# inside the device's 10 minutes a command. To split it, pass e.g.
# `--precisions none torchao-int4 nf4` to one run and `--precisions torchao-int8 int8` to another.
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
# torchao wheels built for another torch skip their C++ extensions; int4 does not need them.
export TORCHAO_FORCE_SKIP_LOADING_SO_FILES="${TORCHAO_FORCE_SKIP_LOADING_SO_FILES:-1}"
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv 2>/dev/null || true
exec timeout 570 "$PYTHON" benchmarks/worker_gpu.py --budget-s 450 "$@"
