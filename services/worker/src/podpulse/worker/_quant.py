"""Weight quantisation backends: bitsandbytes (the user's baseline) and torchao weight-only.

Two ways in: ``load_config`` is what ``from_pretrained`` takes to quantise while loading (the
worker); ``quantize_linears`` converts a model's layers in place (the start-up probe and the
GPU benchmark, which build random-weight models on the device). Both leave the output head
in full precision, as bitsandbytes and transformers' torchao loader do.

Neither package is imported until a quantisation is asked for: they are in the worker's
``gpu`` extra only, and the CPU build never installs them.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

import torch

__all__ = [
    "BYTES_PER_WEIGHT",
    "PRECISION_ORDER",
    "Quantization",
    "available",
    "load_config",
    "package_for",
    "quantize_linears",
]

Quantization = Literal["none", "int8", "nf4", "torchao-int8", "torchao-int4"]
# Highest precision first; within one width bitsandbytes first, the baseline the user knows.
PRECISION_ORDER: tuple[Quantization, ...] = ("none", "int8", "torchao-int8", "nf4", "torchao-int4")
# Bytes per quantised (nn.Linear) weight. int8: one byte plus a per-row scale. nf4: half a byte
# plus an fp32 absmax per 64-value block. torchao int4: half a byte plus a bf16 scale and zero
# point per group of _INT4_GROUP input features.
_INT4_GROUP = 128
BYTES_PER_WEIGHT: dict[Quantization, float] = {
    "int8": 1.0,
    "nf4": 0.5 + 4 / 64,
    "torchao-int8": 1.0,
    "torchao-int4": 0.5 + 4 / _INT4_GROUP,
}
# bitsandbytes' LLM.int8() outlier threshold, transformers' default for load_in_8bit.
_INT8_THRESHOLD = 6.0


def package_for(choice: Quantization) -> str | None:
    """The package a quantisation needs (None for none)."""
    if choice == "none":
        return None
    return "torchao" if choice.startswith("torchao") else "bitsandbytes"


def available() -> frozenset[Quantization]:
    """The quantisations whose packages are installed (found, not imported: imports cost)."""
    usable: set[Quantization] = {"none"}
    if _installed("torchao"):
        usable |= {"torchao-int8", "torchao-int4"}
    # bitsandbytes loads through accelerate's device placement.
    if _installed("bitsandbytes") and _installed("accelerate"):
        usable |= {"int8", "nf4"}
    return frozenset(usable)


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def load_config(choice: Quantization, dtype: torch.dtype) -> Any | None:
    """``from_pretrained``'s ``quantization_config`` for ``choice`` (None: full precision)."""
    import transformers

    hf: Any = transformers  # its stubs leave the config classes untyped
    if choice == "none":
        return None
    if choice == "int8":
        return hf.BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=_INT8_THRESHOLD)
    if choice == "nf4":
        return hf.BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=True,
        )
    return hf.TorchAoConfig(_torchao_config(choice))


def _torchao_config(choice: Quantization) -> Any:
    from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig

    if choice == "torchao-int8":
        return Int8WeightOnlyConfig()
    # tile_packed_to_4d is tinygemm's layout, served by torch's own _weight_int4pack_mm kernel
    # (sm_80 and later, the RTX 4090 included); torchao's default "plain" layout needs the
    # separate fbgemm-gpu-genai package.
    return Int4WeightOnlyConfig(group_size=_INT4_GROUP, int4_packing_format="tile_packed_to_4d")


def quantize_linears(model: Any, choice: Quantization, dtype: torch.dtype) -> None:
    """Quantise every ``nn.Linear`` of ``model`` except the output head, in place, on its device.

    What loading with ``load_config(choice)`` gives, for a model that already has its weights
    in ``dtype`` on the GPU (random ones, in the probe and the benchmark).
    """
    if choice == "none":
        return
    if package_for(choice) == "torchao":
        from torchao.quantization import quantize_

        quantize_(model, _torchao_config(choice), filter_fn=_quantisable)
        return
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if _quantisable(child, f"{name}.{child_name}" if name else child_name):
                setattr(module, child_name, _bitsandbytes_linear(child, choice, dtype))
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the full-precision weights just freed


def _quantisable(module: torch.nn.Module, fqn: str) -> bool:
    return isinstance(module, torch.nn.Linear) and not fqn.endswith("lm_head")


def _bitsandbytes_linear(
    child: torch.nn.Linear, choice: Quantization, dtype: torch.dtype
) -> torch.nn.Module:
    import bitsandbytes as bnb

    device = child.weight.device
    has_bias = child.bias is not None
    quantised: Any
    if choice == "nf4":
        quantised = bnb.nn.Linear4bit(
            child.in_features, child.out_features, bias=has_bias, compute_dtype=dtype,
            compress_statistics=True, quant_type="nf4", device="meta",
        )  # fmt: skip
        # Params4bit quantises when moved to the GPU, here from the GPU to itself.
        quantised.weight = bnb.nn.Params4bit(
            child.weight.data, requires_grad=False, quant_type="nf4", compress_statistics=True,
            blocksize=64,
        ).to(device)  # fmt: skip
    else:
        quantised = bnb.nn.Linear8bitLt(
            child.in_features, child.out_features, bias=has_bias, has_fp16_weights=False,
            threshold=_INT8_THRESHOLD, device="meta",
        )  # fmt: skip
        # Int8Params only quantises on a move from the CPU; do on the GPU what it would do.
        rows, scales, _ = bnb.functional.int8_vectorwise_quant(child.weight.data.half())
        quantised.weight = bnb.nn.Int8Params(
            rows, requires_grad=False, has_fp16_weights=False, CB=rows, SCB=scales
        )
    if child.bias is not None:
        quantised.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
    module: torch.nn.Module = quantised
    return module
