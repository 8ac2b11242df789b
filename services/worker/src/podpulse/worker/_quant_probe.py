"""``QUANTIZATION=auto``'s start-up probe: how fast each candidate that fits decodes, measured.

Why measure: fewer bytes are not always a faster token. On the H200 bitsandbytes' nf4 reads a
third of bf16's bytes yet decoded slower than bf16 (4% of its bandwidth bound,
``benchmarks/reports/worker_gpu_h200.txt``); torchao's int8 weight-only casts its weights back
to bf16 on every call unless torch.compile fuses the cast. Only the GPU at hand can say.

Why a proxy: loading a 7B checkpoint once per candidate would add minutes to a cold start.
The probe builds a few decoder layers of the model's own shape with random weights on the
device, quantises them as loading would, and times the static decode step at one job
(captured as a CUDA graph on the graph path, uncaptured otherwise). A layer's time times the
model's layer count, plus the output head's time (neither backend quantises the head),
estimates a token. A candidate costs a second or two; none starts once the budget is spent.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ._quant import Quantization, quantize_linears
from ._shape import first_line, text_config
from ._static_decode import Decode, StaticLane

__all__ = ["ProbeResult", "choose_by_speed", "probe_speeds"]

# A vocabulary this small makes the probe model's own head negligible; the real head is
# timed on its own.
_PROBE_VOCAB = 256
_PROBE_TOKENS = 64


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One candidate's measured decode speed, or why it has none."""

    quantization: Quantization
    # Estimated tokens a second of the whole model decoding one job.
    tokens_per_second: float | None
    layer_ms: float | None
    seconds: float
    error: str | None = None


def probe_speeds(
    config: Any,
    candidates: Sequence[Quantization],
    *,
    device: torch.device,
    dtype: torch.dtype,
    decode: Decode,
    budget_s: float,
    layers: int = 2,
    steps: int = 16,
    quantize: Callable[[Any, Quantization, torch.dtype], None] = quantize_linears,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[ProbeResult, ...]:
    """Each candidate's estimated decode speed at one job, in ``candidates`` order.

    A candidate that fails (a kernel missing for this GPU, say) gets its error instead; the
    ones left when ``budget_s`` is spent get "not probed".
    """
    text = text_config(config)
    deadline = clock() + budget_s
    results: list[ProbeResult] = []
    head_ms: float | None = None
    for choice in candidates:
        started = clock()
        if started >= deadline:
            results.append(ProbeResult(choice, None, None, 0.0, "not probed: budget spent"))
            continue
        try:
            if head_ms is None:
                head_ms = _time_head(text, device, dtype, steps, clock)
            step_ms = _time_layers(
                text, choice, device=device, dtype=dtype, decode=decode, layers=layers,
                steps=steps, quantize=quantize, clock=clock,
            )  # fmt: skip
        except Exception as exc:  # a candidate that cannot run is not chosen, whatever the cause
            results.append(ProbeResult(choice, None, None, clock() - started, _described(exc)))
        else:
            layer_ms = step_ms / layers
            token_ms = layer_ms * text.num_hidden_layers + head_ms
            results.append(ProbeResult(choice, 1000.0 / token_ms, layer_ms, clock() - started))
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return tuple(results)


def choose_by_speed(
    candidates: Sequence[Quantization], results: Sequence[ProbeResult], target_tps: float
) -> tuple[Quantization, str]:
    """The candidate to load, and why: quality first, as long as it is fast enough.

    ``candidates`` come highest precision first. The first whose measured speed reaches
    ``target_tps`` wins; when none does, the fastest measured; when none was measured, the
    first (the choice by fit alone).
    """
    speeds = {r.quantization: r.tokens_per_second for r in results if r.tokens_per_second}
    if not speeds:
        return candidates[0], "no probe measured a candidate: highest precision that fits"
    for choice in candidates:
        speed = speeds.get(choice)
        if speed is not None and speed >= target_tps:
            return choice, f"highest precision reaching {target_tps:g} tokens/s ({speed:.1f})"
    fastest = max(speeds, key=lambda c: speeds[c])
    return fastest, (
        f"none reaches {target_tps:g} tokens/s: the fastest ({speeds[fastest]:.1f} tokens/s)"
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_head(
    text: Any, device: torch.device, dtype: torch.dtype, steps: int, clock: Callable[[], float]
) -> float:
    head = torch.nn.Linear(
        text.hidden_size, text.vocab_size, bias=False, device=device, dtype=dtype
    )
    x = torch.zeros((1, text.hidden_size), device=device, dtype=dtype)
    with torch.inference_mode():
        head(x)
        _sync(device)
        started = clock()
        for _ in range(steps):
            head(x)
        _sync(device)
    return (clock() - started) * 1000.0 / steps


def _time_layers(
    text: Any,
    choice: Quantization,
    *,
    device: torch.device,
    dtype: torch.dtype,
    decode: Decode,
    layers: int,
    steps: int,
    quantize: Callable[[Any, Quantization, torch.dtype], None],
    clock: Callable[[], float],
) -> float:
    from transformers import AutoModelForCausalLM

    small = copy.deepcopy(text)
    small.num_hidden_layers = layers
    if getattr(small, "layer_types", None):
        small.layer_types = small.layer_types[:layers]
    small.vocab_size = _PROBE_VOCAB
    auto: Any = AutoModelForCausalLM  # transformers' stubs leave from_config untyped
    with torch.device(device):
        model = auto.from_config(small, dtype=dtype, attn_implementation="sdpa").eval()
    quantize(model, choice, dtype)
    lane = StaticLane(
        model, slots=1, max_tokens=_PROBE_TOKENS, pad_token_id=0, capture=decode == "graph"
    )
    with torch.inference_mode():
        # The first steps load kernels and let the GPU libraries pick their algorithms.
        for _ in range(2):
            lane.run_step(1)
        _sync(device)
        started = clock()
        for _ in range(steps):
            lane.run_step(1)
        _sync(device)
    return (clock() - started) * 1000.0 / steps


def _described(exc: BaseException) -> str:
    # The type too: a probe error is read beside others from other backends.
    return f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else type(exc).__name__
