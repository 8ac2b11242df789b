"""Run folders with real requests.csv files, written with the one record format."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from podpulse.common.request_records import CSV_COLUMNS, Outcome, RequestRecord

T0 = 1_760_000_000.0


def job(seq: int, start: float, exec_ms: float, *, delay_ms: float = 0.0) -> RequestRecord:
    """A completed request whose job started executing ``start`` s after T0."""
    sent = T0 + start - delay_ms / 1000
    return RequestRecord(
        run_id="r",
        seq=seq,
        concurrency=1,
        intended=sent,
        sent=sent,
        done=sent + (delay_ms + exec_ms) / 1000 + 0.01,
        outcome=Outcome.OK,
        delay_ms=delay_ms,
        exec_ms=exec_ms,
    )


def write_run(results: Path, run_id: str, records: Iterable[RequestRecord]) -> Path:
    """``results/<run_id>/requests.csv`` holding ``records``."""
    folder = results / run_id
    folder.mkdir(parents=True)
    with (folder / "requests.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for record in records:
            writer.writerow(record.to_row())
    return folder
