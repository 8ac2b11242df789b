"""Model loading decisions: dtype, and the quantisation that fits the GPU's free memory."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import Qwen2Config

from podpulse.worker._model import (
    ModelLoadError,
    Quantization,
    kv_cache_bytes,
    pick_dtype,
    quantization_candidates,
    weight_bytes,
)

GIB = 1024**3


def choose_quantization(
    requested: str,
    *,
    on_cuda: bool,
    bnb_available: bool,
    free_bytes: int | None,
    sizes: dict[Quantization, int],
    reserve_bytes: int,
) -> Quantization:
    """The quantisation that fit alone chooses: the highest precision that fits (what auto
    loads without a speed probe)."""
    usable: frozenset[Quantization] = frozenset(
        ("none", "int8", "nf4") if bnb_available else ("none",)
    )
    return quantization_candidates(
        requested,
        on_cuda=on_cuda,
        usable=usable,
        free_bytes=free_bytes,
        sizes=sizes,
        reserve_bytes=reserve_bytes,
    )[0]


QWEN2_7B = Qwen2Config(
    hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
    intermediate_size=18944, vocab_size=152064, max_position_embeddings=32768,
)  # fmt: skip


def test_dtype_is_bf16_on_capable_gpus_fp16_on_others_fp32_on_cpu() -> None:
    """pick_dtype follows the issue's rule for each kind of device."""
    assert pick_dtype("cuda", bf16_supported=True) is torch.bfloat16
    assert pick_dtype("cuda", bf16_supported=False) is torch.float16
    assert pick_dtype("cpu", bf16_supported=True) is torch.float32


def test_weight_and_kv_sizes_of_qwen2_7b() -> None:
    """Qwen2-7B's shape: ~15.2 GB of bf16 weights, int8 about half, nf4 about a third."""
    sizes = {q: weight_bytes(QWEN2_7B, q, torch.bfloat16) for q in ("none", "int8", "nf4")}
    assert 15.0e9 < sizes["none"] < 15.5e9
    assert 8.0e9 < sizes["int8"] < 9.0e9
    assert 5.0e9 < sizes["nf4"] < 6.0e9
    # 28 layers x 4 KV heads x 128 dims x 2 (K and V) x 2 bytes = 57344 bytes a position.
    assert kv_cache_bytes(QWEN2_7B, 1, torch.bfloat16) == 57344


def test_auto_keeps_bf16_for_the_user_model_on_a_4090() -> None:
    """On a 4090 (24 GiB less its CUDA context) bf16 7B weights plus the reserve fit."""
    quantizations: tuple[Quantization, ...] = ("none", "int8", "nf4")
    sizes = {q: weight_bytes(QWEN2_7B, q, torch.bfloat16) for q in quantizations}
    reserve = kv_cache_bytes(QWEN2_7B, 8192, torch.bfloat16) + 2 * GIB
    common: dict[str, Any] = {
        "on_cuda": True,
        "bnb_available": True,
        "sizes": sizes,
        "reserve_bytes": reserve,
    }
    assert choose_quantization("auto", free_bytes=int(23.4 * GIB), **common) == "none"
    # A 22.69 GB checkpoint read at face value would leave no room: auto steps down to int8.
    big = {**sizes, "none": int(22.69e9)}
    assert choose_quantization("auto", free_bytes=int(23.4 * GIB), **{**common, "sizes": big}) == (
        "int8"
    )
    assert choose_quantization("auto", free_bytes=8 * GIB, **common) == "nf4"


def test_nothing_fits_or_missing_bitsandbytes_is_a_clear_error() -> None:
    """Too little memory, or int8/nf4 without bitsandbytes, raise ModelLoadError saying why."""
    sizes: dict[Quantization, int] = {"none": 16 * GIB, "int8": 9 * GIB, "nf4": 6 * GIB}
    with pytest.raises(ModelLoadError, match=r"model too large: nf4 weights 6.00 GiB"):
        choose_quantization("auto", on_cuda=True, bnb_available=True, free_bytes=4 * GIB,
                            sizes=sizes, reserve_bytes=GIB)  # fmt: skip
    with pytest.raises(ModelLoadError, match="needs bitsandbytes"):
        choose_quantization("nf4", on_cuda=True, bnb_available=False, free_bytes=None,
                            sizes=sizes, reserve_bytes=0)  # fmt: skip
    assert choose_quantization("nf4", on_cuda=False, bnb_available=False, free_bytes=None,
                               sizes=sizes, reserve_bytes=0) == "none"  # fmt: skip
