"""Changing the workers' environment while the twin runs, as a template change does on RunPod.

On RunPod, editing the endpoint's template (its environment variables) rolls the workers: each
is replaced by one started with the new template, a busy one once its job ends. The twin does
the same for ``PATCH /twin/v1/{endpoint_id}/env``, whose body is ``{"env": {"NAME": "value"}}``
(a ``null`` value drops the change again: workers get what the twin started with). The
calibrated handler reads its timing from such variables (``TWIN_CALIBRATED_EXEC_MS``), so a
drill can make the endpoint slow, watch the alert fire, and make it fast again, without
restarting anything.

The platform's own variables (``RUNPOD_*``, the job-API token) and every known secret are
refused: the twin sets the first itself, and secrets never reach a worker.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

__all__ = ["MAX_CHANGES", "applied", "read_env_patch"]

MAX_CHANGES = 64
_MAX_VALUE = 4096
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
# Names the platform sets for every worker (podpulse.twin._platform) or must keep to itself.
_PLATFORM_PREFIXES = ("RUNPOD_",)
_PLATFORM_NAMES = frozenset({"PODPULSE_PARENT_PID", "PYTHONUNBUFFERED"})


def read_env_patch(
    body: Any, *, kept_out: tuple[Collection[str], Collection[str]]
) -> dict[str, str | None]:
    """The changes a PATCH body asks for: name to new value, None to drop its change.

    *kept_out*: the names and values no worker may get (WorkerPool.kept_out).

    ValueError with one line naming each bad entry by its name, never quoting a value.
    """
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")  # noqa: TRY004 (a 400, as the rest)
    unknown = sorted(set(body) - {"env"})
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(repr(k)[:40] for k in unknown[:5])}")
    env = body.get("env")
    if not isinstance(env, dict) or not env:
        raise ValueError("env must be a non-empty JSON object of NAME: string or null")
    if len(env) > MAX_CHANGES:
        raise ValueError(f"env may change at most {MAX_CHANGES} variables at once")
    refused = frozenset(kept_out[0]) | _PLATFORM_NAMES
    secret_values = set(kept_out[1])
    problems = [
        f"env.{_shown(name)}: {why}"
        for name, value in env.items()
        if (why := _problem(name, value, refused, secret_values)) is not None
    ]
    if problems:
        raise ValueError("; ".join(problems))
    return dict(env)


def _shown(name: str) -> str:
    return name if _NAME.fullmatch(name) else repr(name)[:40]


def _problem(name: str, value: Any, refused: frozenset[str], secrets: set[str]) -> str | None:
    if not _NAME.fullmatch(name):
        return "not a variable name (letters, digits, _)"
    if name in refused or name.startswith(_PLATFORM_PREFIXES):
        return "set by the platform or a secret; not changeable"
    return None if value is None else _value_problem(value, secrets)


def _value_problem(value: Any, secrets: set[str]) -> str | None:
    if not isinstance(value, str):
        return "must be a string or null"
    if len(value) > _MAX_VALUE or "\0" in value:
        return f"must be under {_MAX_VALUE} characters, no NUL"
    if value in secrets:
        return "holds a secret of the twin's; refused"
    return None


def applied(env: Mapping[str, str], changes: Mapping[str, str | None]) -> dict[str, str]:
    """The overrides *env* with *changes* made: a None drops the name's override."""
    result = dict(env)
    for name, value in changes.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = value
    return result
