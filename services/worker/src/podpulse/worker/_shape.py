"""What the worker reads off a model's config, and how a failure of one part is told in a line.

Shared by the loader, the static decode path and the quantisation probe, which must agree on
the KV cache's shape: the loader reserves memory for it, the static lane allocates it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["first_line", "kv_geometry", "text_config"]


def text_config(config: Any) -> Any:
    """The language model's part of ``config`` (multimodal configs nest it)."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def kv_geometry(config: Any) -> tuple[int, int, int]:
    """Layers, key/value heads and head size: one position's KV cache is 2 x their product."""
    text = text_config(config)
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return text.num_hidden_layers, kv_heads, head_dim


def first_line(exc: BaseException) -> str:
    """The first line of an error's message, or its type's name when it has none."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
