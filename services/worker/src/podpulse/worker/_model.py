"""Load the causal LM once at start-up: dtype, attention, and a quantisation that fits the GPU.

``QUANTIZATION=auto`` keeps the highest precision whose weights fit beside the KV cache; when
several fit on CUDA and a probe budget is given, a short timed probe of each
(``_quant_probe``) lets it trade precision for speed: the highest precision that reaches the
target tokens/s, else the fastest.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ._quant import (
    BYTES_PER_WEIGHT,
    PRECISION_ORDER,
    Quantization,
    available,
    load_config,
    package_for,
)
from ._quant_probe import ProbeResult, choose_by_speed, probe_speeds
from ._shape import first_line, kv_geometry, text_config

__all__ = [
    "LoadedModel",
    "ModelLoadError",
    "Quantization",
    "kv_cache_bytes",
    "load_model",
    "pick_dtype",
    "quantization_candidates",
    "weight_bytes",
    "weight_sizes",
]

_GIB = 1024**3
# Room beyond weights and KV cache: prefill activations of a batch (4 x 2k tokens through
# Qwen2-7B's MLP alone is ~0.6 GiB), cuBLAS workspaces, the logits, allocator fragmentation.
_WORKSPACE_BYTES = 2 * _GIB


class ModelLoadError(RuntimeError):
    """The model cannot be served; the message says why in one line."""


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model ready to generate, with what the handler needs to know about it."""

    model: Any
    tokenizer: Any
    name: str
    device: torch.device
    dtype: torch.dtype
    quantization: Quantization
    context_length: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    # auto's start-up probe, one result per candidate that fitted (empty when none ran).
    probes: tuple[ProbeResult, ...] = ()
    quantization_reason: str = ""


def pick_dtype(device_type: str, bf16_supported: bool) -> torch.dtype:
    """bf16 where the GPU supports it, fp16 on other GPUs, fp32 on CPU."""
    if device_type != "cuda":
        return torch.float32
    return torch.bfloat16 if bf16_supported else torch.float16


def weight_bytes(config: Any, quantization: Quantization, dtype: torch.dtype) -> int:
    """Bytes the weights take on the device, from a weightless (meta) copy of the model."""
    return weight_sizes(config, dtype, (quantization,))[quantization]


def weight_sizes(
    config: Any, dtype: torch.dtype, quantizations: Sequence[Quantization] = PRECISION_ORDER
) -> dict[Quantization, int]:
    """:func:`weight_bytes` of each of *quantizations*, from one meta copy of the model."""
    from transformers import AutoModelForCausalLM

    auto: Any = AutoModelForCausalLM  # transformers' stubs leave from_config untyped
    with torch.device("meta"):
        skeleton = auto.from_config(config)
    element = torch.empty((), dtype=dtype).element_size()
    totals = dict.fromkeys(quantizations, 0.0)
    for name, module in skeleton.named_modules():
        # Both backends leave the output head in full precision.
        linear = isinstance(module, torch.nn.Linear) and not name.endswith("lm_head")
        for param in module.parameters(recurse=False):
            for quantization in quantizations:
                quantised = linear and quantization != "none"
                per = BYTES_PER_WEIGHT[quantization] if quantised else element
                totals[quantization] += param.numel() * per
    return {q: int(total) for q, total in totals.items()}


def kv_cache_bytes(config: Any, tokens: int, dtype: torch.dtype) -> int:
    """Bytes of KV cache for ``tokens`` positions summed over all rows of a batch."""
    layers, kv_heads, head_dim = kv_geometry(config)
    element = torch.empty((), dtype=dtype).element_size()
    return int(2 * layers * kv_heads * head_dim * element * tokens)


def quantization_candidates(
    requested: str,
    *,
    on_cuda: bool,
    usable: frozenset[Quantization],
    free_bytes: int | None,
    sizes: dict[Quantization, int],
    reserve_bytes: int,
) -> list[Quantization]:
    """What may be loaded, highest precision first, or ModelLoadError when nothing fits.

    ``auto``: every installed quantisation whose weights plus the reserve fit ``free_bytes``;
    a named one: itself, if it fits. On CPU every request means ``none``.
    """
    if not on_cuda:
        return ["none"]
    if requested == "auto":
        candidates = [q for q in PRECISION_ORDER if q in usable]
    else:
        candidates = [q for q in PRECISION_ORDER if q == requested]
        if not candidates:
            raise ModelLoadError(f"WORKER_QUANTIZATION={requested}: no such quantisation")
        if candidates[0] not in usable:
            needs = package_for(candidates[0])
            needs = "bitsandbytes and accelerate" if needs == "bitsandbytes" else needs
            raise ModelLoadError(f"WORKER_QUANTIZATION={requested} needs {needs}")
    if free_bytes is None:
        return candidates
    fitting = [q for q in candidates if sizes[q] + reserve_bytes <= free_bytes]
    if fitting:
        return fitting
    smallest = min(candidates, key=lambda q: sizes[q])
    missing = sorted({"bitsandbytes", "torchao"} - {package_for(q) for q in usable})
    raise ModelLoadError(
        f"model too large: {smallest} weights {sizes[smallest] / _GIB:.2f} GiB plus "
        f"{reserve_bytes / _GIB:.2f} GiB KV/workspace reserve exceed {free_bytes / _GIB:.2f} GiB "
        "free GPU memory"
        + (f" ({' and '.join(missing)} not installed)" if missing and requested == "auto" else "")
    )


