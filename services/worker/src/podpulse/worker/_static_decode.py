"""The static decode path: fixed slots, a preallocated KV cache, one fixed-shape step per bucket.

Why: eager decode of a 7B model is bound by the CPU launching kernels (about 20 ms a token
on the H200 whatever the batch, ``benchmarks/reports/worker_gpu_h200.txt``), not by reading
the weights. When every tensor a step touches has a fixed shape and address, the step can be
captured once as a CUDA graph and replayed with one launch.

Layout: the lane's row i lives in slot i. Each layer's keys and values are
[slots, kv_heads, max_tokens, head_dim] views of one preallocated tensor, and a row's tokens
start at position 0 of its slot (no left padding), so a token's position is also where its
key and value are written. A step of bucket b (the smallest bucket holding every row) reads
slots 0..b-1: token ids, positions and a boolean mask [b, 1, 1, max_tokens] come from static
buffers; each attention layer writes the new key and value at its row's position and attends
over the whole slot through the mask. Rows past the live ones up to the bucket feed the pad
token at position 0 of a free slot, and their logits are dropped.

Rows stay packed into the first slots: when rows leave, the ones after them move down (one
copy of their filled positions over all layers), so the bucket follows the number of rows.

Prefill stays eager (prompt lengths vary): the shared left-padded prefill runs and each
row's keys and values are copied into its slot.

On CUDA each bucket's step is captured as a ``torch.cuda.CUDAGraph`` at start-up, largest
bucket first and all in one memory pool, so the smaller graphs reuse the largest one's
memory. A bucket whose capture fails (a kernel that synchronises with the host) runs
uncaptured. On the CPU the same step runs uncaptured: that is what the CPU tests prove equal
to ``generate``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, Protocol

import torch

from ._generation import GenerationRequest
from ._lane import ModelCall, Row, prefill
from ._shape import first_line, kv_geometry, text_config

__all__ = [
    "BucketReport",
    "Capture",
    "Decode",
    "Graph",
    "StaticCacheError",
    "StaticLane",
    "StaticReport",
    "bucket_sizes",
    "capture_graph",
    "require_room",
    "resolve_decode",
]

Decode = Literal["eager", "static", "graph"]
_GIB = 1024**3
# Untimed runs of a step before its capture: the first run at a shape loads kernels and lets
# cuBLAS pick its algorithms, which must not happen while capturing.
_WARMUP_RUNS = 2
# Of the memory free when the cache is allocated, what it may take; the rest is for the
# graphs' pool, prefill activations and the allocator's slack.
_KV_SHARE_OF_FREE = 0.9
# A replayed graph runs the kernels it captured, so it should match the uncaptured step all
# but exactly; cuBLAS may pick another algorithm under capture, hence not zero.
_VERIFY_TOLERANCE = 1e-2


class Graph(Protocol):
    """What a captured step is to the lane: something to replay (``torch.cuda.CUDAGraph``)."""

    def replay(self) -> None: ...


# Captures a step: the graph, and the output tensor each replay writes.
Capture = Callable[[Callable[[], torch.Tensor], Any], tuple[Graph, torch.Tensor]]


class StaticCacheError(RuntimeError):
    """The static KV cache does not fit; the message says how large it is and what is free."""


@dataclass(frozen=True, slots=True)
class BucketReport:
    """How one bucket's step was prepared: captured as a graph, or why not (no error: not tried)."""

    size: int
    captured: bool
    seconds: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class StaticReport:
    """What the static lane allocated and captured at start-up (logged by the handler)."""

    slots: int
    max_tokens: int
    kv_bytes: int
    buckets: tuple[BucketReport, ...]
    capture_s: float
    # Memory the graphs' pool holds beyond the KV cache (0 when nothing was captured).
    graph_pool_bytes: int


def resolve_decode(requested: str, *, device_type: str, config: Any) -> tuple[Decode, str | None]:
    """The decode path to run for ``requested`` on this device and model, and why it differs.

    ``auto`` is ``graph`` on CUDA and ``eager`` on the CPU, where launches are cheap next to
    the arithmetic and a static cache only adds masked positions. ``graph`` off CUDA runs
    ``static``. Models with sliding-window or other non-full attention layers stay eager: one
    boolean mask cannot describe their windows.
    """
    if requested not in ("auto", "eager", "static", "graph"):
        raise ValueError(f"unknown decode path {requested!r}")
    if requested == "eager":
        return "eager", None
    kinds = set(getattr(text_config(config), "layer_types", None) or ["full_attention"])
    if kinds != {"full_attention"}:
        return "eager", f"layer types {sorted(kinds)} need the eager path"
    if requested == "auto":
        return ("graph" if device_type == "cuda" else "eager"), None
    if requested == "graph" and device_type != "cuda":
        return "static", "CUDA graphs need a CUDA device; the static step runs uncaptured"
    return ("graph" if requested == "graph" else "static"), None


