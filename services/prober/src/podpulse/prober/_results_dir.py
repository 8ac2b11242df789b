"""A run's folder: ``results/<run_id>/`` with requests.csv, summary.json, and soak extras.

Also there: spec.json (what ran) and target.json (where: kind, endpoint id, base URL), so a
run that died before its summary can still be summarised from its rows.

Rows are appended and flushed one by one as requests finish, so a crash of the prober loses
nothing already measured (``report`` can rebuild the summary from the CSV). Each shard of a
sharded run writes its own ``requests-shard<i>.csv``: several processes appending to one
file could interleave a header with rows. summary.json is replaced atomically. The one reader
of the CSVs, ``read_records``, lives in ``podpulse.common.request_records``, as do the row and
its columns: the tagger reads them too.
"""

from __future__ import annotations

import csv
import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self, TypeVar

from pydantic import BaseModel, ValidationError

from podpulse.common.probe_spec import ProbeSpec, check_run_id
from podpulse.common.request_records import CSV_COLUMNS, RequestRecord, ResultsError
from podpulse.common.summary import RunSummary, TargetInfo

__all__ = [
    "SPEC_FILE",
    "SUMMARY_FILE",
    "TARGET_FILE",
    "ResultsWriter",
    "csv_name",
    "new_run_id",
    "read_spec",
    "read_target",
    "run_dir",
    "write_json",
    "write_summary_file",
    "write_target",
]

M = TypeVar("M", bound=BaseModel)

SPEC_FILE = "spec.json"
SUMMARY_FILE = "summary.json"
TARGET_FILE = "target.json"


def new_run_id(kind: str) -> str:
    """A sortable, unique run id, e.g. ``20260115T030000Z-load-1a2b3c``."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{kind}-{uuid.uuid4().hex[:6]}"


def run_dir(results_dir: Path, run_id: str) -> Path:
    """``<results_dir>/<run_id>``."""
    return results_dir / check_run_id(run_id)


def csv_name(shard: int = 0, shards: int = 1) -> str:
    """The CSV a shard writes: ``requests.csv`` for an unsharded run."""
    return "requests.csv" if shards == 1 else f"requests-shard{shard}.csv"


class ResultsWriter:
    """Appends request rows to a run's CSV, flushed after every row."""

    def __init__(self, folder: Path, *, shard: int = 0, shards: int = 1) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.path = folder / csv_name(shard, shards)
        try:
            # "x": a run id names one run; appending to an old CSV would mix two runs' rows.
            self._file: IO[str] = self.path.open("x", newline="", encoding="utf-8")
        except FileExistsError:
            raise FileExistsError(
                f"{self.path} already exists: run ids name one run each; choose another --run-id"
            ) from None
        self._csv = csv.DictWriter(self._file, fieldnames=CSV_COLUMNS, extrasaction="raise")
        self._csv.writeheader()
        self._file.flush()

    def write(self, record: RequestRecord) -> None:
        """Append one row and flush it to the OS (a process crash then loses nothing; an OS
        crash may, but an fsync per request would cost more than the measurement's error)."""
        self._csv.writerow(record.to_row())
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def write_json(path: Path, data: Any) -> Path:
    """Write JSON atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def write_summary_file(folder: Path, summary: RunSummary) -> Path:
    """Write a run's summary.json (atomically); ``podpulse.common.summary.read_summary`` is
    the one reader."""
    return write_json(folder / SUMMARY_FILE, summary.model_dump(mode="json"))


def write_target(folder: Path, target: TargetInfo) -> Path:
    """Record where the run is sent (never the key)."""
    return write_json(folder / TARGET_FILE, target.model_dump(mode="json"))


def read_target(folder: Path) -> TargetInfo:
    """Where a run was sent, from its target.json; ResultsError naming a bad field."""
    return _read_model(folder / TARGET_FILE, TargetInfo)


def read_spec(folder: Path) -> ProbeSpec:
    """What a run ran, from its spec.json; ResultsError naming a bad field."""
    return _read_model(folder / SPEC_FILE, ProbeSpec)


def _read_model(path: Path, model: type[M]) -> M:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ResultsError(f"{path} is missing") from None
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '<file>'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)
        )
        raise ResultsError(f"{path} is not a valid {model.__name__}: {problems}") from None
