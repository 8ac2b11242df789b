"""Tensor-level steps of the batching loop: KV-cache surgery and per-row sampling."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["kv_tensors", "pad_left", "sample", "set_kv_tensors"]


def kv_tensors(cache: Any) -> list[torch.Tensor]:
    """Every layer's key and value tensors, [batch, heads, seq, dim], keys then values."""
    if hasattr(cache, "layers"):
        return [t for layer in cache.layers for t in (layer.keys, layer.values)]
    # transformers before 4.56 kept two lists on the cache itself.
    return [t for pair in zip(cache.key_cache, cache.value_cache, strict=True) for t in pair]


def set_kv_tensors(cache: Any, tensors: list[torch.Tensor]) -> None:
    """Put back tensors in the order ``kv_tensors`` gave them."""
    keys, values = tensors[0::2], tensors[1::2]
    if hasattr(cache, "layers"):
        for layer, k, v in zip(cache.layers, keys, values, strict=True):
            layer.keys, layer.values = k, v
    else:
        cache.key_cache, cache.value_cache = list(keys), list(values)


def pad_left(tensor: torch.Tensor, width: int, dim: int = -1) -> torch.Tensor:
    """Zeros in front along ``dim`` up to ``width`` (masked out, so never attended to)."""
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def sample(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> int:
    """One token from a row's logits at ``temperature`` with nucleus ``top_p``, seeded."""
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        outside = sorted_probs.cumsum(-1) - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        return int(order[choice].item())
    return int(torch.multinomial(probs, 1, generator=generator).item())