def require_room(kv_bytes: int, free_bytes: int, *, slots: int, max_tokens: int) -> None:
    """Raise StaticCacheError unless the cache leaves room for the graphs and prefill."""
    if kv_bytes > _KV_SHARE_OF_FREE * free_bytes:
        raise StaticCacheError(
            f"a static KV cache of {slots} slots x {max_tokens} tokens needs "
            f"{kv_bytes / _GIB:.2f} GiB; {free_bytes / _GIB:.2f} GiB of GPU memory is free"
        )


def bucket_sizes(slots: int) -> tuple[int, ...]:
    """Batch sizes that get their own step: powers of two below ``slots``, then ``slots``."""
    sizes: list[int] = []
    size = 1
    while size < slots:
        sizes.append(size)
        size *= 2
    return (*sizes, slots)


class _SlotCache:
    """What each attention layer calls ``update`` on in a step of one bucket."""

    def __init__(
        self, keys: list[torch.Tensor], values: list[torch.Tensor], positions: torch.Tensor
    ) -> None:
        self._keys, self._values = keys, values
        rows, heads, _, dim = keys[0].shape
        # A view of the positions buffer: the step reads whatever was copied there last.
        self._index = positions.view(rows, 1, 1, 1).expand(rows, heads, 1, dim)

    def update(
        self,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        layer_idx: int,
        *_: Any,
        **__: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self._keys[layer_idx], self._values[layer_idx]
        keys.scatter_(2, self._index, key_states)
        values.scatter_(2, self._index, value_states)
        return keys, values


class StaticLane:
    """Rows decoded in fixed slots with one fixed-shape step per bucket; see the module doc."""

    def __init__(
        self,
        model: Any,
        *,
        slots: int,
        max_tokens: int,
        pad_token_id: int,
        capture: bool,
        capture_step: Capture | None = None,
    ) -> None:
        """``capture``: capture each bucket's step with ``capture_step`` (``capture_graph``,
        a CUDA graph; tests on the CPU pass a stand-in).
        """
        self._call = ModelCall(model)
        param = next(model.parameters())
        self._device = param.device
        dtype: torch.dtype = getattr(model, "dtype", param.dtype)
        layers, kv_heads, head_dim = kv_geometry(model.config)
        self.slots, self.max_tokens, self._pad = slots, max_tokens, pad_token_id
        self.buckets = bucket_sizes(slots)
        shape = (layers, 2, slots, kv_heads, max_tokens, head_dim)
        kv_bytes = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
        if self._device.type == "cuda":
            free = torch.cuda.mem_get_info(self._device)[0]
            require_room(kv_bytes, free, slots=slots, max_tokens=max_tokens)
        self.rows: list[Row] = []
        # Inference tensors: only the generation thread (in inference mode) touches them.
        with torch.inference_mode():
            # One tensor, so that moving a row to another slot is one copy over all layers.
            self._kv = torch.zeros(shape, dtype=dtype, device=self._device)
            self._ids = torch.full((slots, 1), pad_token_id, dtype=torch.long, device=self._device)
            self._positions = torch.zeros((slots,), dtype=torch.long, device=self._device)
            self._mask = torch.zeros(
                (slots, 1, 1, max_tokens), dtype=torch.bool, device=self._device
            )
            self._free(slice(None))
        self._caches = {
            b: _SlotCache(
                [self._kv[layer, 0, :b] for layer in range(layers)],
                [self._kv[layer, 1, :b] for layer in range(layers)],
                self._positions[:b],
            )
            for b in self.buckets
        }
        self._graphs: dict[int, tuple[Graph, torch.Tensor]] = {}
        reports, capture_s, pool = (
            self._capture_all(capture_step or capture_graph)
            if capture
            else (tuple(BucketReport(b, captured=False, seconds=0.0) for b in self.buckets), 0.0, 0)
        )
        self.report = StaticReport(slots, max_tokens, kv_bytes, reports, capture_s, pool)

    def fits(self, request: GenerationRequest) -> bool:
        """Whether the prompt and every new token fit one slot."""
        return len(request.input_ids) + request.max_new_tokens <= self.max_tokens

    def bucket_for(self, rows: int) -> int:
        """The smallest bucket that holds ``rows`` rows."""
        return next(b for b in self.buckets if b >= rows)

    # -- the lane protocol ----------------------------------------------------------------

    def prefill(self, fresh: list[Row]) -> torch.Tensor:
        if len(self.rows) + len(fresh) > self.slots:
            raise RuntimeError("more rows than static slots")  # the loop's room check prevents it
        logits, cache, mask = prefill(self._call, fresh, self._pad, self._device)
        width = mask.shape[1]
        layer_kv = _layer_tensors(cache)
        for i, row in enumerate(fresh):
            n, slot = len(row.request.input_ids), len(self.rows) + i
            for layer, (keys, values) in enumerate(layer_kv):
                self._kv[layer, 0, slot, :, :n] = keys[i, :, width - n :]
                self._kv[layer, 1, slot, :, :n] = values[i, :, width - n :]
            self._mask[slot] = False
            self._mask[slot, ..., :n] = True
        self.rows.extend(fresh)
        return logits

    def decode(self) -> torch.Tensor:
        live = len(self.rows)
        bucket = self.bucket_for(live)
        dead = bucket - live
        # One host-to-device copy each; dead rows write and read position 0 of a free slot.
        ids = [r.tokens[-1] for r in self.rows] + [self._pad] * dead
        positions = [r.next_position for r in self.rows] + [0] * dead
        self._ids[:bucket, 0].copy_(torch.tensor(ids))
        self._positions[:bucket].copy_(torch.tensor(positions))
        logits = self.run_step(bucket)
        # A copy: the graphs share one pool, so the next replay may overwrite this output.
        return logits[:live].clone()

    def keep(self, indices: list[int]) -> None:
        if len(indices) == len(self.rows):
            return
        # Ascending indices move rows only downwards, so no source is overwritten before use.
        for slot, old in enumerate(indices):
            if old != slot:
                filled = self.rows[old].next_position
                self._kv[:, :, slot, :, :filled] = self._kv[:, :, old, :, :filled]
                self._mask[slot] = self._mask[old]
        for slot in range(len(indices), len(self.rows)):
            self._free(slot)
        self.rows = [self.rows[i] for i in indices]

    def clear(self) -> None:
        for slot in range(len(self.rows)):
            self._free(slot)
        self.rows = []

    def _free(self, slot: int | slice) -> None:
        # A free slot attends to its position 0 only: a dead row in it must not see an empty mask
        # (softmax over nothing is NaN).
        self._mask[slot] = False
        self._mask[slot, ..., 0] = True

    # -- the step ---------------------------------------------------------------------------

    def run_step(self, bucket: int) -> torch.Tensor:
        """One decode step of ``bucket`` rows from the static buffers: replayed or run."""
        graph = self._graphs.get(bucket)
        if graph is None:
            return self._step(bucket)
        graph[0].replay()
        return graph[1]

    def _step(self, bucket: int) -> torch.Tensor:
        mask, positions = self._mask[:bucket], self._positions[:bucket]
        # Each row's new position becomes visible to it, and stays so for its later steps.
        mask.scatter_(3, positions.view(bucket, 1, 1, 1), True)
        return self._call(self._ids[:bucket], mask, positions.view(bucket, 1), self._caches[bucket])

    def _capture_all(self, capture_step: Capture) -> tuple[tuple[BucketReport, ...], float, int]:
        on_cuda = self._device.type == "cuda"
        started = time.perf_counter()
        reserved = torch.cuda.memory_reserved(self._device) if on_cuda else 0
        pool = torch.cuda.graph_pool_handle() if on_cuda else None
        reports: list[BucketReport] = []
        # Largest first: the smaller graphs then fit in the memory the largest one reserved.
        for bucket in sorted(self.buckets, reverse=True):
            t = time.perf_counter()
            try:
                with torch.inference_mode():
                    graph = capture_step(partial(self._step, bucket), pool)
                    self._verify(bucket, graph)
                self._graphs[bucket] = graph
                reports.append(BucketReport(bucket, True, time.perf_counter() - t))
            except Exception as exc:  # a bucket that cannot be captured runs uncaptured
                self._graphs.pop(bucket, None)
                reports.append(
                    BucketReport(bucket, False, time.perf_counter() - t, first_line(exc))
                )
        with torch.inference_mode():
            # The warm-up runs wrote into free slots; make them free again.
            self._free(slice(None))
        pool_bytes = torch.cuda.memory_reserved(self._device) - reserved if on_cuda else 0
        return (
            tuple(sorted(reports, key=lambda r: r.size)),
            time.perf_counter() - started,
            pool_bytes,
        )

    def _verify(self, bucket: int, graph: tuple[Graph, torch.Tensor]) -> None:
        """Replay once against the uncaptured step on the same inputs; raise if they disagree.

        A graph that replays the wrong buffers would decode plausible-looking wrong tokens;
        this costs two steps per bucket at start-up. Distinct token ids per row, so that rows
        mixed up would show.
        """
        self._ids[:bucket, 0].copy_(torch.arange(bucket))
        expected = self._step(bucket).clone()
        graph[0].replay()
        got = graph[1]
        if not torch.allclose(got, expected, rtol=_VERIFY_TOLERANCE, atol=_VERIFY_TOLERANCE):
            diff = float((got - expected).abs().max())
            raise RuntimeError(f"replay differs from the uncaptured step by up to {diff:.3g}")
        self._ids.fill_(self._pad)


def capture_graph(step: Callable[[], torch.Tensor], pool: Any) -> tuple[Graph, torch.Tensor]:
    """Warm ``step`` up on a side stream, then capture it; the graph and its output tensor."""
    side = torch.cuda.Stream()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(_WARMUP_RUNS):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        out = step()
    return graph, out


def _layer_tensors(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from ._decode_ops import kv_tensors

    flat = kv_tensors(cache)
    return list(zip(flat[0::2], flat[1::2], strict=True))
