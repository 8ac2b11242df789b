"""The history of endpoint config changes podpulse applied: one JSON line per change.

Writers hold an exclusive ``flock`` on ``<file>.lock`` (``changing``), which ``podpulse
endpoint apply|update`` keep for the whole read-compare-PATCH-record sequence, so two local
changes never interleave and each record's ``before`` is the previous record's ``after``.
A line is appended and fsynced whole; a crash mid-write leaves a last line without its
newline, which the next writer cuts off and ``read_history`` ignores. Any other line that does
not validate is a ``HistoryError`` naming the file and line: one reader for every consumer.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from podpulse.common.events import UtcDatetime
from podpulse.common.runpod import EndpointConfig

__all__ = ["HistoryError", "HistoryRecord", "append_record", "changing", "read_history"]


class HistoryError(ValueError):
    """The history file cannot be read or written; the message names the file (and line)."""


class HistoryRecord(BaseModel):
    """One applied change: what it was, where, from what, and whether its event went out."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    at: UtcDatetime = Field(description="When the endpoint accepted the change (UTC).")
    endpoint_id: str = Field(min_length=1)
    management_base_url: str = Field(description="The v2 API the change was sent to.")
    command: Literal["apply", "update"]
    source: str = Field(description="The podpulse.toml applied, or 'flags' for update.")
    before: EndpointConfig
    after: EndpointConfig = Field(description="What the endpoint reported after the PATCH.")
    event_id: str = Field(description="The endpoint_config_changed event's id.")
    event_published: bool = Field(description="False when the bus could not be reached.")


_TAIL_BYTES = 65536


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


@contextlib.contextmanager
def changing(path: Path) -> Iterator[None]:
    """Hold the history's exclusive lock (blocking) for the block; creates its folder."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = _lock_path(path).open("a")
    except OSError as exc:
        raise HistoryError(f"{path}: cannot be locked ({exc.strerror or exc})") from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def append_record(path: Path, record: HistoryRecord) -> None:
    """Append *record* as one line and fsync it; call inside ``changing(path)``."""
    line = record.model_dump_json() + "\n"
    try:
        with path.open("ab+") as handle:
            _cut_torn_tail(handle)
            handle.write(line.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise HistoryError(f"{path}: cannot be written ({exc.strerror or exc})") from None


def _cut_torn_tail(handle: BinaryIO) -> None:
    # A crash mid-append leaves bytes after the last newline: a record that never finished.
    size = handle.seek(0, os.SEEK_END)
    if size == 0:
        return
    start = max(0, size - _TAIL_BYTES)
    handle.seek(start)
    tail = handle.read()
    if tail.endswith(b"\n"):
        return
    # A record is far shorter than the window, so a torn one starts inside it.
    handle.truncate(start + tail.rfind(b"\n") + 1)


def read_history(path: Path, *, endpoint_id: str | None = None) -> list[HistoryRecord]:
    """Every record in *path* (oldest first, none when absent), or *endpoint_id*'s only."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise HistoryError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    lines = data.split(b"\n")
    # The last piece is "" after a final newline, or a torn write: neither is a record.
    records = []
    for number, raw in enumerate(lines[:-1], start=1):
        if not raw.strip():
            continue
        try:
            record = HistoryRecord.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "the line"
            raise HistoryError(f"{path} line {number}: {where}: {first['msg']}") from None
        if endpoint_id is None or record.endpoint_id == endpoint_id:
            records.append(record)
    return records
