"""One measured request: the record lives in ``podpulse.common.request_records`` (the tagger
reads requests.csv too, and one service must not import another's package)."""

from podpulse.common.request_records import (
    CSV_COLUMNS,
    REQUIRED_COLUMNS,
    Outcome,
    RecordError,
    RequestRecord,
)

__all__ = ["CSV_COLUMNS", "REQUIRED_COLUMNS", "Outcome", "RecordError", "RequestRecord"]
