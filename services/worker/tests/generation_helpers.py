"""What the worker's decode tests compare against: transformers' own greedy ``generate``."""

from __future__ import annotations

import torch

from podpulse.worker._model import LoadedModel


def reference(loaded: LoadedModel, ids: list[int], n: int) -> list[int]:
    """The *n* greedy tokens ``generate`` gives after prompt *ids*, no stop token."""
    out = loaded.model.generate(
        torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=loaded.pad_token_id,
    )  # fmt: skip
    return list(out[0, len(ids) :].tolist())
