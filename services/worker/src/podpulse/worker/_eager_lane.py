"""The eager decode path: one dynamic KV cache that grows a column a step.

A joining job's prompt is prefilled on its own, its cache left-padded to the batch's length
and concatenated; a leaving row is cut out, and columns that were padding for every row left
go too. Shapes change every step, so nothing here can be captured; in exchange any prompt
length fits, up to the model's context.
"""

from __future__ import annotations

from typing import Any

import torch

from ._decode_ops import kv_tensors, pad_left, set_kv_tensors
from ._lane import ModelCall, Row, prefill

__all__ = ["EagerLane"]


class EagerLane:
    """Rows decoded together through one ``DynamicCache`` and a [rows, width] mask."""

    def __init__(self, call: ModelCall, *, pad_token_id: int, device: torch.device) -> None:
        self._call = call
        self._pad = pad_token_id
        self._device = device
        self.rows: list[Row] = []
        self._cache: Any = None
        self._mask: torch.Tensor | None = None

    def prefill(self, fresh: list[Row]) -> torch.Tensor:
        logits, cache, mask = prefill(self._call, fresh, self._pad, self._device)
        self._merge(fresh, cache, mask)
        return logits

    def _merge(self, fresh: list[Row], cache: Any, mask: torch.Tensor) -> None:
        if self._cache is None or self._mask is None:
            self.rows, self._cache, self._mask = list(fresh), cache, mask
            return
        width = max(self._mask.shape[1], mask.shape[1])
        old_mask = pad_left(self._mask, width)
        self._mask = torch.cat([old_mask, pad_left(mask, width)], dim=0)
        merged = [
            torch.cat([pad_left(old, width, -2), pad_left(new, width, -2)])
            for old, new in zip(kv_tensors(self._cache), kv_tensors(cache), strict=True)
        ]
        set_kv_tensors(self._cache, merged)
        self.rows.extend(fresh)

    def decode(self) -> torch.Tensor:
        assert self._mask is not None  # rows imply a cache
        ids = torch.tensor([[r.tokens[-1]] for r in self.rows], device=self._device)
        positions = torch.tensor([[r.next_position] for r in self.rows], device=self._device)
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(self.rows), 1))], dim=1)
        return self._call(ids, self._mask, positions, self._cache)

    def keep(self, indices: list[int]) -> None:
        if len(indices) == len(self.rows):
            return
        if not indices:
            self.clear()
            return
        assert self._mask is not None  # rows imply a mask
        index = torch.tensor(indices, device=self._device)
        self.rows = [self.rows[i] for i in indices]
        mask = self._mask.index_select(0, index)
        # Columns that were padding for every remaining row can go.
        first = int(mask.any(dim=0).nonzero()[0].item())
        self._mask = mask[:, first:]
        set_kv_tensors(
            self._cache,
            [t.index_select(0, index)[:, :, first:, :] for t in kv_tensors(self._cache)],
        )

    def clear(self) -> None:
        self.rows, self._cache, self._mask = [], None, None
