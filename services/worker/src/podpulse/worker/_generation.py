"""What a job asks the generation loop for and what it gets back, plus the loop's counters.

Plain dataclasses with no torch in them, so callers (the handler, benchmarks) can build
requests and read results without knowing how the batching loop works.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["FINISH_LENGTH", "FINISH_STOP", "BatchStats", "GenerationRequest", "GenerationResult"]

# finish_reason values, as OpenAI-style APIs name them.
FINISH_STOP = "stop"
FINISH_LENGTH = "length"


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One job's prompt ids and sampling parameters (temperature 0 means greedy)."""

    input_ids: Sequence[int]
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GenerationResult:
    """What one job produced, and how long it waited and decoded."""

    token_ids: list[int]
    text: str
    finish_reason: str
    seed: int
    queue_ms: float
    generate_ms: float
    batch_size: int
    # From submission to the first new token: queue wait plus prefill.
    first_token_ms: float = 0.0
    # When the first new token was chosen, in epoch seconds (time.time()): the one timing
    # another process (a client, the twin) can set beside its own clock on the same machine.
    first_token_at: float = 0.0


@dataclass(slots=True)
class BatchStats:
    """Counters for tests and benchmarks: how many forward passes served how many jobs."""

    forward_calls: int = 0
    prefill_calls: int = 0
    jobs: int = 0
    max_batch_size: int = 0
    # Decode steps the static lane ran (replayed graphs included).
    static_steps: int = 0
    # Jobs too long for the static slots, decoded on the eager lane instead.
    eager_fallbacks: int = 0
