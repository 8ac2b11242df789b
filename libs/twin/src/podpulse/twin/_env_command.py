"""``podpulse twin env``: change a running twin's worker environment and roll its workers.

The client side of ``PATCH /twin/v1/{id}/env`` (podpulse.twin._worker_env). The twin is
found by the same ``TWIN_*`` settings that serve it (host, port, endpoint id, key), so in a
shell where the twin was started it needs no flags.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from .settings import TwinSettings

__all__ = ["EnvCommandError", "parse_assignments", "send_env_patch"]

_TIMEOUT_S = 10.0


class EnvCommandError(Exception):
    """The change was not made; the message says why in one line."""


def parse_assignments(assignments: list[str], unset: list[str]) -> dict[str, str | None]:
    """``NAME=VALUE`` arguments and ``--unset NAME`` options as the PATCH's ``env`` object;
    ValueError for a malformed argument (the twin checks the names)."""
    changes: dict[str, str | None] = {}
    for text in assignments:
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise ValueError(f"expected NAME=VALUE, got {text.partition('=')[0][:40]!r}")
        changes[name] = value
    for name in unset:
        changes[name] = None
    if not changes:
        raise ValueError("nothing to change: give NAME=VALUE or --unset NAME")
    return changes


def send_env_patch(
    settings: TwinSettings,
    changes: dict[str, str | None] | None,
    *,
    url: str | None = None,
    transport: httpx.BaseTransport | None = None,
) -> dict[str, Any]:
    """PATCH the changes (GET when None) and return the twin's answer."""
    base = (url or settings.url).rstrip("/")
    target = f"{base}/twin/v1/{settings.endpoint_id}/env"
    headers = {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"}
    try:
        with httpx.Client(timeout=_TIMEOUT_S, transport=transport) as client:
            if changes is None:
                response = client.get(target, headers=headers)
            else:
                response = client.patch(target, headers=headers, json={"env": changes})
    except httpx.HTTPError as exc:
        raise EnvCommandError(f"no answer from the twin at {base}: {type(exc).__name__}") from None
    try:
        body = response.json()
    except json.JSONDecodeError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict):
        reason = body.get("error") if isinstance(body, dict) else None
        raise EnvCommandError(
            f"the twin at {base} answered {response.status_code}: {reason or 'not JSON'}"
        )
    return body