def load_model(
    model_id: str,
    *,
    quantization: str = "auto",
    kv_reserve_tokens: int = 8192,
    decode: str = "eager",
    probe_s: float = 0.0,
    target_tokens_per_second: float = 0.0,
) -> LoadedModel:
    """Load tokenizer and model from a local folder or hub id, or raise ModelLoadError.

    ``probe_s`` > 0 lets ``auto`` time the candidates that fit (at most that long, on the
    decode path ``decode`` will run) and pick by ``target_tokens_per_second``.
    """
    import transformers

    hf: Any = transformers  # its stubs leave most of what we call untyped
    # Progress bars on a worker's stderr are noise in RunPod's log view.
    hf.utils.logging.disable_progress_bar()
    looks_local = model_id.startswith(("/", ".", "~")) or Path(model_id).exists()
    if looks_local and not Path(model_id).expanduser().exists():
        raise ModelLoadError(f"WORKER_MODEL_ID={model_id}: no such folder")
    try:
        config = hf.AutoConfig.from_pretrained(model_id)
    except (OSError, ValueError) as exc:
        reason = first_line(exc)
        raise ModelLoadError(
            f"WORKER_MODEL_ID={model_id}: cannot read its config: {reason}"
        ) from None
    on_cuda = torch.cuda.is_available()
    device = torch.device("cuda", torch.cuda.current_device()) if on_cuda else torch.device("cpu")
    dtype = pick_dtype(device.type, on_cuda and torch.cuda.is_bf16_supported())
    try:
        sizes = weight_sizes(config, dtype)
    except ValueError as exc:
        raise ModelLoadError(
            f"WORKER_MODEL_ID={model_id} is not a causal language model "
            f"({type(config).__name__}): {first_line(exc)}"
        ) from None
    usable = available()
    has_accelerate = importlib.util.find_spec("accelerate") is not None
    free = torch.cuda.mem_get_info(device)[0] if on_cuda else None
    reserve = kv_cache_bytes(config, kv_reserve_tokens, dtype) + _WORKSPACE_BYTES
    candidates = quantization_candidates(
        quantization,
        on_cuda=on_cuda,
        usable=usable,
        free_bytes=free,
        sizes=sizes,
        reserve_bytes=reserve,
    )
    chosen, reason = candidates[0], "highest precision that fits"
    probes: tuple[ProbeResult, ...] = ()
    if quantization == "auto" and on_cuda and len(candidates) > 1 and probe_s > 0:
        probes = _probe(
            config,
            candidates=candidates,
            device=device,
            dtype=dtype,
            decode=decode,
            budget_s=probe_s,
        )
        chosen, reason = choose_by_speed(candidates, probes, target_tokens_per_second)
    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": "sdpa"}
    if (quantization_config := load_config(chosen, dtype)) is not None:
        kwargs["quantization_config"] = quantization_config
    if on_cuda and has_accelerate:
        kwargs["device_map"] = {"": device.index or 0}
    try:
        tokenizer: Any = hf.AutoTokenizer.from_pretrained(model_id)
        model: Any = hf.AutoModelForCausalLM.from_pretrained(model_id, **kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(
            f"WORKER_MODEL_ID={model_id}: cannot load: {first_line(exc)}"
        ) from None
    if on_cuda and not has_accelerate:
        model = model.to(device)  # accelerate places weights on load; without it, move them
    model.eval()
    if getattr(tokenizer, "chat_template", None) is None:
        raise ModelLoadError(f"WORKER_MODEL_ID={model_id}: the tokenizer has no chat template")
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=str(getattr(config, "_name_or_path", "") or model_id),
        device=device,
        dtype=dtype,
        quantization=chosen,
        context_length=_context_length(config, tokenizer),
        eos_token_ids=_eos_ids(model, tokenizer),
        pad_token_id=_pad_id(tokenizer),
        probes=probes,
        quantization_reason=reason,
    )


def _probe(
    config: Any,
    *,
    candidates: Sequence[Quantization],
    device: torch.device,
    dtype: torch.dtype,
    decode: str,
    budget_s: float,
) -> tuple[ProbeResult, ...]:
    from ._static_decode import resolve_decode

    path, _ = resolve_decode(decode, device_type=device.type, config=config)
    return probe_speeds(
        config, candidates, device=device, dtype=dtype, decode=path, budget_s=budget_s
    )


def _context_length(config: Any, tokenizer: Any) -> int:
    text = text_config(config)
    limit = int(getattr(text, "max_position_embeddings", 0) or 0)
    tok_limit = int(getattr(tokenizer, "model_max_length", 0) or 0)
    # Tokenizers without a limit report a huge sentinel (1e30); only a real one narrows.
    if 0 < tok_limit < 10**7:
        limit = min(limit, tok_limit) if limit else tok_limit
    return limit or 2048


def _eos_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    ids: set[int] = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return tuple(sorted(ids))


def _pad_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0
