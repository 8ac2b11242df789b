"""Reading a job's output whether the worker answered whole or streamed.

A generator handler run with ``return_aggregate_stream`` makes the job's final output (what
``/runsync`` and ``/status`` return) the LIST of everything it yielded: ``[answer]`` for a
whole answer, ``[chunk, ..., final]`` for a streamed one, whose last chunk carries the
whole-answer fields (usage, timings, model). Older workers return the answer itself, a dict.
Readers take both through :func:`whole_output`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["whole_output"]


def whole_output(output: Any) -> dict[str, Any] | None:
    """The answer's whole-answer object: the dict itself, or the last dict of a list (the
    final chunk of a stream, or a streamed job's only yield); None when there is none."""
    if isinstance(output, dict):
        return output
    if isinstance(output, list):
        for item in reversed(output):
            if isinstance(item, dict):
                return item
    return None
