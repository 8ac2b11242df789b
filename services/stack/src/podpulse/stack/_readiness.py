"""Is a service ready? One short, bounded check per kind of readiness in the table.

Each check answers at once (a fraction of a second at most), so one slow service never holds
up the supervisor's loop; the loop asks again on its next pass.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import httpx

from ._spec import HttpProbe, LogLine, Readiness, TcpProbe

__all__ = ["LogCursor", "check"]

_CONNECT_TIMEOUT_S = 0.2
_HTTP_TIMEOUT_S = 0.5
# A log line longer than this is not a readiness line; keep the buffer bounded.
_MAX_PENDING_CHARS = 64 * 1024


class LogCursor:
    """Reads a service's log from where its current process started, for a LogLine check."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = path.stat().st_size if path.exists() else 0
        self._pending = ""

    def seen(self, pattern: str) -> bool:
        """Whether a line written since this cursor was made matches *pattern*."""
        try:
            with self.path.open("rb") as log:
                log.seek(self._offset)
                chunk = log.read()
        except OSError:
            return False
        self._offset += len(chunk)
        text = self._pending + chunk.decode("utf-8", errors="replace")
        lines = text.split("\n")
        # The last piece may be half a line; keep it for the next read.
        self._pending = lines.pop()[-_MAX_PENDING_CHARS:]
        compiled = re.compile(pattern)
        return any(compiled.search(line) for line in lines)


def check(ready: Readiness, cursor: LogCursor, client: httpx.Client) -> bool:
    """One readiness check of *ready* now; never raises for a service that is not up yet."""
    if isinstance(ready, TcpProbe):
        try:
            with socket.create_connection((ready.host, ready.port), timeout=_CONNECT_TIMEOUT_S):
                return True
        except OSError:
            return False
    if isinstance(ready, HttpProbe):
        try:
            response = client.get(ready.url, headers=dict(ready.headers), timeout=_HTTP_TIMEOUT_S)
        except httpx.HTTPError:
            return False
        return response.is_success
    assert isinstance(ready, LogLine)
    return cursor.seen(ready.pattern)
