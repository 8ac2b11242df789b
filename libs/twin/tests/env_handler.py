"""A MODULE:FUNC handler for tests: the names of the variables its worker process has."""

from __future__ import annotations

import os
from typing import Any


def handler(job: dict[str, Any]) -> list[str]:
    """The sorted environment variable names of this worker (values stay in the process)."""
    del job
    return sorted(os.environ)
