"""HTTP helpers shared by the twin's routes: RunPod-shaped errors, auth, bounded bodies."""

from __future__ import annotations

import hmac
import json
import math
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from podpulse.common import http_body

__all__ = [
    "BODY_READ_TIMEOUT_S",
    "MAX_DEPTH",
    "ApiError",
    "check_bearer",
    "error_response",
    "parse_count",
    "parse_json",
    "read_body",
    "read_json",
]

# ASCII digits only, and few enough that int() is cheap: str.isdigit() accepts "²".
_COUNT = re.compile(r"[0-9]{1,12}")


# A body still arriving after this long is refused with 408 and its connection closed. The
# server itself never times a body out, so a client that declares more bytes than it sends
# would otherwise hold a connection (and a handler) until it gives up. 20 MB, the largest
# body the twin takes, needs 4 MB/s to make it; its clients are on loopback or a LAN.
BODY_READ_TIMEOUT_S = 5.0


class ApiError(Exception):
    """An error answered as RunPod does: a status code and ``{"error": message}``.

    ``close``: end the connection after the answer (the rest of its request was never read).
    """

    def __init__(self, status: int, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close


def error_response(status: int, message: str, *, close: bool = False) -> JSONResponse:
    """RunPod's error body."""
    headers = {"Connection": "close"} if close else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def check_bearer(request: Request, expected: str) -> None:
    """Accept ``Authorization: Bearer KEY`` or the bare key, as RunPod does."""
    header = request.headers.get("authorization", "")
    given = header[7:] if header[:7].lower() == "bearer " else header
    # Constant-time compare: the key is the only thing between a client and the queue.
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(401, "Unauthorized: missing or invalid API key")


def parse_count(raw: str, name: str) -> int:
    """A non-negative integer query parameter, or a 400 naming it."""
    if not _COUNT.fullmatch(raw):
        raise ApiError(400, f"{name!r} must be a non-negative integer")
    return int(raw)


async def read_body(
    request: Request, limit: int, *, timeout_s: float = BODY_READ_TIMEOUT_S
) -> bytes:
    """Read the body, refusing anything over ``limit`` bytes without buffering it all (413),
    and any body not complete within ``timeout_s`` (408, connection closed)."""
    try:
        return await http_body.read_body(
            request.stream(),
            limit=limit,
            timeout_s=timeout_s,
            declared=request.headers.get("content-length"),
        )
    except http_body.BodyRefused as refused:
        # Only a timed-out body's connection is closed: the rest of it may never come.
        raise ApiError(refused.status, refused.message, close=refused.status == 408) from None


async def read_json(request: Request, limit: int) -> Any:
    """Parse a JSON body through :func:`parse_json`, after bounding its size."""
    return parse_json(await read_body(request, limit))


def parse_json(body: bytes) -> Any:
    """A JSON body the twin can store, hand to a worker and answer with again, or a 400.

    Python's parser accepts more than a JSON reply can carry back: ``NaN`` and ``Infinity``,
    numbers that overflow to infinity, lone surrogates (``"\\ud800"``), and nesting deep
    enough to exhaust the stack. Each would fail later, after the job was queued or taken, so
    each is refused here, naming where it is.
    """
    if not body.strip():
        raise ApiError(400, "request body is empty; expected a JSON object")
    try:
        value = json.loads(body, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None
    except _NonFiniteError as exc:
        raise ApiError(400, f"request body holds {exc}, which is not a JSON number") from None
    except RecursionError:
        raise ApiError(400, f"request body is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # an integer longer than Python converts (4,300 digits)
        raise ApiError(400, f"request body holds a number too long to read: {exc}") from None
    _check_value(value)
    return value


# Deeper than any job input needs, and far from the recursion limit of the JSON encoder that
# answers /status with the input's job.
MAX_DEPTH = 100


class _NonFiniteError(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NonFiniteError(name)


def _check_value(root: Any) -> None:
    # Iterative, so a deep value is reported, not a RecursionError of our own.
    stack: list[tuple[Any, str, int]] = [(root, "body", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            where = path if len(path) <= 80 else f"{path[:77]}..."
            raise ApiError(400, f"{where} is nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, str):
            _check_text(value, path)
        elif isinstance(value, float) and not math.isfinite(value):
            raise ApiError(400, f"{path} is {value}: JSON numbers must be finite")
        elif isinstance(value, dict):
            for key, item in value.items():
                _check_text(key, f"{path} key {key[:40]!r}")
                stack.append((item, f"{path}.{key[:40]}", depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))


def _check_text(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(
            400, f"{path} holds a lone surrogate (an unpaired \\ud800-\\udfff escape)"
        ) from None
