"""What the batching loop's decode paths share: a job's row, the lane protocol, and prefill.

A lane owns the KV cache of the rows it decodes and runs their forward passes; the loop
(``_batching.BatchGenerator``) picks tokens, applies stops and retires rows. ``prefill`` adds
rows, ``decode`` runs one step for all of them, ``keep`` drops the others. The eager lane
(``_eager_lane``) grows a dynamic cache; the static lane (``_static_decode``) writes into
preallocated slots with one fixed-shape step per batch size, which CUDA graphs can capture.
"""

from __future__ import annotations

import concurrent.futures
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from ._generation import GenerationRequest, GenerationResult

__all__ = ["Lane", "ModelCall", "Row", "prefill"]


@dataclass(slots=True)
class Row:
    """One job in the loop: its request, its tokens so far, and how it is to end."""

    request: GenerationRequest
    future: concurrent.futures.Future[GenerationResult]
    enqueued: float
    seed: int
    generator: torch.Generator | None = None
    tokens: list[int] = field(default_factory=list)
    started: float = 0.0
    first_token: float = 0.0
    batch_size: int = 1
    finish_reason: str | None = None
    # Set from the event loop when the awaiting task is cancelled (e.g. RunPod's job-stop);
    # a plain bool is enough: the thread only reads it, and a stale read costs one step.
    cancelled: bool = False
    # Called from the generation thread with the token ids a step added to this row (streamed
    # jobs); it must only hand them over (loop.call_soon_threadsafe), never do the work there.
    on_step: Callable[[list[int]], None] | None = None

    @property
    def next_position(self) -> int:
        # Position of the newest sampled token, the one the next decode step feeds in.
        return len(self.request.input_ids) + len(self.tokens) - 1


class Lane(Protocol):
    """A decode path: owns its rows' KV cache; every call is exactly one forward pass."""

    rows: list[Row]

    def prefill(self, fresh: list[Row]) -> torch.Tensor:
        """Run the prompts of ``fresh`` and add them to ``rows``; their last-position logits."""
        ...

    def decode(self) -> torch.Tensor:
        """One step for every row: the logits of each row's next token, in ``rows`` order."""
        ...

    def keep(self, indices: list[int]) -> None:
        """Keep only the rows at ``indices`` (ascending), in that order."""
        ...

    def clear(self) -> None:
        """Drop every row and its cache."""
        ...


class ModelCall:
    """The model's forward with the loop's fixed arguments: use the cache, last logits only."""

    def __init__(self, model: Any) -> None:
        self.model = model
        # transformers 5.24 renamed ``past_key_values`` to ``cache``; the GPU image may carry
        # an older release, so ask the signature rather than the version.
        params = inspect.signature(model.forward).parameters
        self.cache_kwarg = "cache" if "cache" in params else "past_key_values"

    def __call__(
        self, input_ids: torch.Tensor, mask: Any, positions: torch.Tensor, cache: Any
    ) -> torch.Tensor:
        """Float32 logits of each row's last position, [rows, vocab]."""
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{self.cache_kwarg: cache},
            logits_to_keep=1,
        )
        logits: torch.Tensor = out.logits[:, -1, :].float()
        return logits


def prefill(
    call: ModelCall, fresh: list[Row], pad_token_id: int, device: torch.device
) -> tuple[torch.Tensor, Any, torch.Tensor]:
    """The prompts of ``fresh`` left-padded into one forward pass: logits, cache and mask.

    Positions count from each prompt's first real token, so a padded row computes what it
    would alone; its keys and values sit at the right end of the cache, padding in front.
    """
    from transformers import DynamicCache

    width = max(len(r.request.input_ids) for r in fresh)
    ids = torch.full((len(fresh), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(fresh), width), dtype=torch.long)
    for i, row in enumerate(fresh):
        n = len(row.request.input_ids)
        ids[i, width - n :] = torch.tensor(list(row.request.input_ids), dtype=torch.long)
        mask[i, width - n :] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    try:
        cache = DynamicCache(config=call.model.config)
    except TypeError:  # transformers before 4.56 builds its layers lazily
        cache = DynamicCache()
    return call(ids, mask, positions, cache), cache, mask
