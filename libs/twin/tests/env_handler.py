"""MODULE:FUNC handlers for tests: what the environment of their worker process holds."""

from __future__ import annotations

import os
from typing import Any


def handler(job: dict[str, Any]) -> list[str]:
    """The sorted environment variable names of this worker (values stay in the process)."""
    del job
    return sorted(os.environ)


def environment(job: dict[str, Any]) -> dict[str, str]:
    """This worker's whole environment, values included: for canary tests of what leaks."""
    del job
    return dict(os.environ)
