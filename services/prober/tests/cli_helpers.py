"""What the command-line tests share beside the ``cli`` fixture (conftest.py)."""

from __future__ import annotations

from podpulse.prober import Target


def hosted_env(target: Target) -> dict[str, str]:
    """*target* (a test's twin) configured as the hosted endpoint."""
    key = target.api_key if isinstance(target.api_key, str) else target.api_key()
    return {
        "RUNPOD_ENDPOINT_ID": target.endpoint_id,
        "RUNPOD_ENDPOINT_BASE_URL": target.base_url,
        "RUNPOD_API_KEY": key,
    }
