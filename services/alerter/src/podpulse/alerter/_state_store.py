"""Alert states in Redis, one hash field per (rule, series), so a restart forgets nothing.

One hash under the prefix: a restarted (or second, standby) evaluator reads what the last
one wrote, so it neither fires again what is already firing nor loses a resolution it has
yet to send. Writes are one pipelined HSET/HDEL per evaluation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict

import redis

from ._series import SeriesKey
from ._state import AlertState

__all__ = ["StateKey", "StateStore"]

StateKey = tuple[str, SeriesKey]


def _field(key: StateKey) -> str:
    rule, series = key
    return json.dumps([rule, series.endpoint, series.model])


def _key(field: str) -> StateKey:
    rule, endpoint, model = json.loads(field)
    return rule, SeriesKey(endpoint, model)


class StateStore:
    """Every (rule, series) state the evaluator keeps, under ``<prefix>states``."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self._hash = f"{prefix}states"

    def load(self) -> dict[StateKey, AlertState]:
        """All kept states."""
        raw: Mapping[bytes, bytes] = self._client.hgetall(self._hash)  # type: ignore[assignment]
        return {
            _key(field.decode()): AlertState(**json.loads(value)) for field, value in raw.items()
        }

    def save(self, changed: Mapping[StateKey, AlertState | None]) -> None:
        """Write the states that changed; None deletes one."""
        if not changed:
            return
        pipe = self._client.pipeline(transaction=True)
        for key, state in changed.items():
            if state is None:
                pipe.hdel(self._hash, _field(key))
            else:
                pipe.hset(self._hash, _field(key), json.dumps(asdict(state)))
        pipe.execute()
