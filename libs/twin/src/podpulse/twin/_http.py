"""HTTP helpers shared by the twin's routes: RunPod-shaped errors, auth, bounded bodies."""

from __future__ import annotations

import hmac
import json
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

__all__ = ["ApiError", "check_bearer", "error_response", "parse_count", "read_body", "read_json"]

# ASCII digits only, and few enough that int() is cheap: str.isdigit() accepts "²".
_COUNT = re.compile(r"[0-9]{1,12}")


class ApiError(Exception):
    """An error answered as RunPod does: a status code and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str) -> JSONResponse:
    """RunPod's error body."""
    return JSONResponse({"error": message}, status_code=status)


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


async def read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing anything over ``limit`` bytes without buffering it all."""
    declared = request.headers.get("content-length")
    if declared is not None and _COUNT.fullmatch(declared) and int(declared) > limit:
        raise ApiError(413, f"request body is {int(declared)} bytes; the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, limit: int) -> Any:
    """Parse a JSON body, with a clear error when it is not JSON."""
    body = await read_body(request, limit)
    if not body.strip():
        raise ApiError(400, "request body is empty; expected a JSON object")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None
